"""systemd's notify protocol from real livecam processes, read from a real socket.

The test plays systemd's part: it binds the datagram socket that ``$NOTIFY_SOCKET``
names and reads what a real ``livecam record`` (ffmpeg test pattern) and ``livecam
ship`` send. A camera that stops delivering frames (its ffmpeg SIGSTOPped) must stop
the watchdog pings, and they must resume with the frames. A shipper whose publish hangs
on a server that never answers (tests/monitoring/hung.py) must stop pinging once its
publisher has been silent longer than its limit, while its housekeeper goes on spilling.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from livecam.ops import sdnotify
from tests.conftest import livecam_cmd
from tests.core.node import Node, wait_for
from tests.monitoring.hung import UNANSWERED, SilentServer


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
                          "preset": "ultrafast", "pattern": "testsrc2"}},
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


def test_a_hung_publish_stops_the_shipper_pings_while_housekeeping_goes_on(tmp_path, systemd):
    """The publisher blocks for good in a transport call (a server that accepts and never
    answers) while the process runs: the housekeeper keeps spilling, and the pings go on
    for the publisher's limit (transport timeout + longest retry wait + 30 s,
    livecam/shipper/process.py: a slow publish is no hang) and stop after it."""
    server = SilentServer()
    node = Node(
        tmp_path / "node",
        {"plugin": "unanswered", "host": "127.0.0.1", "port": server.port, "timeout": "1s"},
        cameras={"cam0": {"size": [160, 120], "fps": 10, "bitrate": "300k",
                          "preset": "ultrafast", "pattern": "testsrc2"}},
        retry={"initial": "200ms", "max": "1s", "permanent": "1s"},
        stop_deadline="2s",  # the stop gives the hung publish this long, then spills
    )  # fmt: skip
    (node.plugins / "unanswered.py").write_text(UNANSWERED)
    limit = 1 + 1 + 30  # the timeout, the longest retry wait, 30 s
    try:
        node.start("record", "cam0")
        proc = start(node, systemd, "ship")
        wait_for(lambda: server.requests, 30, "the publisher called the silent server")
        hung = server.requests[0]  # its attempt began just before: its limit ends by hung+limit

        def spilled() -> int:
            return int(node.status()["shipper"]["spilled"])

        # Watch (draining the socket often, so each message's time is when it came) until
        # well past the limit; note what the housekeeper did once the pings must be over.
        silent_from, spilled_then = hung + limit + 1.5, None
        while time.monotonic() < silent_from + 6:
            systemd.drain()
            if spilled_then is None and time.monotonic() > silent_from:
                spilled_then = spilled()
        assert proc.poll() is None, node.log_text()[-2000:]
        pings = [t for t, _ in systemd.fields("WATCHDOG=1")]
        # A publish within its limit is no hang: the pings went on until close to it...
        assert [t for t in pings if hung + limit - 5 < t <= hung + limit], pings[-5:]
        # ...and stopped once the publisher was silent longer than its limit.
        late = [round(t - hung, 1) for t in pings if t > silent_from]
        assert not late, f"pinged {late} s after the publish hung (limit {limit} s)"
        # Meanwhile the housekeeper kept turning: it went on spilling the new segments.
        assert spilled_then is not None
        wait_for(lambda: spilled() >= spilled_then + 2, 20, "spilling goes on without pings")
        assert not systemd.fields("WATCHDOG=1", since=silent_from), "pinged while it spilled"
        assert len(server.requests) == 1, "the publisher never came back from its call"
        assert node.stop(proc) == 0
    finally:
        node.cleanup()
        server.close()
