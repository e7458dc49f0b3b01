"""The recorder, the supervisor and the metrics writer never touch the network
(docs/architecture.md, docs/monitoring.md).

Each runs under strace while it records; every socket call it (and, for the
recorder, its camera backend) makes is logged. Only AF_UNIX is allowed (the
systemd notify socket); an inet, inet6 or packet socket fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.conftest import livecam_cmd
from tests.core.node import Node, Share, wait_for

NETWORK = re.compile(
    r"socket\((AF_INET6?|AF_PACKET|AF_NETLINK)\b|connect\(\d+, \{sa_family=AF_INET"
)

STAMP = re.compile(r"^livecam_status_timestamp_seconds (\S+)", re.M)


@pytest.fixture
def node(tmp_path):
    share = Share(tmp_path / "nas")
    transport = {"plugin": "nfs", "path": str(share.mnt), "fstypes": ["tmpfs"]}
    n = Node(tmp_path / "node", transport)
    yield n
    n.cleanup()
    share.close()


def traced(n: Node, out: Path, follow: bool, *args: str) -> subprocess.Popen[bytes]:
    strace = ["strace", "-qq", "-e", "trace=%network,execve", "-o", str(out)]
    argv = [*strace, *(["-f"] if follow else []), *livecam_cmd("-c", str(n.config_file), *args)]
    with open(n.log, "ab") as log:
        return subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)


def tracee(strace: subprocess.Popen[bytes]) -> int:
    children = Path(f"/proc/{strace.pid}/task/{strace.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def test_the_trace_sees_a_network_socket(tmp_path):
    # The check below is only as good as strace and the pattern: both see one.
    out = tmp_path / "control.strace"
    code = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM)"
    argv = ["strace", "-qq", "-f", "-e", "trace=%network,execve", "-o", str(out)]
    subprocess.run([*argv, "python3", "-c", code], check=True)
    assert any(NETWORK.search(line) for line in out.read_text().splitlines())


def trace_while_recording(node: Node, out: Path, follow: bool, *args: str) -> str:
    """Run a livecam command under strace until 3 segments closed, stop it, read the trace."""
    proc = traced(node, out, follow, *args)
    try:
        wait_for(lambda: len(node.closed()) >= 3, 30, "segments closed under strace")
        os.kill(tracee(proc), signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, node.log_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return out.read_text()


def test_the_recorder_and_its_camera_never_open_a_network_socket(node, tmp_path):
    trace = trace_while_recording(node, tmp_path / "record.strace", True, "record", "cam0")
    assert re.search(r"execve\(\S*ffmpeg", trace), "the camera's ffmpeg was traced too"
    assert node.local_segments("buffer"), "it really recorded"
    hits = [line for line in trace.splitlines() if NETWORK.search(line)]
    assert not hits, hits[:5]


def test_the_supervisor_never_opens_a_network_socket(node, tmp_path):
    # The supervisor only, not its children.
    trace = trace_while_recording(node, tmp_path / "run.strace", False, "run")
    hits = [line for line in trace.splitlines() if NETWORK.search(line)]
    assert not hits, hits[:5]


def test_the_metrics_writer_never_opens_a_network_socket(node, tmp_path):
    """docs/monitoring.md: "the metrics process has no network either" (M13)."""
    ram = Path(tempfile.mkdtemp(prefix="lcp-metrics-", dir="/dev/shm"))
    target = ram / "livecam.prom"
    out = tmp_path / "metrics.strace"
    proc = traced(node, out, True, "metrics", "--textfile", str(target), "--interval", "1")
    try:
        seen: set[str] = set()

        def rewritten() -> bool:  # three different files: it ran three rounds
            stamp = STAMP.search(target.read_text()) if target.exists() else None
            if stamp:
                seen.add(stamp[1])
            return len(seen) >= 3

        wait_for(rewritten, 30, "the writer rewrote its file three times")
        os.kill(tracee(proc), signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        shutil.rmtree(ram, ignore_errors=True)
    trace = out.read_text()
    assert "execve(" in trace, "the writer was traced"
    hits = [line for line in trace.splitlines() if NETWORK.search(line)]
    assert not hits, hits[:5]
