"""The node face on a real node: ``livecam run`` (real ffmpeg) and ``livecam web node``.

The ffmpeg backend's snapshot is an extra output of the camera's one ffmpeg
process; the page's data is ``status --json``'s, live.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.core.node import Node, Share, wait_for
from tests.web.server import Web, token_file

pytestmark = pytest.mark.slow

CAMERAS = {"cam0": {"size": [160, 120], "fps": 10, "bitrate": "300k", "preset": "ultrafast",
                    "pattern": "testsrc2", "snapshot_seconds": "1s"},
           "cam1": {"size": [160, 120], "fps": 10, "bitrate": "300k", "preset": "ultrafast",
                    "pattern": "smptebars", "snapshot_seconds": "0"}}  # fmt: skip


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[Node, Share]]:
    share = Share(tmp_path / "web-share")
    node = Node(tmp_path / "web-node",
                {"plugin": "nfs", "path": str(share.mnt), "fstypes": ["tmpfs"]},
                cameras=CAMERAS, segment_seconds=2)  # fmt: skip
    try:
        yield node, share
    finally:
        node.cleanup()
        share.close()


def test_snapshot_changes_over_time_from_the_one_ffmpeg(
    node: tuple[Node, Share], tmp_path: Path
) -> None:
    n, share = node
    proc = n.start()
    web = Web("node", "-c", str(n.config_file), "--token-file", str(token_file(tmp_path)))
    try:
        snap = n.buffer / "cam0" / ".snapshot.jpg"
        wait_for(snap.exists, 60, "cam0's first snapshot")
        # One ffmpeg per camera: the snapshot is an output of the recording process.
        ffmpegs = n.pids("ffmpeg", "cam0")
        assert len(ffmpegs) == 1
        cmdline = Path(f"/proc/{ffmpegs[0]}/cmdline").read_bytes().split(b"\0")
        assert b"libx264" in cmdline and str(snap).encode() in cmdline

        def fetch() -> bytes:
            status, headers, body = web.get("/snapshot/cam0.jpg")
            assert status == 200 and headers["content-type"] == "image/jpeg"
            assert body[:2] == b"\xff\xd8" and body[-2:] == b"\xff\xd9"  # a whole JPEG
            return body

        first = fetch()
        later = wait_for(lambda: (b := fetch()) != first and b, 15, "a newer snapshot")
        assert later != first

        def api_status() -> dict:
            status, _, body = web.get("/api/status")
            assert status == 200
            return json.loads(body)

        # "recording" is noted by the recorder's watch (once a second, as the open
        # segment grows) or its first closed segment: on a loaded machine that can
        # come after the second snapshot.
        data = wait_for(lambda: (d := api_status())["cameras"]["cam0"]["state"] == "recording"
                        and d, 30, "cam0 recording")  # fmt: skip
        assert set(data["cameras"]) == {"cam0", "cam1"}
        assert data["cameras"]["cam0"]["snapshot"] is True
        assert data["cameras"]["cam1"]["snapshot"] is False  # snapshot_seconds: 0
        assert web.get("/snapshot/cam1.jpg")[0] == 404
        assert web.get("/snapshot/..%2fcam0%2f.snapshot.jpg")[0] == 404
        status, _, page = web.get("/")
        assert status == 200 and b"/api/status" in page
        wait_for(lambda: len(n.closed()) >= 4, 60, "segments closing beside the snapshots")
    finally:
        web.stop()
        assert n.stop(proc) == 0
    # A restart finds the old snapshot in place: the camera still records and replaces it.
    assert snap.exists()
    count = len(n.closed())
    proc = n.start()
    try:
        wait_for(lambda: len(n.closed()) >= count + 2, 60, "recording again after a restart")
    finally:
        assert n.stop(proc) == 0
    n.drain()
    # The snapshot stays on the node: never listed as a segment, never shipped.
    assert not list(share.store.rglob("*.jpg"))
    assert all(c["name"].endswith(".mp4") for c in n.closed()), n.closed()
