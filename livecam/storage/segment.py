"""The segment model: one closed video file, its name, and the per-camera sequence.

A segment's file name is ``<camera>-<UTC start>-<sequence>.mp4``, for example
``cam0-20261126T121530.250Z-000042.mp4``: the start is its first frame's capture
time, to the millisecond (``.000`` is left out: names before issue 22 had whole
seconds, ``...T121530Z-...``, and read the same). The sequence number grows per camera and
survives restarts, so names never collide even when the clock is wrong (a node
may boot before NTP has set it); ordering uses the sequence, not the clock.

Loss records (``livecam.storage.losses``) travel the same queue but are not videos:
``loss-<UTC time>-<microseconds>.json`` in the folder ``_losses``, a name no camera
can take (a camera name starts with a letter or a digit: ``CAMERA_NAME_RE``). Before
issue 22 they were named as segments of the pseudo-camera ``livecam-losses``
(``livecam-losses-<time>-<microseconds>.mp4``): such a file still parses, as a record
(``is_record``), so a node upgraded with old records waiting ships them, under
today's name (``as_published``), and a NAS tree of old names still reads.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

SUFFIX = ".mp4"
_NAME_RE = re.compile(
    r"^(?P<camera>[A-Za-z0-9][A-Za-z0-9_-]*)-(?P<start>\d{8}T\d{6}(?:\.\d{3})?Z)"
    r"-(?P<seq>\d{6,})\.mp4$"
)
CAMERA_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")

LOSSES = "_losses"  # the loss records' folder, in each tier and on the NAS: never a camera
OLD_LOSSES = "livecam-losses"  # their pseudo-camera before issue 22 (names ending .mp4)
RECORD_PREFIX, RECORD_SUFFIX = "loss-", ".json"
_RECORD_RE = re.compile(r"^loss-(?P<start>\d{8}T\d{6}Z)-(?P<seq>\d{6,})\.json$")


@dataclass(frozen=True)
class Segment:
    """A closed segment file of one camera, wherever it lies now."""

    camera: str
    start: datetime
    seq: int
    path: Path

    @property
    def name(self) -> str:
        """The file's name where it lies (an old-named record keeps its old name)."""
        if self.camera == LOSSES:
            return record_name(self.start, self.seq)
        return segment_name(self.camera, self.start, self.seq)

    @property
    def is_record(self) -> bool:
        """A loss record (today's name or one from before issue 22), not a video."""
        return self.camera in (LOSSES, OLD_LOSSES)

    def as_published(self) -> Segment:
        """This file as the NAS names it: a record named the old way gets today's
        folder and name (same time and number); anything else is itself."""
        if self.camera == OLD_LOSSES:
            return Segment(LOSSES, self.start, self.seq, self.path)
        return self

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def at(self, path: Path) -> Segment:
        """The same segment at another path (after a spill)."""
        return Segment(self.camera, self.start, self.seq, path)

    @classmethod
    def from_path(cls, path: Path) -> Segment | None:
        """Parse a segment or loss record file name; None for anything else."""
        match = _NAME_RE.match(path.name)
        camera = match["camera"] if match else LOSSES
        match = match or _RECORD_RE.match(path.name)
        if not match:
            return None
        start = _parse_start(match["start"])
        return cls(camera, start, int(match["seq"]), path)


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
    """``<camera>-<UTC start>-<sequence>.mp4``, the start to the millisecond (cut, so give
    it rounded: ``to_millisecond``). A start on a whole second is written without
    ``.000``, as every name was before issue 22: a name and its parse always agree."""
    at = start.astimezone(UTC)
    millis = f".{at.microsecond // 1000:03d}" if at.microsecond >= 1000 else ""
    return f"{camera}-{at:%Y%m%dT%H%M%S}{millis}Z-{seq:06d}{SUFFIX}"


def to_millisecond(at: datetime) -> datetime:
    """``at`` rounded to the millisecond, as a segment name holds it."""
    return datetime.fromtimestamp(round(at.timestamp(), 3), UTC)


def _parse_start(text: str) -> datetime:
    """The UTC time of a name: ``20261126T121530.250Z``, or ``20261126T121530Z``."""
    whole, _, millis = text.rstrip("Z").partition(".")
    start = datetime.strptime(whole, "%Y%m%dT%H%M%S").replace(tzinfo=UTC)
    return start + timedelta(milliseconds=int(millis)) if millis else start


def record_name(start: datetime, seq: int) -> str:
    """A loss record's file name: ``loss-<UTC time>-<microseconds>.json``."""
    return f"{RECORD_PREFIX}{start.astimezone(UTC):%Y%m%dT%H%M%SZ}-{seq:06d}{RECORD_SUFFIX}"
