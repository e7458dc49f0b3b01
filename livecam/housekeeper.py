"""The housekeeper: spills what is due from RAM to disk and evicts what limits force.

It touches only local storage, never the network, so an outage or a hung mount
cannot stop it. A buffer segment is due when it is older than ``spill_after`` or
the buffer is above its high-water mark; oldest first.
"""

from __future__ import annotations

import errno
import logging
import threading
import time

from livecam.claims import Claims
from livecam.evictions import Evictor
from livecam.plugins import Plugins
from livecam.segment import Segment
from livecam.state import ShipperState, StateFile
from livecam.tiers import Tier

log = logging.getLogger("livecam.shipper")


class Housekeeper:
    """Spills and evicts; see the module doc."""

    def __init__(
        self,
        plugins: Plugins,
        *,
        buffer: Tier,
        spool: Tier,
        spill_after: float,
        claims: Claims,
        evictor: Evictor,
        state: StateFile[ShipperState],
        stopping: threading.Event,
    ):
        self.plugins = plugins
        self.buffer = buffer
        self.spool = spool
        self.spill_after = spill_after
        self.claims = claims
        self.evictor = evictor
        self.state = state
        self.stopping = stopping

    def housekeep(self) -> None:
        """Spill what is due, evict what limits force. Never touches the network."""
        now = time.time()
        for segment in self.buffer.segments():
            if self.stopping.is_set():
                return
            try:
                age = now - segment.path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < self.spill_after and not self.buffer.above_high_water():
                break  # the rest is younger still
            self._spill_unclaimed(segment)
        need, reason = self.buffer.bytes_to_free()
        if need > 0:
            self.evictor.evict(self.buffer, need, reason)

    def spill_all(self) -> None:
        """On a clean stop, move what is left in RAM to disk: a reboot may follow."""
        for segment in self.buffer.segments():
            self._spill_unclaimed(segment)

    def _spill_unclaimed(self, segment: Segment) -> None:
        """Spill ``segment`` unless the publisher holds it or it is gone already."""
        with self.claims.claim(segment.name) as mine:
            if mine and segment.path.exists():
                self.spill(segment)

    def spill(self, segment: Segment) -> bool:
        """Move one segment from RAM to the spool durably. False if the spool has no room."""
        size = segment.size
        need, reason = self.spool.bytes_to_free(incoming=size)
        if need > 0 and not self.evictor.evict(self.spool, need, reason):
            return False
        try:
            copy = self.spool.accept(segment)
        except OSError as exc:
            log.error("cannot spill %s to %s: %s", segment.name, self.spool.path, exc)
            if exc.errno == errno.ENOSPC:
                self.evictor.evict(self.spool, size, "min_free_bytes")
            return False
        segment.path.unlink(missing_ok=True)
        with self.state.edit() as st:
            st.spilled += 1
            st.spilled_bytes += size
        log.info("spilled %s to spool (%d bytes)", segment.name, size)
        self.plugins.segment_spilled(segment=copy)
        return True
