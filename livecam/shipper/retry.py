"""How the publisher retries: forever, through tenacity.

Transient errors wait with exponential backoff and full jitter (``retry.initial``
up to ``retry.max``, counted from the last success or the NAS's return);
permanent ones (auth refused, no space...) wait a fixed, slow
``retry.permanent``. A NAS that turned the connection away before greeting it
(``ServerBusy``: sshd past its MaxStartups) is tried again after a random
``BUSY_WAIT``, without backing off, ``BUSY_TRIES`` times in a row. A stop
interrupts any wait at once.

While a transient wait runs, a cheap reachability probe (``Transport.reachable``:
a TCP connect, no login) runs every ``PROBE_EVERY`` seconds. Once a probe found
the NAS unreachable, the first probe that finds it answering again ends the
wait after a random 0..W seconds, W the transport's ``return_spread()``
(``RETURN_JITTER`` by default; the SSH transports derive it from sshd's
greeting time, so that a fleet returning together stays within what an sshd
at its defaults lets log in at once): a node is back within seconds of its NAS,
whatever the backoff had grown to, while the expensive publish still backs off
against a dead NAS. A NAS that answers while publishing fails is probed once
per wait, never hammered; permanent waits are never cut short.

After such a return the node's first success (one segment: a call after a
failure carries one) is followed by a hold: its next attempt starts
``RETURN_HOLD`` seconds (or W + PROBE_EVERY + SPREAD_TAIL, when longer: the last
node of a spread fleet sends its first segment; at most as long as the probes
saw the NAS down) after that success. A whole fleet comes back at once; without
the hold the nodes back first start their big catch-up calls and take the link
from the nodes still sending their first segment (measured: the last first
segment 40 s after the NAS's return at 30 nodes). With it, the first segments
have the link to themselves, and a node whose first segment was slow (the link
is busy with everybody's) holds back later too: at 50 nodes the first segments
alone are 8.4 s of a 100 Mbit/s link.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_random_exponential

from livecam.transport import PublishError, ServerBusy

log = logging.getLogger("livecam.shipper")

T = TypeVar("T")

PROBE_EVERY = 2.0  # seconds between reachability probes during a transient wait
PROBE_TIMEOUT = 2.0  # a probe's own bound (a dead link answers nothing)
RETURN_JITTER = 1.0  # the first attempt after the NAS answers again: 0..this seconds
# No second attempt until this long after the first publish since the NAS's
# return: one 2 MiB segment from each of 50 nodes is 8.4 s of a 100 Mbit/s link.
RETURN_HOLD = 10.0
SPREAD_TAIL = 5.0  # s for the last node of a spread fleet to log in and send a segment

# A NAS that turned a connection away before greeting it (``ServerBusy``: sshd
# past MaxStartups) is tried again after BUSY_WAIT seconds (random), BUSY_TRIES
# times in a row; then it is an ordinary transient failure.
BUSY_WAIT = (0.5, 2.5)
BUSY_TRIES = 10

Probe = Callable[[float], "bool | None"]


class _Nth:
    """The one thing tenacity's exponential wait reads of a retry state."""

    def __init__(self, attempt_number: int):
        self.attempt_number = attempt_number


def no_probe(timeout: float) -> bool | None:
    """A probe that cannot tell: waits run their course."""
    return None


class Stopped(Exception):
    """The shipper is stopping; unwinds the retry loop."""


class RetryPolicy:
    """The publisher's waits between failed attempts; see the module doc."""

    def __init__(
        self,
        *,
        initial: float,
        maximum: float,
        permanent: float,
        stopping: threading.Event,
        probe: Probe = no_probe,
        hold: float = RETURN_HOLD,
        spread: Callable[[], float] = lambda: RETURN_JITTER,
    ):
        self.permanent = permanent
        self.stopping = stopping
        self.probe = probe
        self.hold = hold
        self.spread = spread  # the transport's return_spread
        self._down: float | None = None  # when a probe first found the NAS unreachable
        self._returned: float | None = None  # when the NAS answered again (monotonic)
        self._jitter = wait_random_exponential(multiplier=initial, max=maximum)
        self._seen_down = False  # a probe found the NAS unreachable since the last success
        self._spread_used = 0.0  # the return_spread of the last return
        self._failures = 0  # transient failures the backoff counts (not busy ones)
        self._busy = 0  # ServerBusy failures in a row

    def wait(self, retry_state: RetryCallState) -> float:
        """Seconds to wait before the next attempt: BUSY_WAIT after a ServerBusy
        (BUSY_TRIES in a row), ``retry.permanent`` after a permanent failure, else
        the backoff, which counts the transient failures since the last success or
        the NAS's return (busy ones aside)."""
        if self._busy_retry(_error(retry_state)):
            return random.uniform(*BUSY_WAIT)
        if _is_permanent(retry_state):
            return self.permanent
        self._failures += 1
        return float(self._jitter(_Nth(self._failures)))  # type: ignore[arg-type]

    def _busy_retry(self, error: BaseException | None) -> bool:
        """Whether ``error`` (the last attempt's) waits BUSY_WAIT: a ServerBusy,
        at most BUSY_TRIES in a row."""
        return isinstance(error, ServerBusy) and 0 < self._busy <= BUSY_TRIES

    def start_jitter(self) -> None:
        """Wait 0..RETURN_JITTER seconds: a fleet started together spreads its
        first connections. Raises Stopped on stop."""
        self._sleep_plain(random.uniform(0, RETURN_JITTER))

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried on PublishError until it succeeds; raises Stopped on stop."""
        failed: list[PublishError] = []  # the last attempt's error: what the wait follows

        def attempt() -> T:
            try:
                return fn()
            except PublishError as exc:
                failed[:] = [exc]
                self._busy = self._busy + 1 if isinstance(exc, ServerBusy) else 0
                raise

        def sleep(seconds: float) -> None:
            # Only a wait after a transient failure is cut short when the NAS answers
            # (a busy NAS answers: its short wait runs its course).
            if failed[-1].permanent or self._busy_retry(failed[-1]):
                self._sleep_plain(seconds)
            else:
                self._sleep_probing(seconds)

        retrying = Retrying(
            retry=retry_if_exception_type(PublishError),
            wait=self.wait,
            sleep=sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        self._failures = self._busy = 0
        result = retrying(attempt)
        self._busy = 0
        if self._seen_down:  # back, though the backoff (not the probe) ended the wait
            self._returned = time.monotonic()
        self._seen_down = False
        if self._returned is not None and self._down is not None:
            # Back after an outage: leave the link to the other nodes' first segments,
            # never longer than the outage (a short one left little to catch up).
            # A fleet spread over longer than the hold: until the last node's first
            # segment is in (its probe, the spread, its login and that segment).
            hold = max(self.hold, self._spread_used + PROBE_EVERY + SPREAD_TAIL)
            hold = min(hold, self._returned - self._down)
            self._down = self._returned = None
            if hold > 0:
                log.info("first publish since the NAS's return; next attempt in %.1fs", hold)
                self._sleep_plain(hold)
        return result

    def _sleep_probing(self, seconds: float) -> None:
        """A wait after a transient failure, cut short when the NAS answers again."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            started = time.monotonic()
            answers = self._ask(min(PROBE_TIMEOUT, left))
            if answers is None or (answers and not self._seen_down):
                # Cannot tell, or the NAS answers and something else failed:
                # the backoff runs its course.
                self._sleep_plain(deadline - time.monotonic())
                return
            if answers:
                self._seen_down = False
                self._failures = 0  # a failure after the return backs off from the start
                self._returned = time.monotonic()
                # The spread, whole: not cut to what was left of the backoff.
                self._spread_used = self._spread()
                jitter = random.uniform(0, self._spread_used)
                log.info("the NAS answers again; next attempt in %.1fs", jitter)
                self._sleep_plain(jitter)
                return
            self._seen_down = True
            if self._down is None:
                self._down = started
            now = time.monotonic()
            self._sleep_plain(min(PROBE_EVERY - (now - started), deadline - now))

    def _spread(self) -> float:
        """The transport's return_spread; RETURN_JITTER if it raises (a plugin's bug)."""
        try:
            return max(0.0, float(self.spread()))
        except Exception:
            log.exception("the transport's return_spread raised")
            return RETURN_JITTER

    def _ask(self, timeout: float) -> bool | None:
        """The probe's answer; a probe that raises (a plugin's bug) cannot tell."""
        try:
            return self.probe(timeout)
        except Exception:
            log.exception("the transport's reachability probe raised")
            return None

    def _sleep_plain(self, seconds: float) -> None:
        if self.stopping.wait(max(0.0, seconds)):
            raise Stopped

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0
        if _is_permanent(retry_state):
            log.error(
                "publish failed (PERMANENT): %s; retry %d in %.1fs",
                error,
                retry_state.attempt_number,
                wait,
            )
        else:
            log.warning(
                "publish failed (transient): %s; retry %d in %.1fs",
                error,
                retry_state.attempt_number,
                wait,
            )


def _error(retry_state: RetryCallState) -> BaseException | None:
    outcome = retry_state.outcome
    return outcome.exception() if outcome is not None else None


def _is_permanent(retry_state: RetryCallState) -> bool:
    error = _error(retry_state)
    return isinstance(error, PublishError) and error.permanent
