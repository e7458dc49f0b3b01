"""The segment model: one closed video file, its name, and the per-camera sequence.

A segment's file name is ``<camera>-<UTC start>-<sequence>.mp4``, for example
``cam0-20261126T121530Z-000042.mp4``. The sequence number grows per camera and
survives restarts, so names never collide even when the clock is wrong (a node
may boot before NTP has set it); ordering uses the sequence, not the clock.
"""

from __future__ import annotations

import hashlib
import heapq
import os
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SUFFIX = ".mp4"
SPOOL_RETRY = 30.0  # seconds between attempts to reserve on a failed spool again
_NAME_RE = re.compile(
    r"^(?P<camera>[A-Za-z0-9][A-Za-z0-9_-]*)-(?P<start>\d{8}T\d{6}Z)-(?P<seq>\d{6,})\.mp4$"
)
CAMERA_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Segment:
    """A closed segment file of one camera, wherever it lies now."""

    camera: str
    start: datetime
    seq: int
    path: Path

    @property
    def name(self) -> str:
        return segment_name(self.camera, self.start, self.seq)

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def at(self, path: Path) -> Segment:
        """The same segment at another path (after a spill)."""
        return Segment(self.camera, self.start, self.seq, path)

    @classmethod
    def from_path(cls, path: Path) -> Segment | None:
        """Parse a segment file name; None for anything that is not one."""
        match = _NAME_RE.match(path.name)
        if not match:
            return None
        start = datetime.strptime(match["start"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return cls(match["camera"], start, int(match["seq"]), path)


def oldest_first(segments: Iterable[Segment]) -> list[Segment]:
    """Segments oldest first: each camera's strictly by sequence, cameras interleaved.

    The clock decides nothing within a camera (it may have stepped); it only
    interleaves cameras, by the start time of each camera's next segment.
    """
    by_camera: dict[str, list[Segment]] = {}
    for segment in segments:
        by_camera.setdefault(segment.camera, []).append(segment)
    queues = [sorted(segs, key=lambda s: s.seq, reverse=True) for segs in by_camera.values()]
    heads = [(q[-1].start, q[-1].camera, i) for i, q in enumerate(queues)]
    heapq.heapify(heads)
    ordered = []
    while heads:
        _, _, i = heapq.heappop(heads)
        ordered.append(queues[i].pop())
        if queues[i]:
            heapq.heappush(heads, (queues[i][-1].start, queues[i][-1].camera, i))
    return ordered


def segment_name(camera: str, start: datetime, seq: int) -> str:
    return f"{camera}-{start.astimezone(UTC):%Y%m%dT%H%M%SZ}-{seq:06d}{SUFFIX}"


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SequenceCounter:
    """Per-camera sequence numbers that survive restarts and power cuts.

    Numbers are reserved on disk in blocks (``<spool>/.livecam/seq-<cam>`` holds
    the limit), so a camera writes the reservation once per ``block`` segments
    (every 8 hours at 30 s) instead of once per segment: the SD card is spared.

    When the spool cannot be written (a failed SD card goes read-only), the
    reservation is kept in the RAM buffer's state directory instead and numbers
    continue from the spool's limit upward. A start that can write the spool
    therefore begins ``ram_blocks`` blocks above the spool's limit: what RAM-only
    runs may have used before a reboot wiped the buffer (up to 100 000 segments,
    35 days at 30 s) is never handed out again. Numbers stay unique and
    increasing; gaps are harmless.
    """

    def __init__(
        self,
        state_dir: Path,
        camera: str,
        *,
        fallback_dir: Path | None = None,
        floor: int = 0,
        block: int = 1000,
        ram_blocks: int = 100,
    ):
        self.file = state_dir / f"seq-{camera}"
        self.fallback = (fallback_dir or state_dir) / f"seq-{camera}"
        self.block = block
        #: Why the spool could not take the reservation, while it cannot.
        self.spool_error: str | None = None
        self._retry_at = time.monotonic() + SPOOL_RETRY
        spooled, in_ram = _read_limit(self.file), _read_limit(self.fallback)
        #: The reservation's end before this start (None: a first start, or a reinstall).
        self.previous_limit = max(spooled, in_ram) or None
        self._next = max(spooled + ram_blocks * block if spooled else 0, in_ram, floor)
        self._reserve()
        if self.spool_error is not None:  # RAM-only: continue right above the spool's limit
            self._next = max(spooled, in_ram, floor)
            self._reserve()
        #: The first number this run hands out.
        self.first = self._next

    def _reserve_again(self) -> None:
        """Put the RAM reservation back on the spool once it can be written again."""
        try:
            self._write(self.file, self._limit)
        except OSError:
            return
        self.spool_error = None

    def _reserve(self) -> None:
        self._limit = self._next + self.block
        try:
            self._write(self.file, self._limit)
            self.spool_error = None
        except OSError as exc:
            self.spool_error = f"cannot reserve sequence numbers in {self.file}: {exc}"
        if self.fallback != self.file:
            self._write(self.fallback, self._limit)  # RAM: a restart in this boot continues

    @staticmethod
    def _write(path: Path, limit: int) -> None:
        path.parent.mkdir(exist_ok=True)  # never recreate a vanished spool on the root disk
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{limit}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)

    def take(self) -> int:
        if self._next >= self._limit:
            self._reserve()
        elif self.spool_error is not None and time.monotonic() >= self._retry_at:
            self._retry_at = time.monotonic() + SPOOL_RETRY
            self._reserve_again()
        value = self._next
        self._next += 1
        return value


def _read_limit(path: Path) -> int:
    """A reservation file's limit; 0 when missing, unreadable or torn by a crash."""
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0
