"""Loss records: what a node lost and why, published beside its recordings.

Each record is one small JSON file (format ``livecam-loss/1``). It travels through
the shipper's queue beside the segments, in the folder ``_losses`` (a name no
camera can take), so it reaches the NAS through the same transport, under the
same write-only rights, and the NAS keeps it when the node is reinstalled::

    <spool>/_losses/loss-20261127T050102Z-1764219662123456.json
    -> NAS: {site}/{node}/_losses/{date}/loss-20261127T050102Z-1764219662123456.json

It is not a video: no ``.mp4`` name, never counted as a published segment (the
shipper counts records on their own), never evicted. Before issue 22 records were
named as segments of a pseudo-camera, ``livecam-losses/livecam-losses-<time>-<us>.mp4``;
the shipper still ships such a file (under today's name) and the NAS still reads one
(``livecam.storage.segment``).
The "sequence" of a record is a microsecond timestamp, made unique on the node by
creating the name with ``link()`` (which never replaces), so no two records share a
name and none is ever overwritten. Records are written straight into the disk
spool (fsynced): a power cut must not take the record of what the power cut
took. Only while the spool cannot take them do they go to the RAM buffer (the
node's one rule, ``NodeDisk.durably``), which the shipper publishes just the
same. The shipper never evicts them.

A record's fields::

    format     "livecam-loss/1"
    kind       evicted | restart | salvaged | camera_down | clock_step
               | spool_failed | spool_recovered (the node ran RAM-only in between)
               | stopped (a recorder stopped cleanly: its camera is silent from here)
    site, node, camera   (camera "" for what concerns every camera of the node)
    time       when the node wrote it (Unix seconds, the node's clock)
    sequences  the camera's sequence numbers it concerns (may be empty)
    reason     one line a person can read
    detail     kind-specific facts (see docs/nas.md)

Writing a record never raises: losing the record must not stop a recording.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from livecam.storage.files import atomic_write, fsync_dir
from livecam.storage.layout import NodeDisk
from livecam.storage.segment import LOSSES, OLD_LOSSES, Segment, record_name
from livecam.storage.state import pid_alive

log = logging.getLogger("livecam.losses")

_TEMP = re.compile(r"\.loss-(\d+)-\d+\.tmp")  # write_record's temp file: its writer's pid

FORMAT = "livecam-loss/1"
LOSS_CAMERA = LOSSES  # the records' folder (not a camera: see livecam.storage.segment)
OLD_LOSS_CAMERA = OLD_LOSSES  # their pseudo-camera before issue 22
KINDS = (
    "evicted", "restart", "salvaged", "camera_down", "clock_step",
    "spool_failed", "spool_recovered", "stopped",
)  # fmt: skip


def is_loss_record(path: Path) -> bool:
    """True if ``path`` is named like a loss record, today's name or the old one (not
    whether it parses)."""
    segment = Segment.from_path(path)
    return segment is not None and segment.is_record


def loss_record(
    kind: str,
    camera: str,
    sequences: Iterable[int],
    reason: str,
    *,
    site: str = "",
    node: str = "",
    now: float | None = None,
    **detail: Any,
) -> dict[str, Any]:
    """One record's fields (see the module doc); ``detail``: its kind-specific facts."""
    return {
        "format": FORMAT,
        "kind": kind,
        "site": site,
        "node": node,
        "camera": camera,
        "time": round(time.time() if now is None else now, 6),
        "sequences": sorted(int(s) for s in sequences),
        "reason": reason,
        "detail": detail,
    }


def write_record(folder: Path, record: dict[str, Any]) -> Path:
    """``record``, fsynced, in ``folder`` (which exists) under a name nobody holds;
    its path. Raises OSError.

    The temp file is ``.loss-<pid>-<n>.tmp``: not ``.part``, since the shipper's start
    removes spill partials (``Tier.discard_partials``) while the recorders start and
    write their records. The temps of writers that died (a crash, a power cut) are
    removed here."""
    now = float(record["time"])
    _discard_dead_temps(folder)
    tmp = folder / f".loss-{os.getpid()}-{time.monotonic_ns()}.tmp"
    try:
        with open(tmp, "w") as f:
            json.dump(record, f, sort_keys=True, default=str)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        dest = _link_unique(tmp, folder, datetime.fromtimestamp(now, UTC), int(now * 1e6))
        fsync_dir(folder)
        return dest
    finally:
        with contextlib.suppress(OSError):  # a read-only disk refuses even this
            tmp.unlink(missing_ok=True)


def _discard_dead_temps(folder: Path) -> None:
    for leftover in folder.glob(".loss-*.tmp"):
        writer = _TEMP.fullmatch(leftover.name)
        if writer is not None and not pid_alive(int(writer[1])):
            with contextlib.suppress(OSError):
                leftover.unlink()


def _link_unique(tmp: Path, folder: Path, start: datetime, seq: int) -> Path:
    """Give ``tmp`` a record name nobody holds; ``link()`` never replaces a name."""
    for attempt in range(1000):
        dest = folder / record_name(start, seq + attempt)
        try:
            os.link(tmp, dest)
        except FileExistsError:
            continue
        return dest
    raise FileExistsError(f"no free loss record name in {folder}")


@dataclass(frozen=True)
class LossWriter:
    """Writes one node's loss records: into the spool, else the RAM buffer (which the
    shipper publishes just the same: ``NodeDisk.durably``). Never raises: an I/O
    error is logged and None returned."""

    disk: NodeDisk
    site: str = ""
    node: str = ""
    #: The wall clock records and clean-stop notes are stamped with.
    clock: Callable[[], float] = time.time

    def record(
        self, kind: str, camera: str, sequences: Iterable[int], reason: str, **detail: Any
    ) -> Path | None:
        """Write one record of ``kind`` (one of ``KINDS``); its path, or None."""
        record = loss_record(
            kind,
            camera,
            sequences,
            reason,
            site=self.site,
            node=self.node,
            now=self.clock(),
            **detail,
        )
        placed = self.disk.durably(LOSS_CAMERA, functools.partial(write_record, record=record))
        for role, exc in placed.errors.items():
            why = f"cannot write {kind} loss record for camera {camera} to {role}"
            log.error("%s: %s", why, exc)
        if placed.value is None:
            log.error(
                "LOSS RECORD LOST: the %s record for camera %s: no tier took it", kind, camera
            )
            return None
        # The event itself is logged where it happens (EVICTED, salvaged, failed, ...).
        log.debug("camera %s: wrote %s for the NAS audit", camera, placed.value)
        return placed.value


# --- restarts: which reserved sequence numbers the last run never closed ------------------


def mark_clean_stop(losses: LossWriter, camera: str, last_segment: str | None) -> None:
    """``camera``'s recorder stopped cleanly after ``last_segment``: a ``stopped`` record
    for the NAS (the camera is silent from here on, and no loss made it so), and a
    note on disk for the next start (``note_start``: without it, that start follows
    a crash or a power cut)."""
    last = Segment.from_path(Path(last_segment)) if last_segment else None
    last_seq = last.seq if last else None
    losses.record("stopped", camera, (), "the recorder stopped cleanly", last_seq=last_seq)
    marker = losses.disk.stop_marker(camera)
    note = {"last_seq": last_seq, "time": losses.clock()}
    try:
        atomic_write(marker, json.dumps(note), durable=True)
    except OSError as exc:
        log.error("camera %s: cannot note the clean stop in %s: %s", camera, marker, exc)


def note_start(
    losses: LossWriter, camera: str, *, previous_limit: int | None, starts_at: int
) -> Path | None:
    """Record a recorder start, once its sequence counter has reserved a block.

    A start after a clean stop continues where it stopped; one after a crash skips
    the rest of the block the last run reserved, and one after a reboot the range a
    RAM-only run may have used (see ``SequenceCounter``): the audit needs this record
    to explain such a jump. ``previous_limit`` is the end of the reservation before
    this start (None: a first start); ``reserved_below`` in the record is
    ``starts_at``, the first number this run hands out: earlier runs used only
    numbers below it. ``clean`` says whether the previous run stopped cleanly (then
    nothing was lost, and ``last_seq`` is its last segment); if not, numbers it
    reserved but the NAS never gets were lost in the crash or power cut (or never used).
    """
    reserved = None if previous_limit is None else starts_at
    marker = losses.disk.stop_marker(camera)
    try:
        stopped: dict[str, Any] | None = json.loads(marker.read_text())
    except (OSError, ValueError):
        stopped = None
    if reserved is None:
        reason = "first start: a new sequence"
    elif stopped is not None and reserved == previous_limit:
        reason = f"restart after a clean stop; numbers continue at {reserved}"
    elif stopped is not None:
        reason = f"restart after a clean stop; numbers up to {reserved - 1} reserved, unused"
    else:
        reason = (
            f"restart after a crash or power cut; numbers up to {reserved - 1} were reserved:"
            " those never published were lost with the RAM buffer or never used"
        )
    path = losses.record(
        "restart",
        camera,
        (),
        reason,
        reserved_below=reserved,
        clean=stopped is not None,
        last_seq=(stopped or {}).get("last_seq"),
        stopped_at=(stopped or {}).get("time"),
    )
    try:
        # Consumed: the next start after a crash finds none, nor after a power cut (an
        # unlink the directory's fsync did not follow can come back, and a start after
        # a power cut would then say the node had stopped cleanly).
        marker.unlink(missing_ok=True)
        fsync_dir(marker.parent)
    except OSError as exc:  # a failed spool: this start's record says what it knows
        log.error("camera %s: cannot remove the clean-stop note %s: %s", camera, marker, exc)
    return path
