"""The retry policy's reachability probe: when it ends a wait, and when it must not.

The policy and tenacity run for real; the probe is the transport's answer, given
here as a script of answers so each case is exact (tests/fleet/test_return.py
runs the real probe against a real sshd behind a real outage).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest
from livecam_plugins._ssh import ssh_answers

from livecam.shipper.retry import PROBE_EVERY, RETURN_JITTER, RetryPolicy, Stopped
from livecam.transport import PermanentError, TransientError, Transport
from tests.core.node import wait_for


class Script:
    """A probe answering from ``answers`` (the last one repeats); counts its calls."""

    def __init__(self, *answers: bool | None):
        self.answers = list(answers)
        self.calls = 0
        self.times: list[float] = []

    def __call__(self, timeout: float) -> bool | None:
        self.calls += 1
        self.times.append(time.monotonic())
        return self.answers[min(self.calls, len(self.answers)) - 1]


def failing(times: int, error: Exception):
    """A publish attempt that fails ``times`` times, then succeeds."""
    left = [times]

    def attempt() -> str:
        if left[0]:
            left[0] -= 1
            raise error
        return "published"

    return attempt


def policy(probe, *, backoff: float, permanent: float = 600.0, hold: float = 0.0) -> RetryPolicy:
    return RetryPolicy(
        initial=backoff,
        maximum=backoff,
        permanent=permanent,
        stopping=threading.Event(),
        probe=probe,
        hold=hold,
    )


def test_a_long_wait_ends_soon_after_the_nas_answers_again():
    probe = Script(False, False, True)
    t0 = time.monotonic()
    assert policy(probe, backoff=600).call(failing(1, TransientError("down"))) == "published"
    assert probe.calls == 3  # down, down, back: the wait ended at the third probe
    # Two probe intervals and the jitter, not the backoff's up to 600 s (a hang guard).
    assert time.monotonic() - t0 < 2 * PROBE_EVERY + RETURN_JITTER + 30


def test_a_nas_that_answers_while_publishing_fails_is_probed_once_per_wait():
    probe = Script(True)
    assert policy(probe, backoff=0.3).call(failing(3, TransientError("rrsync"))) == "published"
    assert probe.calls == 3  # one probe per wait; each wait ran its course


def test_answering_again_ends_one_wait_only():
    # Back after being down: one early attempt. It fails for another reason: the
    # next wait is not cut short again (no hammering a NAS that answers).
    probe = Script(False, True, True)
    p = policy(probe, backoff=1e6)
    attempts = []

    def attempt():
        attempts.append(time.monotonic())
        raise TransientError("x")

    threading.Timer(PROBE_EVERY + RETURN_JITTER + 5, p.stopping.set).start()
    with pytest.raises(Stopped):
        p.call(attempt)
    assert len(attempts) == 2  # the first wait ended early, the second did not
    assert probe.calls == 3  # down, back; then one probe in the second wait


def test_after_a_return_the_next_attempt_waits_out_the_hold(caplog):
    caplog.set_level("INFO", logger="livecam.shipper")
    hold = RETURN_JITTER + 1  # longer than the jitter alone could make it
    probe = Script(False, False, True)  # down for 2 probe intervals: longer than the hold
    p = policy(probe, backoff=600, hold=hold)
    down_once = failing(1, TransientError("down"))
    published = []

    def slow_first_publish() -> str:  # a busy link: the first segment takes a while
        down_once()
        time.sleep(1)
        published.append(time.monotonic())
        return "published"

    assert p.call(slow_first_publish) == "published"
    assert probe.calls == 3  # down, down, back: the wait ended at the NAS's answer
    # The success came back to the caller only once the hold since it was over.
    assert time.monotonic() - published[0] >= hold
    assert p.call(lambda: "again") == "again"  # no outage since: no hold
    held = [r for r in caplog.messages if "first publish since the NAS's return" in r]
    assert len(held) == 1, caplog.messages


def test_the_hold_is_no_longer_than_the_outage():
    probe = Script(False, True)  # down for one probe interval only
    p = policy(probe, backoff=600, hold=60)
    assert p.call(failing(1, TransientError("blip"))) == "published"
    assert probe.calls == 2
    # Held at most as long as the probes saw the NAS down (a hang guard beyond that).
    assert time.monotonic() - probe.times[-1] < PROBE_EVERY + 30


def test_no_hold_when_the_nas_never_went_away(caplog):
    caplog.set_level("INFO", logger="livecam.shipper")
    probe = Script(True)
    p = policy(probe, backoff=0.3, hold=600)
    assert p.call(failing(2, TransientError("rrsync busy"))) == "published"
    assert probe.calls == 2
    assert not [r for r in caplog.messages if "since the NAS's return" in r]


def test_permanent_waits_never_probe():
    probe = Script(True)
    p = policy(probe, backoff=600, permanent=0.2)
    assert p.call(failing(2, PermanentError("auth refused"))) == "published"
    assert probe.calls == 0


def test_a_transport_that_cannot_tell_waits_its_backoff():
    probe = Script(None)
    t0 = time.monotonic()
    assert policy(probe, backoff=0.5).call(failing(1, TransientError("x"))) == "published"
    assert probe.calls == 1
    assert time.monotonic() - t0 <= 0.5 + 30  # uniform(0, 0.5): a hang guard only


class Listener:
    """A TCP server on loopback that accepts and sends ``greeting`` (maybe nothing)."""

    def __init__(self, greeting: bytes):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.greeting = greeting
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                self.accepted.append(conn)
                conn.sendall(self.greeting)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)  # wakes accept(); stops listening
        self.sock.close()
        for c in self.accepted:
            c.close()


def test_the_default_probe_connects_to_the_endpoint():
    server = Listener(b"")
    t = Transport({"host": "127.0.0.1", "port": server.port}, timeout=5)
    assert t.endpoint() == ("127.0.0.1", server.port)
    assert t.reachable(2) is True
    wait_for(lambda: server.accepted, 10, "the probe's connection")  # it really connected
    server.close()
    assert t.reachable(2) is False  # refused
    assert Transport({"path": "/mnt/nas"}, timeout=5).reachable(2) is None  # nothing to probe


def test_the_ssh_probe_wants_sshds_greeting_not_just_a_tcp_accept():
    silent, sshd = Listener(b""), Listener(b"SSH-2.0-OpenSSH_9.2\r\n")
    try:
        # A proxy or firewall accepting for a NAS that is down: no greeting, not up.
        assert ssh_answers("127.0.0.1", silent.port, 1.0) is False
        wait_for(lambda: silent.accepted, 10, "the probe's connection")
        assert ssh_answers("127.0.0.1", sshd.port, 2.0) is True
    finally:
        silent.close()
        sshd.close()
