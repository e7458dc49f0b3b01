"""How livecam's processes live and end: a clean stop on SIGTERM or SIGINT, restarts
with backoff, and children that die with their parent.

The recorder, the shipper, the metrics writer and the supervisor each stop the
same way and restart what fails the same way (``Backoff``); camera backends and
the supervisor start their children with ``dies_with_parent``.
"""

from __future__ import annotations

import ctypes
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def stop_on_signals(stop: Callable[[], None]) -> None:
    """Call ``stop`` on SIGTERM (systemd, the supervisor) and SIGINT (Ctrl-C)."""
    signal.signal(signal.SIGTERM, lambda *_: stop())
    signal.signal(signal.SIGINT, lambda *_: stop())


class Backoff:
    """Seconds to wait before a restart: ``initial`` doubling up to ``maximum``,
    afresh once a run lasted ``healthy_after`` seconds."""

    def __init__(self, *, healthy_after: float, initial: float = 0.5, maximum: float = 30.0):
        self.initial, self.maximum, self.healthy_after = initial, maximum, healthy_after
        self.failures = 0

    def failed(self, ran_for: float) -> float:
        """A run that lasted ``ran_for`` seconds failed: the wait before the next."""
        if ran_for > self.healthy_after:
            self.failures = 0
        self.failures += 1
        return self.delay()

    def delay(self) -> float:
        """The wait after the failures counted so far."""
        return min(self.maximum, self.initial * 2.0 ** (max(1, self.failures) - 1))


def dies_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get ``sig`` when its parent dies.

    So a recorder killed with -9 never leaves an orphaned ffmpeg holding the camera.
    """

    def preexec() -> None:
        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, sig)

    return preexec
