"""systemd's notify protocol from real livecam processes, read from a real socket.

The test plays systemd's part: it binds the datagram socket that ``$NOTIFY_SOCKET``
names and reads what a real ``livecam record`` (ffmpeg test pattern) and ``livecam
ship`` send. A camera that stops delivering frames (its ffmpeg SIGSTOPped) must stop
the watchdog pings, and they must resume with the frames.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from livecam import sdnotify
from tests.conftest import livecam_cmd
from tests.core.node import Node, wait_for


class FakeSystemd:
    """The receiving end of $NOTIFY_SOCKET: every message, with when it came."""

    def __init__(self, path: Path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, str]] = []

    def drain(self) -> list[tuple[float, str]]:
        while True:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                return self.messages
            for field in data.decode().split("\n"):
                self.messages.append((time.monotonic(), field))

    def fields(self, prefix: str, since: float = 0.0) -> list[tuple[float, str]]:
        return [(t, f) for t, f in self.drain() if f.startswith(prefix) and t >= since]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def systemd(tmp_path):
    s = FakeSystemd(tmp_path / "notify.sock")
    yield s
    s.close()


@pytest.fixture
def node(tmp_path):
    n = Node(
        tmp_path / "node",
        {"plugin": "local", "path": str(tmp_path / "nas")},
        segment_seconds=2,
        cameras={"cam0": {"size": [160, 120], "fps": 10, "bitrate": "300k",
                          "preset": "ultrafast"}},
    )  # fmt: skip
    yield n
    n.cleanup()


def start(node: Node, systemd: FakeSystemd, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "NOTIFY_SOCKET": str(systemd.path), "WATCHDOG_USEC": "4000000"}
    with open(node.log, "ab") as log:
        proc = subprocess.Popen(
            livecam_cmd("-c", str(node.config_file), *args),
            stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env, start_new_session=True,
        )  # fmt: skip
    node.procs.append(proc)
    return proc


def test_notify_does_nothing_outside_systemd(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    assert sdnotify.notify("READY=1") is False
    assert sdnotify.watchdog_interval() is None
    assert sdnotify.Watchdog().progress() is False


def test_notify_reaches_the_socket(systemd, monkeypatch):
    monkeypatch.setenv("NOTIFY_SOCKET", str(systemd.path))
    monkeypatch.setenv("WATCHDOG_USEC", "2500000")
    assert sdnotify.ready("up\nand running")
    assert sdnotify.watchdog_interval() == 2.5
    got = [f for _, f in systemd.drain()]
    assert got == ["READY=1", "STATUS=up and running"]


def test_recorder_is_ready_at_its_first_frame_and_pings_only_while_frames_come(node, systemd):
    t0 = time.monotonic()
    proc = start(node, systemd, "record", "cam0")
    ready = wait_for(lambda: systemd.fields("READY=1"), 30, "the recorder said READY")
    open_dir = node.buffer / "cam0" / ".open"
    # READY came only once the camera had written frames (or closed a segment).
    assert ready[0][0] - t0 > 0.5
    assert any(p.stat().st_size for p in open_dir.iterdir()) or node.local_segments("buffer")
    status = [f for _, f in systemd.fields("STATUS=")]
    assert status and status[0].startswith("STATUS=recording")
    wait_for(lambda: len(systemd.fields("WATCHDOG=1")) >= 3, 20, "watchdog pings")

    # The camera stops delivering frames: ffmpeg is frozen, the recorder is alive.
    (ffmpeg,) = node.pids("ffmpeg") or [None]
    assert ffmpeg is not None
    os.kill(ffmpeg, signal.SIGSTOP)
    try:
        time.sleep(1.5)  # a ping already under way may still land
        frozen = time.monotonic()
        time.sleep(3)
        assert proc.poll() is None
        assert not systemd.fields("WATCHDOG=1", since=frozen), "pinged without frames"
    finally:
        os.kill(ffmpeg, signal.SIGCONT)
    resumed = time.monotonic()
    wait_for(lambda: systemd.fields("WATCHDOG=1", since=resumed), 20, "pings resume")
    node.stop(proc)


def test_shipper_is_ready_after_its_first_pass_and_pings_while_its_loops_turn(node, systemd):
    proc = start(node, systemd, "ship")
    wait_for(lambda: systemd.fields("READY=1"), 30, "the shipper said READY")
    wait_for(lambda: len(systemd.fields("WATCHDOG=1")) >= 3, 20, "watchdog pings")
    status = [f for _, f in systemd.fields("STATUS=")]
    assert status[0].startswith("STATUS=starting: 0 published")

    # A frozen shipper (both loops stopped) pings no more.
    os.kill(proc.pid, signal.SIGSTOP)
    try:
        time.sleep(1.5)
        frozen = time.monotonic()
        time.sleep(2)
        assert not systemd.fields("WATCHDOG=1", since=frozen)
    finally:
        os.kill(proc.pid, signal.SIGCONT)
    node.stop(proc)
