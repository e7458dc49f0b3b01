"""Loss records: what a node lost and why, published beside its recordings.

Each record is one small JSON file (format ``livecam-loss/1``). It travels through
the shipper exactly like a segment, as a segment of the reserved pseudo-camera
``livecam-losses``, so it reaches the NAS through the same transport, under the
same write-only rights, and the NAS keeps it when the node is reinstalled::

    <spool>/livecam-losses/livecam-losses-20261127T050102Z-1764219662123456.mp4
    -> NAS: {site}/{node}/livecam-losses/{date}/livecam-losses-...mp4

The ``.mp4`` suffix is only the shipper's ready-scan pattern; the content is JSON.
The "sequence" of a record is a microsecond timestamp, made unique on the node by
creating the name with ``link()`` (which never replaces), so no two records share a
name and none is ever overwritten. Records are written straight into the disk
spool (fsynced), never the RAM buffer: a power cut must not take the record of
what the power cut took. The shipper never evicts them.

A record's fields::

    format     "livecam-loss/1"
    kind       evicted | restart | salvaged | camera_down | clock_step
               | spool_failed | spool_recovered (the node ran RAM-only in between)
    site, node, camera   (camera "" for what concerns every camera of the node)
    time       when the node wrote it (Unix seconds, the node's clock)
    sequences  the camera's sequence numbers it concerns (may be empty)
    reason     one line a person can read
    detail     kind-specific facts (see docs/nas.md)

Writing a record never raises: losing the record must not stop a recording.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from livecam.segment import Segment, fsync_dir, segment_name

log = logging.getLogger("livecam.losses")

FORMAT = "livecam-loss/1"
LOSS_CAMERA = "livecam-losses"
KINDS = (
    "evicted", "restart", "salvaged", "camera_down", "clock_step",
    "spool_failed", "spool_recovered",
)  # fmt: skip


def is_loss_record(path: Path) -> bool:
    """True if ``path`` is named like a loss record (not whether it parses)."""
    segment = Segment.from_path(path)
    return segment is not None and segment.camera == LOSS_CAMERA


def record_loss(
    spool: Path,
    kind: str,
    camera: str,
    sequences: Iterable[int] = (),
    reason: str = "",
    *,
    site: str = "",
    node: str = "",
    fallback: Path | None = None,
    **detail: Any,
) -> Path | None:
    """Write one loss record into the ``spool`` tier's directory; its path, or None.

    ``kind`` is one of ``KINDS``; ``detail`` holds its kind-specific facts (JSON
    values). When the spool cannot take it (a failed SD card), the record goes to
    the ``fallback`` tier (the RAM buffer), which the shipper publishes just the
    same. Never raises: an I/O error is logged and None returned.
    """
    now = time.time()
    record = {
        "format": FORMAT,
        "kind": kind,
        "site": site,
        "node": node,
        "camera": camera,
        "time": round(now, 6),
        "sequences": sorted(int(s) for s in sequences),
        "reason": reason,
        "detail": detail,
    }
    start = datetime.fromtimestamp(now, UTC)
    tiers = [Path(spool)] + ([Path(fallback)] if fallback is not None else [])
    for tier in tiers:
        try:
            dest = _write(tier / LOSS_CAMERA, record, start, int(now * 1e6))
        except OSError as exc:
            log.error("cannot write %s loss record for camera %s to %s: %s",
                      kind, camera, tier, exc)  # fmt: skip
            continue
        # The event itself is logged where it happens (EVICTED, salvaged, failed, ...).
        log.debug("camera %s: wrote %s for the NAS audit", camera, dest)
        return dest
    log.error("LOSS RECORD LOST: the %s record for camera %s: no tier took it", kind, camera)
    return None


def _write(folder: Path, record: dict[str, Any], start: datetime, seq: int) -> Path:
    """One record, fsynced, under a name nobody holds. Raises OSError."""
    tmp = folder / f".loss-{os.getpid()}-{time.monotonic_ns()}.part"
    try:
        folder.mkdir(exist_ok=True)  # not parents: a vanished spool mount stays gone
        with open(tmp, "w") as f:
            json.dump(record, f, sort_keys=True, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        dest = _link_unique(tmp, folder, start, seq)
        fsync_dir(folder)
        return dest
    finally:
        with contextlib.suppress(OSError):  # a read-only disk refuses even this
            tmp.unlink(missing_ok=True)


def _link_unique(tmp: Path, folder: Path, start: datetime, seq: int) -> Path:
    """Give ``tmp`` a record name nobody holds; ``link()`` never replaces a name."""
    for attempt in range(1000):
        dest = folder / segment_name(LOSS_CAMERA, start, seq + attempt)
        try:
            os.link(tmp, dest)
        except FileExistsError:
            continue
        return dest
    raise FileExistsError(f"no free loss record name in {folder}")


@dataclass(frozen=True)
class LossWriter:
    """``record_loss`` bound to one node's spool, site and node name."""

    spool: Path
    site: str = ""
    node: str = ""
    fallback: Path | None = None  # the RAM buffer, for when the spool fails

    def record(
        self, kind: str, camera: str, sequences: Iterable[int], reason: str, **detail: Any
    ) -> Path | None:
        return record_loss(self.spool, kind, camera, sequences, reason, site=self.site,
                           node=self.node, fallback=self.fallback, **detail)  # fmt: skip


# --- restarts: which reserved sequence numbers the last run never closed ------------------


def _stop_marker(state_dir: Path, camera: str) -> Path:
    return Path(state_dir) / f"stopped-{camera}.json"


def mark_clean_stop(state_dir: Path, camera: str, last_segment: str | None) -> None:
    """Note on disk that ``camera``'s recorder stopped cleanly after ``last_segment``.

    The next start reads it (``note_start``): without it, that start follows a crash
    or a power cut."""
    last = Segment.from_path(Path(last_segment)) if last_segment else None
    marker = _stop_marker(state_dir, camera)
    tmp = marker.with_name(f".{marker.name}.tmp")
    try:
        with open(tmp, "w") as f:
            json.dump({"last_seq": last.seq if last else None, "time": time.time()}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, marker)
        fsync_dir(marker.parent)
    except OSError as exc:
        log.error("camera %s: cannot note the clean stop in %s: %s", camera, marker, exc)


def note_start(
    spool: Path,
    state_dir: Path,
    camera: str,
    *,
    previous_limit: int | None,
    starts_at: int,
    site: str = "",
    node: str = "",
    fallback: Path | None = None,
) -> Path | None:
    """Record a recorder start, once its sequence counter has reserved a block.

    Every start skips the rest of the previous run's reserved block (and, with a
    working spool, the range a RAM-only run may have used: see
    ``SequenceCounter``), so the audit needs this record to explain that sequence
    jump. ``previous_limit`` is the end of the reservation before this start
    (None: a first start); ``reserved_below`` in the record is ``starts_at``, the
    first number this run hands out: earlier runs used only numbers below it. ``clean`` says
    whether the previous run stopped cleanly (then nothing was lost, and
    ``last_seq`` is its last segment); if not, numbers it reserved but the NAS
    never gets were lost in the crash or power cut (or never used).
    """
    state_dir = Path(state_dir)
    reserved = None if previous_limit is None else starts_at
    marker = _stop_marker(state_dir, camera)
    try:
        stopped: dict[str, Any] | None = json.loads(marker.read_text())
    except (OSError, ValueError):
        stopped = None
    if reserved is None:
        reason = "first start: a new sequence"
    elif stopped is not None:
        reason = f"restart after a clean stop; numbers up to {reserved - 1} reserved, unused"
    else:
        reason = (
            f"restart after a crash or power cut; numbers up to {reserved - 1} were reserved:"
            " those never published were lost with the RAM buffer or never used"
        )
    path = record_loss(
        spool, "restart", camera, (), reason, site=site, node=node, fallback=fallback,
        reserved_below=reserved, clean=stopped is not None,
        last_seq=(stopped or {}).get("last_seq"), stopped_at=(stopped or {}).get("time"),
    )  # fmt: skip
    try:
        marker.unlink(missing_ok=True)  # consumed: the next start after a crash finds none
    except OSError as exc:  # a failed spool: this start's record says what it knows
        log.error("camera %s: cannot remove the clean-stop note %s: %s", camera, marker, exc)
    return path
