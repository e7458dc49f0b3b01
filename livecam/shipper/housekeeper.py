"""The housekeeper: spills what is due from RAM to disk and evicts what limits force.

It touches only local storage, never the network, and never waits for the
publisher, so nothing the network does can stall it. A buffer segment is due
when it has been ready for ``spill_after`` (timed on the monotonic clock from
when it was first seen, so a clock step neither delays nor hurries a spill
beyond that) or the buffer is above its high-water mark; oldest first.

A due segment the publisher is sending right now is copied to the spool all
the same (the publisher keeps reading the RAM copy): from then on a power cut
cannot take it. The name is then in both tiers, which ships once; the RAM copy
goes with the verified publish, or at the next pass if the attempt failed.

A spool that cannot be written (read-only, full beyond what eviction can free,
vanished) is reported loudly once (``SPOOL FAILED`` in the log, ``spool_failed``
in status) and the node runs RAM-only: the buffer keeps what it can hold and
evicts, counted, when it is full. The spool is probed again every
``SPOOL_RETRY`` seconds.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
import time

from livecam.pluginhost.manager import Plugins
from livecam.shipper.evictions import Evictor
from livecam.shipper.handoff import Handoff
from livecam.storage.layout import NodeDisk
from livecam.storage.segment import Segment
from livecam.storage.state import ShipperState, StateFile
from livecam.storage.tiers import Tier

log = logging.getLogger("livecam.shipper")

SPOOL_RETRY = 5.0  # seconds between probes of a failed spool


class Housekeeper:
    """Spills and evicts; see the module doc."""

    def __init__(
        self,
        plugins: Plugins,
        *,
        disk: NodeDisk,
        spill_after: float,
        handoff: Handoff,
        evictor: Evictor,
        state: StateFile[ShipperState],
        stopping: threading.Event,
    ):
        self.plugins = plugins
        self.buffer, self.spool = disk.buffer, disk.spool
        self.spill_after = spill_after
        self.handoff = handoff
        self.evictor = evictor
        self.state = state
        self.stopping = stopping
        self._seen: dict[str, float] = {}  # buffer segment name -> monotonic time it was ready
        self._probe_at = 0.0

    def housekeep(self) -> None:
        """Spill what is due, evict what limits force; record the pass's duration."""
        t0 = time.monotonic()
        try:
            self._housekeep()
        finally:
            took = time.monotonic() - t0
            if took > self.state.current.longest_housekeeping:
                with self.state.edit() as st:
                    st.longest_housekeeping = round(took, 3)

    def _housekeep(self) -> None:
        segments = self.buffer.segments()
        now = time.monotonic()
        self._seen = {s.name: self._seen.get(s.name) or self._ready_since(s, now) for s in segments}
        high = self.buffer.above_high_water()
        for segment in segments:
            if self.stopping.is_set():
                return
            if now - self._seen[segment.name] < self.spill_after and not high:
                continue  # not due yet
            self.watch_spool()
            if not self.spool_usable:
                break
            if self.spill(segment) and high:
                high = self.buffer.above_high_water()
        self.watch_spool()  # notice a failed spool even when nothing is due
        need, reason = self.buffer.bytes_to_free()
        if need > 0:
            self.evictor.evict(self.buffer, need, reason)

    def _ready_since(self, segment: Segment, now: float) -> float:
        """When a newly seen segment became ready, on the monotonic clock: its file's
        age, bounded by ``spill_after`` so a stepped clock cannot delay it."""
        try:
            age = time.time() - segment.path.stat().st_mtime
        except OSError:
            age = 0.0
        return now - min(max(age, 0.0), self.spill_after)

    def spill_all(self) -> None:
        """On a clean stop, move what is left in RAM to disk: a reboot may follow."""
        for segment in self.buffer.segments():
            self.watch_spool()
            if not self.spool_usable:
                return
            self.spill(segment)

    @property
    def spool_usable(self) -> bool:
        """False while the spool is failed (``watch_spool`` decides)."""
        return self.state.current.spool_failed is None

    def watch_spool(self) -> None:
        """Every SPOOL_RETRY seconds: a working spool is checked without writing (a
        healthy node writes nothing to its SD card), a failed one probed by writing;
        a change is logged, shown in the state and recorded for the NAS audit."""
        if time.monotonic() < self._probe_at:
            return
        self._probe_at = time.monotonic() + SPOOL_RETRY
        if self.spool_usable:
            if problem := spool_problem(self.spool):
                self._spool_failed(problem)
        elif spool_takes_a_write(self.spool):
            log.warning("spool %s works again: spilling resumes", self.spool.path)
            with self.state.edit() as st:
                st.spool_failed = None
            self._record("spool_recovered", f"spool {self.spool.path} works again")

    def _spool_failed(self, error: str) -> None:
        if self.state.current.spool_failed is None:
            log.error(
                "SPOOL FAILED: %s; running RAM-only (recording and shipping go on, "
                "the buffer evicts when full)",
                error,
            )
            self._record("spool_failed", f"running RAM-only: {error}", error=error)
        with self.state.edit() as st:
            st.spool_failed = error
        self._probe_at = time.monotonic() + SPOOL_RETRY

    def _record(self, kind: str, reason: str, **detail: str) -> None:
        """For the NAS audit: when the node ran RAM-only (the record goes to the RAM
        buffer while the spool cannot take it, and ships from there)."""
        losses = self.evictor.losses
        if losses is not None:
            losses.record(kind, "", [], reason, spool_path=str(self.spool.path), **detail)

    def spill(self, segment: Segment) -> bool:
        """Copy one segment from RAM to the spool durably and drop the RAM copy unless
        the publisher is reading it. False if the spool could not take it."""
        with self.handoff.claim(segment.name) as mine:
            if not segment.path.exists():
                return False  # published or evicted meanwhile
            if not (self.spool.path / segment.camera / segment.name).exists():
                copy = self._copy(segment)
                if copy is None:
                    return False
                if not mine and not segment.path.exists():
                    # Published while we copied: the copy is not needed.
                    copy.path.unlink(missing_ok=True)
                    return True
            if mine:
                segment.path.unlink(missing_ok=True)
        return True

    def _copy(self, segment: Segment) -> Segment | None:
        try:
            size = segment.size
            need, reason = self.spool.bytes_to_free(incoming=size)
            if need > 0 and not self.evictor.evict(self.spool, need, reason):
                return None
            copy = self.spool.accept(segment)
        except FileNotFoundError as exc:
            if exc.filename is not None and str(exc.filename) == str(segment.path):
                return None  # published or evicted meanwhile
            self._spool_failed(f"cannot spill to {self.spool.path}: {exc}")
            return None
        except OSError as exc:
            if exc.errno == errno.ENOSPC and self.evictor.evict(self.spool, size, "min_free_bytes"):
                return None  # room made; the next pass spills it
            self._spool_failed(f"cannot spill to {self.spool.path}: {exc}")
            return None
        if not segment.is_record:  # a loss record is no spilled recording
            with self.state.edit() as st:
                st.spilled += 1
                st.spilled_bytes += size
        log.info("spilled %s to spool (%d bytes)", segment.name, size)
        self.plugins.segment_spilled(segment=copy)
        return copy


def spool_problem(spool: Tier) -> str | None:
    """Why ``spool`` cannot take spills, seen without writing to it: gone, mounted
    read-only, or without a free block; None when it looks usable."""
    try:
        st = os.statvfs(spool.path)
    except OSError as exc:
        return f"spool {spool.path} is gone: {exc}"
    if st.f_flag & os.ST_RDONLY:
        return f"spool {spool.path} is mounted read-only"
    if st.f_bavail < 2 and not spool.segments():  # ours would be evicted
        return f"spool {spool.path} is full (of other files)"
    return None


def spool_takes_a_write(spool: Tier) -> bool:
    """Whether a small file can be written to ``spool`` (and removed) now."""
    probe = spool.state_dir / ".probe"
    try:
        spool.state_dir.mkdir(exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"livecam spool probe\n")
        probe.unlink()
    except OSError:
        return False
    return True
