"""How much an rsync call carries: a few seconds at the rate of this node's recent calls.

rsync proves a call's segments only when the call ends (exit 0), and only then
are they deleted on the node (per-file ``--remove-source-files`` is what the
NAS's ``rrsync -no-del`` refuses, rightly). So calls are short: a verified
segment leaves the spool within about a call's seconds, even when many nodes
share the link.

- **A call's seconds.** Its fixed cost over the master connection (rrsync's
  start and about ten round trips) must stay a few percent, so a call lasts
  ``CALL_RTTS`` times the NAS's greeting time (about one round trip, measured at
  each new connection), between ``CALL_SECONDS`` and ``CALL_MAX_SECONDS``
  (docs/transports.md has what that gives on a LAN and at 40 ms RTT).
- **The rate.** What the recent calls sent over how long they took, each older
  call counting half as much, so that a batch's small last call does not set it
  alone. The rate a call measures is its share of the link beside the other
  lane's call, and calls sized from it still last a call's seconds.
- **Starting small.** The first call after a start, a failure or a pause of
  ``PAUSE`` seconds (such as the hold after a return: others may share the link
  now) carries one segment. While the calls measured took under ``MEASURED``
  seconds (too short to tell what the link gives this node when others share
  it) a call is at most twice as big as what they sent.
- **Limits.** ``CALL_BYTES`` caps a call on a fast link (whole segments: a
  bigger one goes alone); a batch (``batch_limit``) is ``BATCH_SECONDS`` at the
  recent rate, cut into calls.
- **Overdue.** A call of several segments still running ``OVERDUE`` times a
  call's seconds was sized from a rate the link no longer gives (more nodes on
  it than a moment ago): it is stopped, what arrived is proven by the NAS's
  checksums, and the rest goes again in calls sized from what this one managed.
"""

from __future__ import annotations

import threading
import time

CALL_SECONDS = 3.0
CALL_MAX_SECONDS = 10.0
CALL_RTTS = 200
MEASURED = 1.0
PAUSE = 2.0  # s between calls: a drain's calls follow each other at once
OVERDUE = 3.0
BATCH_SECONDS = 60.0
CALL_BYTES = 128 * 1024 * 1024


class Pacer:
    """The rate of one transport's recent calls, and the sizes it gives (module doc)."""

    def __init__(self) -> None:
        # What recent calls sent and how long they took, each older call counting
        # half as much (0 bytes: no rate to go by).
        self._bytes = 0.0
        self._seconds = 0.0
        self._ended = 0.0  # when the last call that sent any ended (monotonic)
        self._lock = threading.Lock()  # two calls may end at once
        self.call_seconds = CALL_SECONDS  # from the greeting time

    def greeted(self, seconds: float) -> None:
        """The NAS's sshd greeted in ``seconds``: a call lasts CALL_RTTS times that."""
        self.call_seconds = min(CALL_MAX_SECONDS, max(CALL_SECONDS, CALL_RTTS * seconds))

    def batch_limit(self) -> int:
        """Bytes of the next batch: BATCH_SECONDS at the recent calls' rate; 0 (one
        segment) when there is no rate (at start, after a failure) or after a pause
        of PAUSE seconds."""
        if self._bytes and time.monotonic() - self._ended > PAUSE:
            self.measured(0, 0)  # others may share the link now: measure anew
        if not self._bytes:
            return 0
        return int(self.rate() * BATCH_SECONDS)

    def rate(self) -> float:
        """Bytes per second of the recent calls (0: none since a failure or a pause)."""
        return self._bytes / max(0.01, self._seconds)

    def measured(self, sent: int, seconds: float) -> None:
        """A call sent ``sent`` bytes in ``seconds``; 0, 0: start over (a failure,
        a pause)."""
        with self._lock:
            if not sent:
                self._bytes = self._seconds = 0.0
                return
            self._ended = time.monotonic()
            self._bytes = self._bytes / 2 + sent
            self._seconds = self._seconds / 2 + seconds

    def call_limit(self) -> int:
        """Bytes of the next call: a call's seconds at the last measured rate,
        CALL_BYTES at most; at most twice what was measured while that took under
        MEASURED seconds. With no rate, CALL_BYTES: whoever handed in the batch
        sized it (the shipper's first after a start or a failure is one segment).

        Why: a rate measured in a fraction of a second, while this node had the link
        to itself, says nothing once the fleet is back on it. A call sized from it
        can last 30 times longer and keep its segments in the spool all that time."""
        if not self._bytes:
            return CALL_BYTES
        limit = int(self.rate() * self.call_seconds)
        if self._seconds < MEASURED:
            limit = min(limit, int(2 * self._bytes))
        return min(CALL_BYTES, limit)

    def half_done(self, size: int) -> float | None:
        """Seconds until a call of ``size`` bytes should be half done at the recent
        rate; None without a rate (nothing tells when it ends)."""
        rate = self.rate()
        return size / rate / 2 if rate else None

    def deadline(self, segments: int) -> float | None:
        """Seconds after which a call of ``segments`` is overdue (OVERDUE); None for
        a lone segment (that slow is the timeout's business) or without a rate."""
        return OVERDUE * self.call_seconds if segments > 1 and self._bytes else None
