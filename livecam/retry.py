"""How the publisher retries: forever, through tenacity.

Transient errors wait with exponential backoff and full jitter (``retry.initial``
up to ``retry.max``); permanent ones (auth refused, no space...) wait a fixed,
slow ``retry.permanent``. A stop interrupts any wait at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_random_exponential

from livecam.transport import PublishError

log = logging.getLogger("livecam.shipper")

T = TypeVar("T")


class Stopped(Exception):
    """The shipper is stopping; unwinds the retry loop."""


class RetryPolicy:
    """The publisher's waits between failed attempts; see the module doc."""

    def __init__(
        self, *, initial: float, maximum: float, permanent: float, stopping: threading.Event
    ):
        self.permanent = permanent
        self.stopping = stopping
        self._jitter = wait_random_exponential(multiplier=initial, max=maximum)

    def wait(self, retry_state: RetryCallState) -> float:
        """Seconds to wait before the next attempt."""
        if _is_permanent(retry_state):
            return self.permanent
        return float(self._jitter(retry_state))

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()``, retried on PublishError until it succeeds; raises Stopped on stop."""
        retrying = Retrying(
            retry=retry_if_exception_type(PublishError),
            wait=self.wait,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        return retrying(fn)

    def _sleep(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
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
