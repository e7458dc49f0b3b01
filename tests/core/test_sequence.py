"""docs/architecture.md "Names": the sequence survives restarts, reserved on disk in
blocks of 1000 (a clean stop gives back the rest of its block, so the restart
continues without a jump; a crash skips to the next block, no further), and it
starts above any sequence still found in the tiers, even when its reservation file
is lost (A5).

The NAS stays away, so every segment a run closes is in the spool (spilled, or
at the latest by the clean stop) when the next run starts.
"""

from __future__ import annotations

import shutil

import pytest

from tests.core.node import Node, Share, wait_for

pytestmark = pytest.mark.slow

CAMERA = {
    "cam0": {
        "pattern": "testsrc2",
        "size": [160, 120],
        "fps": 10,
        "bitrate": "300k",
        "preset": "ultrafast",
    }
}


def run_once(n: Node, at_least: int) -> list[int]:
    """Record until ``at_least`` more segments closed; the sequences this run closed."""
    before = len(n.closed())
    proc = n.start()
    wait_for(lambda: len(n.closed()) >= before + at_least, 30, "segments closed")
    assert n.stop(proc) == 0
    return [c["seq"] for c in n.closed()[before:]]


def test_the_sequence_survives_restarts_and_a_lost_reservation(tmp_path):
    share = Share(tmp_path / "nas")
    share.unmount()  # nothing leaves the node
    n = Node(
        tmp_path / "node",
        {"plugin": "nfs", "path": str(share.mnt), "fstypes": ["tmpfs"]},
        cameras=CAMERA,
        spill_after="1s",
    )
    try:
        first = run_once(n, 3)
        second = run_once(n, 2)
        # A clean stop gave back the rest of its block: the restart continues on.
        assert min(second) == max(first) + 1, (first, second)
        # A crash (kill -9, the RAM buffer kept: the same boot) skips the rest of the
        # crashed run's block, and no more.
        before = len(n.closed())
        n.start()
        wait_for(lambda: len(n.closed()) >= before + 2, 30, "segments closed")
        n.kill_all()
        crashed = [c["seq"] for c in n.closed()[before:]]
        after = run_once(n, 2)
        assert max(crashed) < min(after) <= max(crashed) + 1000, (crashed, after)
        # A reboot wipes the RAM buffer (its copy of the reservation with it) and the
        # spool's reservation file is lost: the next run still starts above every
        # sequence found in the tiers.
        seq_file = n.spool / ".livecam" / "seq-cam0"
        assert seq_file.exists() and (n.buffer / ".livecam" / "seq-cam0").exists()
        spooled = [int(p.stem.rsplit("-", 1)[1]) for p in n.spool.glob("cam0/*.mp4")]
        assert max(spooled) == max(after), "the newest waits in the spool"
        seq_file.unlink()
        shutil.rmtree(n.buffer)
        n.buffer.mkdir()
        third = run_once(n, 2)
        assert min(third) > max(first + second + after), (first, second, after, third)
    finally:
        n.cleanup()
        share.close()
    names = [c["name"] for c in n.closed()]
    assert len(names) == len(set(names)), "a name was handed out twice"
