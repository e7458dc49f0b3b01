"""A clock step moves none of the shipper's timers (docs/architecture.md, "Names").

Spill ages run on the monotonic clock from when the shipper first saw a segment
(its file age, capped at ``spill_after``, for segments found at start), and
eviction follows the sequence, so a step can neither delay nor lose a spill,
nor reorder what is evicted. The recorder's naming clock is stepped by
``LIVECAM_CLOCK_OFFSET`` (tests/core/test_reliability.py); the shipper's clock is
the machine's, which a test cannot step (libfaketime breaks Python's
``time.sleep``). What a step does to the files is what these tests do: a file
written before a step back has an mtime in the future, one written before a step
forward an mtime in the past, and its name carries the naming clock's time.

The shipper runs on real files in real tiers, driven directly (as in
tests/core/test_shipper.py).
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from livecam import build
from livecam.shipper.process import Shipper
from livecam.storage.segment import Segment, segment_name
from tests.core.node import wait_for

HOUR = 3600.0


def configure(tmp_path: Path, spill_after: str):
    raw = {
        "node": "node01",
        "site": "lab",
        "segment_seconds": 1,
        "cameras": {"cam0": {"pattern": "testsrc2"}},
        "buffer": {"path": str(tmp_path / "buffer"), "max_bytes": "1M"},
        "spool": {"path": str(tmp_path / "spool"), "max_bytes": "250K", "min_free_bytes": 0},
        "transport": {"plugin": "local", "path": str(tmp_path / "nas")},
        "spill_after": spill_after,
        "plugin_dirs": [],
    }
    return build.from_document(raw)


def put(tier: Path, seq: int, *, minute: int = 0, stepped: float = 0.0) -> Segment:
    """A 100 KB segment of cam0 named at 12:``minute``, its mtime ``stepped`` seconds
    away from now (what a step of ``-stepped`` seconds right after it makes of it)."""
    start = datetime(2026, 11, 26, 12, minute, seq % 60, tzinfo=UTC)
    path = tier / "cam0" / segment_name("cam0", start, seq)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(100_000))
    if stepped:
        mtime = path.stat().st_mtime + stepped
        os.utime(path, (mtime, mtime))
    segment = Segment.from_path(path)
    assert segment is not None
    return segment


def spilled(shipper: Shipper, *segments: Segment) -> bool:
    """One housekeeping pass; then whether every one of ``segments`` is on disk only."""
    shipper.housekeeper.housekeep()
    spool = shipper.spool.path / "cam0"
    return all(not s.path.exists() and (spool / s.name).exists() for s in segments)


def test_a_step_back_delays_no_spill(tmp_path):
    """NTP steps back a clock that ran an hour fast: what was written before the step
    is an hour "in the future" on the wall clock. It spills once ``spill_after``
    has passed all the same: found at the shipper's start, and found while it runs.
    Timed on the wall clock it would wait an hour in RAM, and a power cut would
    take it."""
    cfg, plugins = configure(tmp_path, "1s")
    found_at_start = put(cfg.buffer.path, 1, stepped=HOUR)
    shipper = Shipper(cfg, plugins)
    shipper.housekeeper.housekeep()
    found_while_running = put(cfg.buffer.path, 2, stepped=HOUR)
    # A bound on the wait, not a measure: spill_after is 1 s, an hour's delay is an hour.
    wait_for(
        lambda: spilled(shipper, found_at_start, found_while_running),
        30,
        "both segments spilled",
        interval=0.5,
    )
    assert shipper.state.spilled == 2


def test_a_step_forward_hurries_no_spill(tmp_path):
    """A step an hour forward makes a segment the shipper already saw look an hour
    old on the wall clock: it still waits its ``spill_after`` in RAM (a spill it
    does not need costs the SD card a write)."""
    cfg, plugins = configure(tmp_path, "10m")
    segment = put(cfg.buffer.path, 1)
    shipper = Shipper(cfg, plugins)
    shipper.housekeeper.housekeep()  # seen: due in ten minutes
    mtime = segment.path.stat().st_mtime - HOUR  # the clock jumped an hour ahead
    os.utime(segment.path, (mtime, mtime))
    shipper.housekeeper.housekeep()
    assert segment.path.exists() and not (cfg.spool.path / "cam0" / segment.name).exists()
    assert shipper.state.spilled == 0


def test_eviction_follows_the_sequence_across_a_step(tmp_path):
    """Segments 1-2 were written while the clock ran an hour fast (their names say
    12:59, their mtimes lie an hour ahead); NTP stepped it back, and 3-4 are named
    12:00 with true mtimes. A full spool loses 1 and 2: the oldest by sequence,
    though name and file time both call them the newest."""
    cfg, plugins = configure(tmp_path, "1s")
    segs = [put(cfg.spool.path, seq, minute=59, stepped=HOUR) for seq in (1, 2)]
    segs += [put(cfg.spool.path, seq) for seq in (3, 4)]  # 400K in a 250K spool
    shipper = Shipper(cfg, plugins)
    need, reason = shipper.spool.bytes_to_free()
    assert shipper.evictor.evict(shipper.spool, need, reason) is True
    assert [s.path.exists() for s in segs] == [False, False, True, True]
    ledger = json.loads((cfg.spool.path / ".livecam" / "evictions.json").read_text())
    assert ledger["count"] == 2 and ledger["last"]["segment"] == segs[1].name


def test_the_buffer_evicts_by_sequence_across_a_step(tmp_path):
    """When the spool cannot take more, the RAM buffer evicts oldest first by
    sequence too: segment 1, written (as 1-6 were) before the clock stepped back
    an hour, goes first, though 7-11 look older by name and by file time."""
    cfg, plugins = configure(tmp_path, "1s")
    # A spool whose floor can never be met (a full SD card): nothing can spill.
    spool = cfg.spool.__class__(**{**cfg.spool.__dict__, "min_free_bytes": 1 << 60})
    cfg = cfg.__class__(**{**cfg.__dict__, "spool": spool})
    segs = [put(cfg.buffer.path, seq, minute=59, stepped=HOUR) for seq in range(1, 7)]
    segs += [put(cfg.buffer.path, seq, minute=30) for seq in range(7, 12)]  # 1.1M > 1M
    shipper = Shipper(cfg, plugins)
    shipper.housekeeper.housekeep()
    assert [s.seq for s in segs if not s.path.exists()] == [1]
