"""A NAS too busy to greet: what a node makes of a connection closed before sshd's greeting.

sshd past its ``MaxStartups`` (10:30:100 by default: a fleet connecting at once
after an outage) accepts a connection and closes it before its identification
line. That is the NAS saying "busy, come back shortly", not "down": a node tries
again after a short random wait (``retry.BUSY_WAIT``), never backs off for it, and
its next real failure backs off from the start. Here the drop is a loopback
listener that accepts and closes (or resets), met by the real probe, the real
``ssh`` client and the real retry loop; tests/fleet/test_return.py has a real
sshd at its defaults drop them.
"""

from __future__ import annotations

import contextlib
import re
import socket
import struct
import threading
import time

import pytest
from livecam_plugins._ssh import (
    BUSY,
    DOWN,
    GREETS,
    SPREAD_MAX,
    SPREAD_MIN,
    SPREAD_PER_GREETING,
    return_spread,
    ssh_answers,
    ssh_greeting,
)
from livecam_plugins.rsync.master import ControlDir, Lane
from livecam_plugins.rsync.pacer import Pacer
from livecam_plugins.rsync.transport import RsyncTransport

from livecam.shipper.retry import BUSY_TRIES, BUSY_WAIT, PROBE_EVERY, RetryPolicy
from livecam.transport import CommandFailed, ServerBusy, TransientError
from tests.core.test_shipper import RecordedWaits
from tests.fleet.test_probe import Listener, Script


class Dropper:
    """A TCP server on loopback that accepts each connection and at once closes it
    (``reset``: with a RST), as sshd drops one past MaxStartups."""

    def __init__(self, *, reset: bool = False):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.reset = reset
        self.dropped = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.dropped += 1
                if self.reset:
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.close()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()


@pytest.fixture
def dropper():
    d = Dropper()
    yield d
    d.close()


def lane(tmp_path, port: int) -> Lane:
    key = tmp_path / "key"
    key.write_text("not a key: ssh fails before it reads it\n")
    key.chmod(0o600)
    opts = {"host": "127.0.0.1", "port": port, "user": "nobody", "identity_file": key,
            "known_hosts_file": tmp_path / "known_hosts", "control_persist": 5}  # fmt: skip
    return Lane(0, opts, ControlDir())


def test_a_connection_closed_before_the_greeting_is_busy_not_down(dropper):
    resetter, silent = Dropper(reset=True), Listener(b"")
    sshd = Listener(b"SSH-2.0-OpenSSH_9.2\r\n")
    try:
        assert ssh_greeting("127.0.0.1", sshd.port, 2.0) == GREETS
        assert ssh_greeting("127.0.0.1", dropper.port, 2.0) == BUSY
        assert ssh_greeting("127.0.0.1", resetter.port, 2.0) == BUSY
        assert resetter.dropped and dropper.dropped  # they did accept, then drop
        # A proxy accepting for a NAS that is down says nothing: down, as is a refusal.
        assert ssh_greeting("127.0.0.1", silent.port, 1.0) == DOWN
        # A busy NAS is there: the probe's return ends a node's wait.
        assert ssh_answers("127.0.0.1", dropper.port, 2.0) is True
        assert ssh_answers("127.0.0.1", silent.port, 1.0) is False
    finally:
        resetter.close()
        silent.close()
        sshd.close()
    assert ssh_greeting("127.0.0.1", sshd.port, 1.0) == DOWN  # refused


def test_rsync_counts_sshd_dropping_its_connection_as_busy(tmp_path, dropper):
    ln = lane(tmp_path, dropper.port)
    # The greeting before a new master connection: busy, at once (not its 3 s timeout).
    t0 = time.monotonic()
    with pytest.raises(ServerBusy, match="before its greeting"):
        ln.connect(Pacer())
    assert time.monotonic() - t0 < 2
    # The real ssh client dropped before the greeting ("kex_exchange_identification:
    # Connection closed by remote host", or a reset), as the master's own connection
    # or an rsync's: the transport classes it busy.
    for drop in (dropper, Dropper(reset=True)):
        ln = lane(tmp_path, drop.port)
        with pytest.raises(CommandFailed) as failed:
            ln.start()
        assert re.search(r"Connection (closed|reset)", failed.value.stderr), failed.value.stderr
        t = RsyncTransport.__new__(RsyncTransport)
        error = t.classify(failed.value, "ssh to the NAS")
        assert isinstance(error, ServerBusy), error
        assert not isinstance(t.classify(CommandFailed(255, "Connection timed out"), "x"),
                              ServerBusy)  # fmt: skip
        drop.close()


def policy(probe, *, backoff: float) -> tuple[RetryPolicy, RecordedWaits]:
    waits = RecordedWaits()
    p = RetryPolicy(initial=backoff, maximum=backoff * 64, permanent=600, stopping=waits,
                    probe=probe, hold=0)  # fmt: skip
    return p, waits


def script(*errors: Exception):
    """A publish attempt raising ``errors`` in turn, then succeeding."""
    left = list(errors)

    def attempt() -> str:
        if left:
            raise left.pop(0)
        return "published"

    return attempt


def test_busy_comes_back_shortly_and_never_grows_the_backoff():
    probe = Script(True)
    p, waits = policy(probe, backoff=100)
    busy = ServerBusy("sshd closed the connection before its greeting")
    assert p.call(script(busy, busy, busy, TransientError("x"), busy)) == "published"
    lo, hi = BUSY_WAIT
    assert hi <= 5, "a short wait"
    short = [waits.seen[i] for i in (0, 1, 2, 4)]
    assert all(lo <= w <= hi for w in short), waits.seen
    assert len({round(w, 4) for w in short}) == 4, "randomized, so a fleet spreads"
    # The transient failure after three busy ones backs off as a first failure
    # (uniform up to retry.initial), not as a fourth (up to 8 x retry.initial).
    assert waits.seen[3] <= 100, waits.seen
    assert probe.calls == 1, "a busy wait runs its short course; it does not probe"


def test_busy_for_too_long_is_an_ordinary_failure():
    p, waits = policy(Script(True), backoff=100)
    busy = ServerBusy("sshd closed the connection before its greeting")
    assert p.call(script(*[busy] * (BUSY_TRIES + 4))) == "published"
    assert all(w <= BUSY_WAIT[1] for w in waits.seen[:BUSY_TRIES]), waits.seen
    # Past BUSY_TRIES in a row (an sshd that drops everything): the backoff, from
    # retry.initial (100 s) up.
    beyond = waits.seen[BUSY_TRIES:]
    assert len(beyond) == 4 and BUSY_WAIT[1] < max(beyond) <= 800, waits.seen


def test_a_failure_after_the_nas_returned_backs_off_from_the_start():
    # Ten failures the probe cannot place (its backoff grows to 512 s), then it
    # finds the NAS down, then back: the failure after that is a first failure.
    probe = Script(*[None] * 10, False, True)
    p, waits = policy(probe, backoff=1)
    errors = [TransientError("no SSH greeting")] * 11 + [TransientError("rsync: closed")]
    assert p.call(script(*errors)) == "published"
    assert max(waits.seen[5:10]) > 1, f"the backoff grew: {waits.seen}"
    assert probe.calls == 13  # ten waits of one probe, down and back, one more wait
    # The wait after that failure (the last one is the hold after the success).
    assert waits.seen[-2] <= 1, f"backed off as a first failure: {waits.seen}"


class SlowGreeter(Listener):
    """sshd's greeting after ``delay`` seconds, then the connection closed."""

    def __init__(self, delay: float):
        self.delay = delay
        super().__init__(b"SSH-2.0-OpenSSH_9.2\r\n")

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.accepted.append(conn)
                time.sleep(self.delay)
                conn.sendall(self.greeting)
                conn.close()


def test_the_return_spread_grows_with_sshds_greeting_time():
    for delay, low, high in ((0.0, SPREAD_MIN, SPREAD_MIN), (0.03, 0.03 * SPREAD_PER_GREETING,
                             SPREAD_MAX), (0.2, SPREAD_MAX, SPREAD_MAX)):  # fmt: skip
        nas = SlowGreeter(delay)
        try:
            assert ssh_answers("127.0.0.1", nas.port, 2.0) is True
            spread = return_spread("127.0.0.1", nas.port)
            assert low <= spread <= high, (delay, spread)
        finally:
            nas.close()
    assert SPREAD_MIN >= 3 and SPREAD_MAX <= 10, "a fleet back within 10 s"


def test_after_a_return_a_node_waits_a_random_part_of_the_spread_and_holds_past_it():
    # Down once, then back: the next attempt after a random 0..spread s.
    jitters = []
    for _ in range(30):
        p, waits = policy(Script(False, True), backoff=100)
        p.spread = lambda: 6.0
        assert p.call(script(TransientError("down"))) == "published"
        jitters.append(waits.seen[-2])  # after the probe's answer (then the hold)
    assert all(0 <= j <= 6.0 for j in jitters) and max(jitters) > 3, jitters
    # The hold after the first publish covers the spread and the last node's
    # first segment (spread + PROBE_EVERY + SPREAD_TAIL), though never longer than
    # the probes saw the NAS down: here two probe intervals, and a hold of 0.
    probe = Script(False, False, True)
    p = RetryPolicy(initial=100, maximum=100, permanent=600, stopping=threading.Event(),
                    probe=probe, hold=0, spread=lambda: 0.0)  # fmt: skip
    published = []

    def attempt() -> str:
        if probe.calls < 3:  # until the probe's answer
            raise TransientError("down")
        published.append(time.monotonic())
        return "published"

    assert p.call(attempt) == "published"
    assert time.monotonic() - published[0] >= PROBE_EVERY, "held past the spread"
    t0 = time.monotonic()
    assert p.call(lambda: "next") == "next"
    assert time.monotonic() - t0 < 1, "no hold without an outage"


def test_a_login_right_after_the_probes_greeting_needs_no_second_one(tmp_path):
    # An "sshd" that greets and hangs up: the probe's greeting, then ssh's own.
    nas = SlowGreeter(0.0)
    try:
        assert ssh_answers("127.0.0.1", nas.port, 2.0) is True
        with pytest.raises(CommandFailed):
            lane(tmp_path, nas.port).connect(Pacer())  # ssh: closed after the banner
        assert len(nas.accepted) == 2, "the probe and the login: no greeting check between"
    finally:
        nas.close()
