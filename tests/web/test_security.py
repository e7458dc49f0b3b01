"""Security of ``livecam web nas`` served by real uvicorn: credentials, the root, Range.

The root holds one segment-named file with known bytes, an index (so the NAS face
starts), a secret file outside the root and a symlink inside pointing at it.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from livecam.nas import index
from tests.conftest import livecam_cmd
from tests.web.server import TOKEN, Web, basic, token_file

SECRET = b"web-secret-outside-the-root"
VIDEO = "lab/node01/cam0/2026-11-27/cam0-000000001.mp4"
BODY = bytes(range(256)) * 40  # 10240 bytes
HUGE = "lab/node01/cam0/2026-11-27/cam0-000000003.mp4"  # sparse: 5 GiB, no disk used
HUGE_SIZE = 5 << 30
MAX_SPAN = 32 << 20  # what one answer carries at most (docs/web.md)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Web, Path]]:
    base = tmp_path_factory.mktemp("web-security")
    root = base / "root"
    (root / VIDEO).parent.mkdir(parents=True)
    (root / VIDEO).write_bytes(BODY)
    with open(root / HUGE, "wb") as f:
        f.truncate(HUGE_SIZE)
    (base / "secret.mp4").write_bytes(SECRET)
    (base / "secret.txt").write_bytes(SECRET)
    os.symlink(base / "secret.mp4", root / "lab/node01/cam0/2026-11-27/cam0-000000002.mp4")
    os.symlink(base, root / "lab/escape")
    index.connect(root / ".livecam" / "index.sqlite").close()
    web = Web("nas", "--root", str(root), "--token-file", str(token_file(base)))
    try:
        yield web, root
    finally:
        web.stop()


def test_the_file_is_served_with_credentials(site: tuple[Web, Path]) -> None:
    web, _ = site
    status, headers, body = web.get(f"/video/{VIDEO}")
    assert status == 200 and body == BODY
    assert headers["accept-ranges"] == "bytes" and headers["content-type"] == "video/mp4"


@pytest.mark.parametrize("path", ["/", "/api/cameras", f"/video/{VIDEO}", "/nope"])
def test_without_credentials_401(site: tuple[Web, Path], path: str) -> None:
    web, _ = site
    status, headers, body = web.get(path, auth=False)
    assert status == 401 and BODY not in body
    assert headers["www-authenticate"].startswith("Basic")
    for wrong in ("Bearer nottheone", basic("nottheone"), "Bearer ", f"Token {TOKEN}"):
        assert web.get(path, headers={"Authorization": wrong})[0] == 401, wrong


def test_basic_auth_and_the_token_cookie(site: tuple[Web, Path]) -> None:
    web, _ = site
    assert web.get(f"/video/{VIDEO}", headers={"Authorization": basic(TOKEN)})[0] == 200
    status, headers, _ = web.get(f"/?token={TOKEN}", auth=False)
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"].split(";")[0]
    assert "httponly" in headers["set-cookie"].lower()
    assert web.get(f"/video/{VIDEO}", auth=False, headers={"Cookie": cookie})[0] == 200
    assert web.get("/?token=wrong", auth=False)[0] == 401
    # The rest of the query is kept (a link to a day), and never a redirect off the site.
    status, headers, _ = web.get(f"/?day=2026-11-20&token={TOKEN}", auth=False)
    assert status == 303 and headers["location"] == "/?day=2026-11-20"
    status, headers, _ = web.get(f"//evil.example/?token={TOKEN}", auth=False)
    assert status == 303 and headers["location"] == "/evil.example/"


@pytest.mark.parametrize("path", [
    "/video/../secret.mp4",
    "/video/lab/../../secret.mp4",
    "/video/%2e%2e/secret.mp4",
    "/video/lab/%2E%2E/%2e%2e/secret.mp4",
    "/video/..%2fsecret.mp4",
    "/video/%2Fetc%2Fpasswd",
    "//video//etc/passwd",
    "/video//etc/passwd",
    f"/video/{'%2F'}{'x'}",
    "/video/lab/node01/cam0/2026-11-27/cam0-000000002.mp4",  # a symlink out of the root
    "/video/lab/escape/secret.mp4",  # through a symlinked directory
    "/video/.livecam/index.sqlite",  # the index is not a recording
    "/video/lab/node01/cam0/2026-11-27/./cam0-000000001.mp4",
])  # fmt: skip
def test_traversal_refused(site: tuple[Web, Path], path: str) -> None:
    web, root = site
    assert (root / "lab/escape/secret.mp4").read_bytes() == SECRET  # the way out exists
    status, _, body = web.get(path)
    assert status == 404, (path, status)
    assert SECRET not in body and b"root:" not in body


def test_absolute_path_through_the_route_refused(site: tuple[Web, Path]) -> None:
    web, root = site
    target = root.parent / "secret.mp4"
    status, _, body = web.get(f"/video/{target}")  # /video//tmp/.../secret.mp4
    assert status == 404 and SECRET not in body


@pytest.mark.parametrize(("header", "first", "last"), [
    ("bytes=0-99", 0, 99),
    ("bytes=100-", 100, len(BODY) - 1),
    ("bytes=10000-10239", 10000, 10239),  # the last bytes, exactly to the end
    ("bytes=10000-99999999", 10000, 10239),  # past the end: cut to the end
    ("bytes=-40", len(BODY) - 40, len(BODY) - 1),
])  # fmt: skip
def test_range_206(site: tuple[Web, Path], header: str, first: int, last: int) -> None:
    web, _ = site
    status, headers, body = web.get(f"/video/{VIDEO}", headers={"Range": header})
    assert status == 206
    assert headers["content-range"] == f"bytes {first}-{last}/{len(BODY)}"
    assert int(headers["content-length"]) == last - first + 1
    assert body == BODY[first : last + 1]


@pytest.mark.parametrize("header", ["bytes=10240-", "bytes=99999-100000", "bytes=0-1,5-9"])
def test_range_beyond_the_file_416(site: tuple[Web, Path], header: str) -> None:
    web, _ = site
    status, headers, body = web.get(f"/video/{VIDEO}", headers={"Range": header})
    assert status == 416 and body == b""
    assert headers["content-range"] == f"bytes */{len(BODY)}"


@pytest.mark.parametrize(("header", "first"), [
    ("bytes=0-", 0),  # what a browser's <video> asks first
    (f"bytes=0-{HUGE_SIZE - 1}", 0),
    ("bytes=4294967296-", 4 << 30),
    ("bytes=-5000000000", HUGE_SIZE - 5_000_000_000),
    (f"bytes=-{HUGE_SIZE * 2}", 0),
])  # fmt: skip
def test_a_huge_range_is_cut_to_32_mib(site: tuple[Web, Path], header: str, first: int) -> None:
    web, _ = site
    status, headers, body = web.get(f"/video/{HUGE}", headers={"Range": header})
    last = first + MAX_SPAN - 1
    assert status == 206, header
    assert headers["content-range"] == f"bytes {first}-{last}/{HUGE_SIZE}"
    assert int(headers["content-length"]) == MAX_SPAN == len(body)
    assert body == bytes(MAX_SPAN)


def test_a_huge_file_without_a_range_is_refused(site: tuple[Web, Path]) -> None:
    web, _ = site
    status, headers, body = web.get(f"/video/{HUGE}")
    assert status == 403 and b"byte ranges" in body and len(body) < 200
    assert headers["accept-ranges"] == "bytes"
    # The end of the file is still there to be asked for, 32 MiB at a time at most.
    status, headers, body = web.get(f"/video/{HUGE}", headers={"Range": "bytes=-10"})
    assert status == 206 and body == bytes(10)
    assert headers["content-range"] == f"bytes {HUGE_SIZE - 10}-{HUGE_SIZE - 1}/{HUGE_SIZE}"


def test_no_write_endpoints(site: tuple[Web, Path]) -> None:
    web, root = site
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, _, _ = web.get(f"/video/{VIDEO}", method=method)
        assert status == 405, method
    assert (root / VIDEO).read_bytes() == BODY


def test_token_file_readable_by_others_refused(tmp_path: Path) -> None:
    loose = token_file(tmp_path, 0o640)
    root = tmp_path / "root"
    root.mkdir()
    done = subprocess.run(
        livecam_cmd("web", "nas", "--root", str(root), "--token-file", str(loose)),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "chmod 600" in done.stderr, done.stderr
    done = subprocess.run(livecam_cmd("web", "nas", "--root", str(root)),
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and "--token-file" in done.stderr


def test_trusted_proxy_header(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / VIDEO).parent.mkdir(parents=True)
    (root / VIDEO).write_bytes(BODY)
    with open(root / HUGE, "wb") as f:
        f.truncate(HUGE_SIZE)
    index.connect(root / ".livecam" / "index.sqlite").close()
    web = Web("nas", "--root", str(root), "--trust-proxy-header", "X-Remote-User")
    try:
        assert web.get(f"/video/{VIDEO}", auth=False)[0] == 401
        status, _, body = web.get(f"/video/{VIDEO}", auth=False,
                                  headers={"X-Remote-User": "alice"})  # fmt: skip
        assert status == 200 and body == BODY
    finally:
        web.stop()
