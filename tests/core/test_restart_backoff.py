"""Restart backoff as docs/architecture.md and README.md state it.

- ``livecam run``: a dead child is restarted after 0.5 s, doubling up to 30 s,
  reset after a minute of health; its siblings are never touched (A2).
- ``livecam record``: a failed camera is restarted with the same doubling
  backoff and says so in the log (R10).

Real processes: the supervisor runs as its own process with real children (one
that exits at once, one that stays); the recorder drives a real ffmpeg whose
input does not exist. Each restart's start time is recorded by the child (or
logged), and the gap before it must be at least the delay the schedule names.
"""

from __future__ import annotations

import itertools
import re
import signal
import subprocess
import sys
from datetime import datetime

import pytest

from livecam.ops import supervisor
from tests.core.node import Node, wait_for

pytestmark = pytest.mark.slow

# A child that records each start; its 4th run stays up past HEALTHY_AFTER (patched
# to 2 s, a minute is too long for a test), every other run exits at once.
FLAKY = """\
import sys, time
with open(sys.argv[1], "a+") as f:
    f.write(f"{time.monotonic()}\\n")
    f.seek(0)
    runs = len(f.read().split())
if runs == 4:
    time.sleep(2.5)
sys.exit(3)
"""

SUPERVISE = """\
import logging, sys
from livecam.ops import supervisor
logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
supervisor.HEALTHY_AFTER = 2.0
flaky = [sys.executable, "-c", {flaky!r}, {starts!r}]
steady = [sys.executable, "-c", "import time; time.sleep(300)"]
sys.exit(supervisor.Supervisor({{"flaky": flaky, "steady": steady}}).run())
"""


def steady_pids(parent: int) -> list[str]:
    out = subprocess.run(
        ["pgrep", "-P", str(parent), "-f", r"time\.sleep\(300\)"], capture_output=True, text=True
    )
    return out.stdout.split()


def test_the_schedule_doubles_from_half_a_second_to_thirty():
    backoff = supervisor.Child("x", []).backoff  # the recorder's is the same class
    delays = [backoff.failed(ran_for=0.0) for _ in range(9)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert backoff.failed(ran_for=supervisor.HEALTHY_AFTER + 1) == 0.5  # healthy: afresh


def test_a_dead_child_is_restarted_with_doubling_backoff_reset_after_health(tmp_path):
    starts = tmp_path / "starts"
    script = SUPERVISE.format(flaky=FLAKY, starts=str(starts))
    proc = subprocess.Popen(
        [sys.executable, "-c", script], stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        wait_for(lambda: starts.exists(), 30, "the first start")
        steady = wait_for(lambda: steady_pids(proc.pid), 30, "the sibling runs")
        wait_for(lambda: len(starts.read_text().split()) >= 7, 60, "7 starts")
        assert steady_pids(proc.pid) == steady, "the sibling is the same process"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    delays = [
        float(d) for d in re.findall(r"^flaky exited with code 3; restart in ([\d.]+)s", err, re.M)
    ]
    # 3 quick deaths double the delay; the 4th run was healthy (longer than
    # HEALTHY_AFTER), so the backoff starts afresh.
    assert delays[:6] == [0.5, 1.0, 2.0, 0.5, 1.0, 2.0], err
    times = [float(t) for t in starts.read_text().split()]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    # Each restart waited at least the delay announced for it (the 4th run adds its 2.5 s).
    assert gaps[0] >= 0.5 and gaps[1] >= 1.0 and gaps[2] >= 2.0, gaps
    assert gaps[3] >= 2.5 + 0.5 and gaps[4] >= 1.0 and gaps[5] >= 2.0, gaps
    # The sibling was started once and never touched.
    assert err.count("starting steady") == 1, err
    assert "steady exited" not in err, err
    assert len(steady) == 1, steady


def log_times(text: str, pattern: str) -> list[tuple[float, float]]:
    """(time of the line, the delay it names) for each log line matching ``pattern``."""
    found = []
    for m in re.finditer(r"^(\S+ \S+) .*" + pattern, text, re.M):
        when = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
        found.append((when, float(m.group(2))))
    return found


def test_a_failing_camera_is_restarted_with_doubling_backoff(tmp_path):
    n = Node(
        tmp_path / "node",
        {"plugin": "local", "path": str(tmp_path / "nas")},
        cameras={"cam0": {"input": f"-i {tmp_path / 'no-such-camera.mp4'}", "size": [160, 120]}},
    )
    try:
        proc = n.start("record", "cam0")
        pattern = r"camera cam0 failed: .*; restart \d+ in ([\d.]+)s$"
        wait_for(lambda: len(log_times(n.log_text(), pattern)) >= 5, 60, "5 camera restarts")
        assert n.stop(proc) == 0
    finally:
        n.cleanup()
    failures = log_times(n.log_text(), pattern)
    assert [d for _, d in failures[:5]] == [0.5, 1.0, 2.0, 4.0, 8.0], n.log_text()[-3000:]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(failures)]
    for (_, delay), gap in zip(failures, gaps, strict=False):
        assert gap >= delay, (gaps, failures)  # it waited before the next attempt
    assert n.status()["cameras"]["cam0"]["restarts"] >= 5
