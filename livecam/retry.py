"""How the publisher retries: forever, through tenacity.

Transient errors wait with exponential backoff and full jitter (``retry.initial``
up to ``retry.max``); permanent ones (auth refused, no space...) wait a fixed,
slow ``retry.permanent``. A stop interrupts any wait at once.

While a transient wait runs, a cheap reachability probe (``Transport.reachable``:
a TCP connect, no login) runs every ``PROBE_EVERY`` seconds. Once a probe found
the NAS unreachable, the first probe that finds it answering again ends the
wait after a random ``0..RETURN_JITTER`` seconds (so a fleet returning together
does not connect in one burst): a node is back within seconds of its NAS,
whatever the backoff had grown to, while the expensive publish still backs off
against a dead NAS. A NAS that answers while publishing fails is probed once
per wait, never hammered; permanent waits are never cut short.

After such a return the node's first success (one segment: a call after a
failure carries one) is followed by a hold: its next attempt starts
``RETURN_HOLD`` seconds (at most as long as the probes saw the NAS down) after
that success. A whole fleet comes back at once; without the hold the nodes
back first start their big catch-up calls and take the link from the nodes
still sending their first segment (measured: the last first segment 40 s after
the NAS's return at 30 nodes). With it, the first segments have the link to
themselves, and a node whose first segment was slow (the link is busy with
everybody's) holds back later too: at 50 nodes the first segments alone are
8.4 s of a 100 Mbit/s link.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_random_exponential

from livecam.transport import PublishError

log = logging.getLogger("livecam.shipper")

T = TypeVar("T")

PROBE_EVERY = 2.0  # seconds between reachability probes during a transient wait
PROBE_TIMEOUT = 2.0  # a probe's own bound (a dead link answers nothing)
RETURN_JITTER = 1.0  # the first attempt after the NAS answers again: 0..this seconds
# No second attempt until this long after the first publish since the NAS's
# return: one 2 MiB segment from each of 50 nodes is 8.4 s of a 100 Mbit/s link.
RETURN_HOLD = 10.0

Probe = Callable[[float], "bool | None"]


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
    ):
        self.permanent = permanent
        self.stopping = stopping
        self.probe = probe
        self.hold = hold
        self._down: float | None = None  # when a probe first found the NAS unreachable
        self._returned: float | None = None  # when the NAS answered again (monotonic)
        self._jitter = wait_random_exponential(multiplier=initial, max=maximum)
        self._probing = False  # the wait to come follows a transient failure
        self._seen_down = False  # a probe found the NAS unreachable since the last success

    def wait(self, retry_state: RetryCallState) -> float:
        """Seconds to wait before the next attempt."""
        if _is_permanent(retry_state):
            self._probing = False
            return self.permanent
        self._probing = True
        return float(self._jitter(retry_state))

    def start_jitter(self) -> None:
        """Wait 0..RETURN_JITTER seconds: a fleet started together spreads its
        first connections. Raises Stopped on stop."""
        self._sleep_plain(random.uniform(0, RETURN_JITTER))

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried on PublishError until it succeeds; raises Stopped on stop."""
        retrying = Retrying(
            retry=retry_if_exception_type(PublishError),
            wait=self.wait,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        result = retrying(fn)
        if self._seen_down:  # back, though the backoff (not the probe) ended the wait
            self._returned = time.monotonic()
        self._seen_down = False
        if self._returned is not None and self._down is not None:
            # Back after an outage: leave the link to the other nodes' first segments,
            # never longer than the outage (a short one left little to catch up).
            hold = min(self.hold, self._returned - self._down)
            self._down = self._returned = None
            if hold > 0:
                log.info("first publish since the NAS's return; next attempt in %.1fs", hold)
                self._sleep_plain(hold)
        return result

    def _sleep(self, seconds: float) -> None:
        """The wait between attempts, cut short when the NAS answers again."""
        if not self._probing:
            self._sleep_plain(seconds)
            return
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
                self._returned = time.monotonic()
                jitter = random.uniform(0, RETURN_JITTER)
                log.info("the NAS answers again; next attempt in %.1fs", jitter)
                self._sleep_plain(min(jitter, deadline - time.monotonic()))
                return
            self._seen_down = True
            if self._down is None:
                self._down = started
            now = time.monotonic()
            self._sleep_plain(min(PROBE_EVERY - (now - started), deadline - now))

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


def _is_permanent(retry_state: RetryCallState) -> bool:
    outcome = retry_state.outcome
    error = outcome.exception() if outcome is not None else None
    return isinstance(error, PublishError) and error.permanent
