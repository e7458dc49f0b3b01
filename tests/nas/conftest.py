"""Fixtures for the NAS-side tests: real recordings from real ``livecam run``.

``recorded`` runs one node once per session (two ffmpeg test-pattern cameras, 2 s
segments, a keyframe every 0.5 s) shipping through the ``nfs`` transport into a
tmpfs share, and keeps a copy of what arrived. Tests copy that tree and work on
their copy. Nothing here uses a fixed account, port or path: every name is below
pytest's tmp directories, prefixed ``nas``.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import livecam_cmd
from tests.core.node import Node, Share, wait_for

CAMERAS = {
    # testsrc2: every frame differs (a moving pattern and a clock), no B-frames.
    "cam0": {"size": [160, 120], "fps": 10, "bitrate": "300k", "preset": "ultrafast",
             "keyframe_seconds": "500ms", "pattern": "testsrc2"},
    # testsrc with libx264 veryfast: B-frames, so cutting and joining must respect them.
    "cam1": {"size": [160, 120], "fps": 10, "bitrate": "300k", "preset": "veryfast",
             "keyframe_seconds": "500ms", "pattern": "testsrc"},
}  # fmt: skip
SEGMENTS = 9  # per camera, from one recorder run


@contextlib.contextmanager
def nfs_node(base: Path, **node: Any) -> Iterator[tuple[Node, Share]]:
    """A real node (``base/node``; ``node``: its config, as ``Node`` takes it) shipping
    through the ``nfs`` transport into a tmpfs share of its own (``base/share``). On
    leaving, whatever happened, its processes are killed and the share unmounted."""
    share = Share(base / "share")
    try:
        nfs = {"plugin": "nfs", "path": str(share.mnt), "fstypes": ["tmpfs"]}
        recorder = Node(base / "node", nfs, **node)
        try:
            yield recorder, share
        finally:
            recorder.cleanup()
    finally:
        share.close()


def landed(share: Share, root: Path) -> Path:
    """What arrived on the NAS, copied to ``root`` (the share goes away with the node)."""
    shutil.copytree(share.store, root)
    return root


@pytest.fixture(scope="session")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A recordings root made by a real node: ``lab/node01/{cam0,cam1,_losses}``."""
    base = tmp_path_factory.mktemp("nas-recorded")
    with nfs_node(base, cameras=CAMERAS, segment_seconds=2) as (node, share):
        proc = node.start()
        wait_for(lambda: sum(c["camera"] == "cam0" for c in node.closed()) >= SEGMENTS
                 and sum(c["camera"] == "cam1" for c in node.closed()) >= SEGMENTS,
                 90, f"{SEGMENTS} segments per camera")  # fmt: skip
        # Stop while both cameras are well inside a segment, as a stop usually comes:
        # each camera's last segment is then most often shorter than its name says.
        wait_for(lambda: (ages := open_ages(node)) and all(0.2 < a < 1.5 for a in ages),
                 30, "mid-segment")  # fmt: skip
        assert node.stop(proc) == 0
        node.drain()
        return landed(share, base / "root")


def open_ages(node: Node) -> list[float]:
    """Seconds since each camera's open segment was created ([] while one has none)."""
    ages = []
    for cam in CAMERAS:
        try:
            opened = next((node.buffer / cam / ".open").glob("*"))
            ages.append(time.time() - opened.stat().st_ctime)
        except (StopIteration, FileNotFoundError):
            return []
    return ages


@pytest.fixture
def tree(recorded: Path, tmp_path: Path) -> Path:
    """This test's own copy of the recorded root."""
    root = tmp_path / "nasroot"
    shutil.copytree(recorded, root)
    return root


def nas(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run a livecam NAS command to completion (text output)."""
    return subprocess.run(livecam_cmd(*args), capture_output=True, text=True, timeout=timeout)


def audit_json(root: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    done = nas("nas", "audit", "--root", str(root), "--json", *extra)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


def numbers(ranges: list[list[int]]) -> set[int]:
    """The sequence numbers in the audit's ranges (``[[first, last], ...]``)."""
    return {n for lo, hi in ranges for n in range(lo, hi + 1)}


def segment_files(root: Path, camera: str) -> list[Path]:
    """One camera's segment files below ``root``, in sequence order."""
    files = [p for p in root.rglob(f"{camera}-*.mp4") if not p.name.startswith(".")]
    return sorted(files, key=lambda p: int(p.stem.rsplit("-", 1)[1]))
