"""Eviction: deleting unshipped segments when a tier's limits force it, and counting each.

Every eviction is recorded data lost on purpose. Each one is counted, logged
with the segment's name and fired as an event *before* the segment is gone: it
is first renamed to a hidden name (which also proves the tier can still delete:
a read-only spool evicts nothing, records nothing, loses nothing), then its
loss record is written (``livecam.storage.losses``), then it is counted, logged
and announced, then deleted. The count is kept in memory
and written to every ledger file that can take it (the spool's, which survives a
reboot, and the RAM buffer's, which survives a failed SD card); ``status`` reads
the larger. The log line is written whatever the disks do. A crash between the
rename and the delete leaves the segment aside; the next start deletes it, and
records and counts it only if the ledger's last eviction is not that segment
(evictions run one at a time, so only the last can be counted and not yet
deleted; a record is written before its count): each eviction is counted once,
while its record, log line and event may come twice.

Order: the plugins' choice first, then oldest first (each camera strictly by
sequence). A segment the publisher holds is taken from it when the transport
lets go (``livecam.shipper.handoff``), without waiting:

- queued in a batch and not started: it will never be sent, and is evicted as
  any other;
- in an rsync call in flight (``takes_started``): its file is deleted at once
  (an rsync that opened it still sends it whole), after a durable note in the
  ledger; when the call reports, a segment it proved on the NAS is published,
  one it did not is counted, logged, recorded and announced as evicted then. A
  crash in between counts the noted segment as evicted at the next start (it
  may have arrived: an over-count, never a loss uncounted).

Any other held segment (a store transport's item being written) is skipped: if
that attempt fails it is the oldest again at the next pass. Eviction never
waits on the network.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from livecam.pluginhost.manager import Plugins
from livecam.shipper.handoff import Handoff, Taken
from livecam.storage.layout import NodeDisk
from livecam.storage.losses import LossWriter
from livecam.storage.segment import Segment
from livecam.storage.tiers import Tier

log = logging.getLogger("livecam.shipper")

EVICTING = ".evicting"  # suffix of a segment renamed aside on its way out
TAKEN = "taken"  # the ledger's segments deleted from a call in flight, not yet settled


class Ledger:
    """The eviction ledger (``NodeDisk.ledger_files``: on the spool, which survives a
    reboot, and in RAM, which survives a failed SD card): segments and bytes
    evicted, and the last one."""

    def __init__(self, disk: NodeDisk):
        self.disk = disk
        self.record: dict[str, Any] = disk.ledger()

    def count(self, segment: Segment, tier: Tier, reason: str, size: int) -> int:
        """Record one eviction wherever a disk takes it; returns the count so far."""
        record = self.record
        record["count"] = record.get("count", 0) + 1
        record["bytes"] = record.get("bytes", 0) + size
        by_place = record.setdefault("by_camera_tier", {})  # livecam_evicted_segments_total
        key = f"{segment.camera}/{tier.role}"
        by_place[key] = by_place.get(key, 0) + 1
        record["last"] = {
            "segment": segment.name,
            "tier": tier.role,
            "reason": reason,
            "time": time.time(),
        }
        record.get(TAKEN, {}).pop(segment.name, None)  # settled in the same write
        self._write()
        return int(record["count"])

    def note_taken(self, segment: Segment, tier: Tier, reason: str, size: int) -> None:
        """Note a segment deleted from a call in flight, not yet known lost or arrived."""
        note = {"path": str(segment.path), "tier": tier.role, "reason": reason, "bytes": size}
        self.record.setdefault(TAKEN, {})[segment.name] = note
        self._write()

    def arrived(self, name: str) -> None:
        """A noted segment was proven on the NAS after all: drop its note."""
        if self.record.get(TAKEN, {}).pop(name, None) is not None:
            self._write()

    def _write(self) -> None:
        spool, buffer = self.disk.ledger_files()
        data = json.dumps(self.record, indent=1, sort_keys=True, default=str)
        placed = self.disk.write_state(spool.name, data, mirror=True)
        for role, exc in placed.errors.items():
            path = spool if role == "spool" else buffer
            log.error("cannot write the eviction count to %s: %s", path, exc)


class Evictor:
    """Frees room in a tier; see the module doc."""

    def __init__(
        self, plugins: Plugins, handoff: Handoff, ledger: Ledger, losses: LossWriter | None = None
    ):
        self.plugins = plugins
        self.handoff = handoff
        self.ledger = ledger
        self.losses = losses  # each eviction's loss record, for the NAS audit
        # The housekeeper evicts; the publisher settles what it took from a call.
        self._lock = threading.Lock()

    def evict(self, tier: Tier, bytes_needed: int, reason: str) -> bool:
        """Delete segments from ``tier`` until ``bytes_needed`` are free. True if enough."""
        candidates = [s for s in tier.segments() if not s.is_record]  # never loss records
        chosen = self.plugins.choose_evictions(
            tier=tier, segments=list(candidates), bytes_needed=bytes_needed
        )
        order = list(chosen or []) + [s for s in candidates if s not in (chosen or [])]
        freed = 0
        for segment in order:
            if freed >= bytes_needed:
                break
            with self.handoff.claim(segment.name) as mine:
                if mine:
                    freed += self._evict(segment, tier, reason)
                    continue
            freed += self._take(segment, tier, reason)
        return freed >= bytes_needed

    def _evict(self, segment: Segment, tier: Tier, reason: str) -> int:
        aside = segment.path.with_name(f".{segment.name}{EVICTING}")
        with self._lock:  # the count and the delete together (see finish_interrupted)
            try:
                size = segment.size
                segment.path.rename(aside)
            except FileNotFoundError:
                return 0
            except OSError as exc:  # a read-only or failing disk: it stays, nothing is lost
                log.error("cannot evict %s from %s: %s", segment.name, tier.role, exc)
                return 0
            # Only once it is certain to go (a record of a segment kept is a false loss),
            # and before the count and the delete: a crash after the rename is finished,
            # recorded included, by the next start (finish_interrupted).
            self._record_loss(segment, tier, reason, size)
            self._count(segment.at(aside), tier, reason, size)
            aside.unlink(missing_ok=True)
        return size

    def _take(self, segment: Segment, tier: Tier, reason: str) -> int:
        """Take a segment the publisher holds, if its transport lets go (module doc)."""
        try:
            size = segment.size
        except OSError:
            return 0
        settle = functools.partial(self._settle, segment, tier, reason, size)
        # Under the lock: the publisher's settle waits until the note and the delete are done.
        with self._lock:
            how = self.handoff.take(segment.name, segment.path, settle)
            if how is Taken.STARTED:
                return self._delete_taken(segment, tier, reason, size)
        return self._evict(segment, tier, reason) if how is Taken.QUEUED else 0

    def _delete_taken(self, segment: Segment, tier: Tier, reason: str, size: int) -> int:
        """Delete a segment taken from a call in flight, noted first (under the lock)."""
        self.ledger.note_taken(segment, tier, reason, size)
        try:
            segment.path.unlink()
        except FileNotFoundError:
            return 0  # proven and deleted by the publisher meanwhile
        except OSError as exc:  # it stays; _settle sees it still here
            log.error("cannot evict %s from %s: %s", segment.name, tier.role, exc)
            return 0
        log.info(
            "took %s from the publish in flight (%s limit): deleted, counted as evicted "
            "unless that publish proves it",
            segment.name,
            reason,
        )
        return size

    def _settle(self, segment: Segment, tier: Tier, reason: str, size: int, lost: bool) -> None:
        """The call a taken segment was in has reported: count it if it is lost."""
        with self._lock:
            if lost and not segment.path.exists():
                self._record_loss(segment, tier, reason, size)
                self._count(segment, tier, reason, size)
            else:
                self.ledger.arrived(segment.name)

    def _record_loss(self, segment: Segment, tier: Tier, reason: str, size: int) -> None:
        if self.losses is not None:
            self.losses.record(
                "evicted",
                segment.camera,
                [segment.seq],
                f"evicted from {tier.role} ({reason} limit)",
                segment=segment.name,
                tier=tier.role,
                limit=reason,
                bytes=size,
            )

    def _count(
        self, segment: Segment, tier: Tier, reason: str, size: int, counted: bool = False
    ) -> None:
        """Count (unless ``counted`` already), log and announce one eviction."""
        if counted:
            count = int(self.ledger.record.get("count", 0))
        else:
            count = self.ledger.count(segment, tier, reason, size)
        log.warning(
            "EVICTED %s from %s (%s limit): %d bytes of recording deleted unshipped (%d so far)",
            segment.name,
            tier.role,
            reason,
            size,
            count,
        )
        self.plugins.segment_evicted(segment=segment, tier=tier, reason=reason)

    def finish_interrupted(self, tier: Tier) -> None:
        """Count and delete what a crash left renamed aside mid-eviction."""
        for aside in sorted(tier.path.glob(f"*/.*{EVICTING}")):
            segment = Segment.from_path(aside.with_name(aside.name[1 : -len(EVICTING)]))
            if segment is None:
                continue
            last = self.ledger.record.get("last") or {}
            counted = last.get("segment") == segment.name and last.get("tier") == tier.role
            try:
                size = aside.stat().st_size
                if not counted:  # a record is written before its count
                    self._record_loss(segment, tier, "interrupted", size)
                self._count(segment.at(aside), tier, "interrupted", size, counted)
                aside.unlink()
            except OSError as exc:
                log.error("cannot finish evicting %s: %s", aside, exc)
        # Taken from a call that never reported (a crash): lost unless still here.
        for name, note in list(self.ledger.record.get(TAKEN, {}).items()):
            if note.get("tier") != tier.role:
                continue
            segment = Segment.from_path(Path(note["path"]))
            if segment is None or segment.name != name:
                self.ledger.arrived(name)
                continue
            self._settle(segment, tier, str(note["reason"]), int(note["bytes"]), True)
