"""The segment model: one closed video file, its name, and the per-camera sequence.

A segment's file name is ``<camera>-<UTC start>-<sequence>.mp4``, for example
``cam0-20261126T121530Z-000042.mp4``. The sequence number grows per camera and
survives restarts, so names never collide even when the clock is wrong (a node
may boot before NTP has set it); ordering uses the sequence, not the clock.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

SUFFIX = ".mp4"
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

    @property
    def sort_key(self) -> tuple[str, int]:
        return (self.start.strftime("%Y%m%dT%H%M%S"), self.seq)

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

    Numbers are reserved on disk in blocks, so a camera writes the reservation
    file once per ``block`` segments (every 8 hours at 30 s segments) instead of
    once per segment: the SD card is spared. A restart skips the rest of the
    block; numbers stay unique and increasing, gaps are harmless.
    """

    def __init__(self, state_dir: Path, camera: str, *, floor: int = 0, block: int = 1000):
        self.file = state_dir / f"seq-{camera}"
        self.block = block
        state_dir.mkdir(parents=True, exist_ok=True)
        try:
            reserved = int(self.file.read_text().strip() or 0)
        except (FileNotFoundError, ValueError):
            reserved = 0  # a first start, or a reservation torn by a crash: the floor decides
        self._next = max(reserved, floor)
        self._limit = self._next
        self._reserve()

    def _reserve(self) -> None:
        self._limit = self._next + self.block
        tmp = self.file.with_name(self.file.name + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{self._limit}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.file)
        fsync_dir(self.file.parent)

    def take(self) -> int:
        if self._next >= self._limit:
            self._reserve()
        value = self._next
        self._next += 1
        return value
