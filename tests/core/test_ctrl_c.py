"""docs/architecture.md: "a Ctrl-C reaches only the supervisor, which stops the
recorders first (each finishes and closes its open segment) and the shipper last
(so it can move those last segments out of RAM)" (A3).

A terminal sends Ctrl-C's SIGINT to its foreground process group: here `livecam
run` is started as a shell starts a job (its own group) and the whole group gets
SIGINT. Its children run in sessions of their own, so only the supervisor hears
it; the order of the stop is read from their log lines.
"""

from __future__ import annotations

import os
import signal

import pytest

from tests.core.node import Node, Share, assert_all_arrived, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def share(tmp_path):
    s = Share(tmp_path / "nas")
    yield s
    s.close()  # also when an assertion failed: no mount outlives the test


def test_ctrl_c_reaches_only_the_supervisor_which_stops_recorders_then_the_shipper(tmp_path, share):
    n = Node(tmp_path / "node", {"plugin": "nfs", "path": str(share.mnt), "fstypes": ["tmpfs"]})
    try:
        proc = n.start()  # its own session and process group, as a shell's job
        wait_for(lambda: len(share.segments()) >= 4, 30, "both cameras publishing")
        encoders = set(n.pids("ffmpeg"))  # their command lines name livecam too
        children = [pid for pid in n.pids("livecam") if pid not in encoders | {proc.pid}]
        assert len(children) == 3, children  # two recorders and the shipper
        for pid in children:
            assert os.getpgid(pid) != proc.pid, "a child in the terminal's process group"
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C
        assert proc.wait(timeout=30) == 0
    finally:
        n.cleanup()
    lines = n.log_text().splitlines()
    stopped = [i for i, ln in enumerate(lines) if ": stopped" in ln and "camera cam" in ln]
    shipper = [i for i, ln in enumerate(lines) if "shipper stopped" in ln]
    assert len(stopped) == 2 and len(shipper) == 1, lines[-20:]
    assert max(stopped) < shipper[0], lines[-20:]  # the recorders first, the shipper last
    assert "KeyboardInterrupt" not in n.log_text()  # no child was interrupted itself
    # The shipper moved the recorders' last segments out of RAM before it stopped.
    assert not n.local_segments("buffer")
    n.drain()
    assert_all_arrived(n, share)
