"""A camera's non-MP4 output is logged, counted and deleted; recording goes on.

A site camera backend plugin (the real plugin path) hands the recorder every
other file as garbage and every other as a real MP4 that ffmpeg made.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.core.node import Node, Share, wait_for

BACKEND = """
import shutil
import threading

from livecam import hookimpl
from livecam.camera import CameraBackend

GOOD = {good!r}
WROTE = {wrote!r}


class Garbage(CameraBackend):
    description = "every other segment is not an MP4"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stopping = threading.Event()

    def record(self, sink):
        n = 0
        while not self._stopping.wait(0.3):
            n += 1
            path = sink.open_dir / f"{{n:06d}}.mp4"
            if n % 2:
                path.write_bytes(b"this is not a video " * 100)
                with open(WROTE, "a") as f:
                    f.write(path.name + "\\n")
            else:
                shutil.copyfile(GOOD, path)
            sink.close(path, duration=1.0)

    def stop(self):
        self._stopping.set()


@hookimpl
def livecam_register_cameras(register):
    register("garbage", Garbage)
"""


@pytest.fixture
def node(tmp_path):
    share = Share(tmp_path / "nas")
    transport = {"plugin": "nfs", "path": str(share.mnt), "fstypes": ["tmpfs"]}
    n = Node(tmp_path / "node", transport, cameras={"cam0": {"backend": "garbage"}})
    yield n
    n.cleanup()
    share.close()


def test_non_mp4_camera_output_is_logged_counted_and_deleted(node, tmp_path):
    good, wrote = tmp_path / "good.mp4", tmp_path / "garbage.txt"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
         "-t", "1", "-c:v", "libx264", "-f", "mp4", str(good)],
        check=True,
    )  # fmt: skip
    (node.plugins / "garbage.py").write_text(BACKEND.format(good=str(good), wrote=str(wrote)))
    proc = node.start("record", "cam0")
    wait_for(
        lambda: node.status()["cameras"]["cam0"]["bad_segments"] >= 3 and len(node.closed()) >= 3,
        30,
        "garbage discarded and good segments closed",
    )
    assert node.stop(proc) == 0, node.log_text()
    bad = wrote.read_text().split()
    assert len(bad) >= 3, "the backend really wrote garbage"
    status = node.status()["cameras"]["cam0"]
    assert status["bad_segments"] == len(bad), (status, bad)
    log = node.log_text()
    for name in bad:
        assert f"camera cam0: discarding {name}: not an MP4 file" in log, log
    # Deleted: nothing is left of them, and only real MP4s became segments.
    ready = node.local_segments("buffer")
    assert len(ready) == len(node.closed()) >= 3, "recording went on between the bad files"
    assert all(p.read_bytes() == good.read_bytes() for p in ready)
    assert not [p for p in (node.buffer / "cam0").rglob("*") if p.is_file() and p not in ready]


def test_an_unplayable_leftover_of_a_crash_is_removed_and_logged(tmp_path):
    """docs/architecture.md (salvage): what a crash left in ``.open`` that does not
    play is removed and logged, never made a segment (A7)."""
    n = Node(
        tmp_path / "node",
        {"plugin": "local", "path": str(tmp_path / "nas")},
        cameras={"cam0": {"pattern": "testsrc2", "size": [160, 120], "fps": 10, "bitrate": "300k"}},
    )
    leftover = n.buffer / "cam0" / ".open" / "cam0-crashed.mp4"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"\0\0\0\x18ftypisom" + b"torn" * 1000)  # an MP4 cut before its moov
    try:
        proc = n.start("record", "cam0")
        wait_for(lambda: n.closed(), 30, "the camera records")
        assert n.stop(proc) == 0
    finally:
        n.cleanup()
    assert not leftover.exists()
    assert "camera cam0: removing unplayable unfinished cam0-crashed.mp4" in n.log_text()
    assert all("crashed" not in c["name"] for c in n.closed())
    assert n.status()["cameras"]["cam0"]["salvaged"] == 0
