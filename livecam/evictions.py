"""Eviction: deleting unshipped segments when a tier's limits force it, and counting each.

Every eviction is recorded data lost on purpose, so each one is counted in a
durable ledger in the spool's state directory (it survives reboots; ``status``
shows it), logged with the segment's name, and fired as an event.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from livecam.claims import Claims
from livecam.losses import LOSS_CAMERA, LossWriter
from livecam.plugins import Plugins
from livecam.segment import Segment
from livecam.state import read_json, write_json
from livecam.tiers import Tier

log = logging.getLogger("livecam.shipper")

EVICT_WAIT = 2.0  # how long eviction waits for a segment that is being published


class Ledger:
    """``evictions.json``: how many segments and bytes were evicted, and the last one."""

    def __init__(self, path: Path):
        self.path = path

    def count(self, segment: Segment, tier: Tier, reason: str, size: int) -> int:
        """Record one eviction durably; returns the count so far."""
        record = read_json(self.path)
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
        write_json(self.path, record, durable=True)
        return int(record["count"])


class Evictor:
    """Frees room in a tier: the plugins' choice first, then oldest first."""

    def __init__(
        self, plugins: Plugins, claims: Claims, ledger: Ledger, losses: LossWriter | None = None
    ):
        self.plugins = plugins
        self.claims = claims
        self.ledger = ledger
        self.losses = losses  # each eviction's loss record, for the NAS audit

    def evict(self, tier: Tier, bytes_needed: int, reason: str) -> bool:
        """Delete segments from ``tier`` until ``bytes_needed`` are free. True if enough."""
        candidates = [s for s in tier.segments() if s.camera != LOSS_CAMERA]  # never records
        chosen = self.plugins.choose_evictions(
            tier=tier, segments=list(candidates), bytes_needed=bytes_needed
        )
        order = list(chosen or []) + [s for s in candidates if s not in (chosen or [])]
        freed = 0
        for segment in order:
            if freed >= bytes_needed:
                break
            # The oldest is often the one being published; a failing attempt ends
            # quickly, so wait a little to keep the order strictly oldest first.
            with self.claims.claim(segment.name, wait=EVICT_WAIT) as mine:
                if not mine:
                    continue
                try:
                    size = segment.size
                    # The record first: a power cut between the two must not leave a
                    # hole no record explains (one for a segment kept explains nothing).
                    if self.losses is not None:
                        self.losses.record("evicted", segment.camera, [segment.seq],
                                           f"evicted from {tier.role} ({reason} limit)",
                                           segment=segment.name, tier=tier.role,
                                           limit=reason, bytes=size)  # fmt: skip
                    segment.path.unlink()
                except FileNotFoundError:
                    continue
            freed += size
            count = self.ledger.count(segment, tier, reason, size)
            log.warning(
                "EVICTED %s from %s (%s limit): %d bytes of recording deleted unshipped "
                "(%d so far)",
                segment.name,
                tier.role,
                reason,
                size,
                count,
            )
            self.plugins.segment_evicted(segment=segment, tier=tier, reason=reason)
        return freed >= bytes_needed
