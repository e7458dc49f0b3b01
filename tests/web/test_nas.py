"""The NAS face on recordings made by a real ``livecam run`` (tests/nas's ``recorded``):
the fleet, a camera's day timeline with an audited hole, the segments, a span's MP4."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from livecam.storage.losses import is_loss_record
from tests.nas.conftest import nas, recorded, segment_files, tree  # noqa: F401 - fixtures
from tests.web.server import Web, token_file

pytestmark = pytest.mark.slow


@pytest.fixture
def served(tree: Path, tmp_path: Path) -> Iterator[tuple[Web, Path, Path]]:  # noqa: F811
    """The recorded tree minus cam0's 4th segment, indexed, behind ``livecam web nas``."""
    removed = segment_files(tree, "cam0")[3]
    removed.unlink()
    done = nas("nas", "index", "--root", str(tree))
    assert done.returncode == 0, done.stderr
    web = Web("nas", "--root", str(tree), "--token-file", str(token_file(tmp_path)))
    try:
        yield web, tree, removed
    finally:
        web.stop()


def get_json(web: Web, path: str) -> Any:
    status, headers, body = web.get(path)
    assert status == 200 and headers["content-type"] == "application/json", (path, body)
    return json.loads(body)


def test_fleet_timeline_and_segments(served: tuple[Web, Path, Path]) -> None:
    web, root, removed = served
    fleet = get_json(web, "/api/cameras")
    assert fleet == {"sites": [{"site": "lab", "nodes": [
        {"node": "node01", "cameras": ["cam0", "cam1"]}]}]}  # fmt: skip
    files = segment_files(root, "cam0")
    day = f"{datetime.fromtimestamp(files[0].stat().st_mtime, UTC):%Y-%m-%d}"
    tl = get_json(web, f"/api/timeline/lab/node01/cam0?day={day}")
    segs = tl["segments"]
    assert len(segs) == len(files)
    # Durations from the files; the recording stopped inside the last segment.
    assert all(s["duration"] > 1 for s in segs[:-1]) and 0 < segs[-1]["duration"] < 2.1
    assert [s["url"].rsplit("/", 1)[1] for s in segs] == [f.name for f in files]
    # The removed segment is a hole, explained by the audit (recent: not yet shipped).
    (hole,) = [h for h in tl["holes"] if h["kind"] == "sequence"]
    removed_seq = int(removed.stem.rsplit("-", 1)[1])
    assert hole["kind"] == "sequence" and hole["first_seq"] == hole["last_seq"] == removed_seq
    assert hole["explained"] and hole["causes"][0]["cause"] == "backlog"
    assert tl["from"] <= hole["from"] <= hole["to"] <= tl["to"]
    # Every segment the timeline lists is served, byte for byte.
    for seg, path in zip(segs, files, strict=True):
        status, headers, body = web.get(quote(seg["url"]))
        assert status == 200 and headers["content-type"] == "video/mp4"
        assert body == path.read_bytes()
    other = f"{datetime.fromtimestamp(files[0].stat().st_mtime - 3 * 86400, UTC):%Y-%m-%d}"
    assert get_json(web, f"/api/timeline/lab/node01/cam0?day={other}")["segments"] == []
    assert web.get("/api/timeline/lab/node01/cam0?day=yesterday")[0] == 400


def test_download_a_span_through_the_export(served: tuple[Web, Path, Path], tmp_path: Path) -> None:
    web, _, _ = served
    tl_day = f"{datetime.now(UTC):%Y-%m-%d}"
    segs = get_json(web, f"/api/timeline/lab/node01/cam1?day={tl_day}")["segments"]
    t0, t1 = segs[1]["start"] + 0.5, segs[4]["start"] + 1.0
    iso = [datetime.fromtimestamp(t, UTC).isoformat() for t in (t0, t1)]
    status, headers, body = web.get(
        f"/api/export/lab/node01/cam1?from={quote(iso[0])}&to={quote(iso[1])}"
    )
    assert status == 200, body[:200]
    assert headers["content-type"] == "video/mp4"
    assert headers["content-disposition"].startswith("attachment")
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(body)
    probed = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(clip)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    seconds = float(json.loads(probed.stdout)["format"]["duration"])
    assert t1 - t0 - 1.0 <= seconds <= t1 - t0 + 2.5, seconds
    bad = web.get(f"/api/export/lab/node01/cam1?from={quote(iso[1])}&to={quote(iso[0])}")
    assert bad[0] == 400
    assert web.get("/api/export/lab/node01/cam1?from=now&to=later")[0] == 400


def test_loss_records_are_never_served_as_video(tree: Path, tmp_path: Path) -> None:  # noqa: F811
    """Issue 22: a loss record is JSON; ``/video/`` refuses it (404, never video/mp4),
    named as today (``_losses/.../loss-*.json``) or as an older livecam named it
    (``livecam-losses/.../livecam-losses-*.mp4``), and no camera of that name is listed."""
    records = sorted(p for p in tree.rglob("*") if is_loss_record(p))
    assert records, "the node published no loss record"
    for path in records:  # each also as an older node published it
        if path.name.startswith("loss-"):
            start, micros = path.stem.split("-")[1:]
            old = tree / "lab/node01/livecam-losses" / path.parent.name
            old.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, old / f"livecam-losses-{start}-{micros}.mp4")
    everyone = sorted(p for p in tree.rglob("*") if is_loss_record(p))
    assert any(p.suffix == ".mp4" for p in everyone), everyone
    assert nas("nas", "index", "--root", str(tree)).returncode == 0
    web = Web("nas", "--root", str(tree), "--token-file", str(token_file(tmp_path)))
    try:
        for path in everyone:
            status, headers, body = web.get(quote(f"/video/{path.relative_to(tree)}"))
            assert status == 404 and headers.get("content-type") != "video/mp4", (path, status)
        video = segment_files(tree, "cam0")[0]
        status, headers, body = web.get(quote(f"/video/{video.relative_to(tree)}"))
        assert status == 200 and headers["content-type"] == "video/mp4"
        assert body == video.read_bytes()
        fleet = get_json(web, "/api/cameras")
        assert fleet["sites"][0]["nodes"][0]["cameras"] == ["cam0", "cam1"], fleet
    finally:
        web.stop()
