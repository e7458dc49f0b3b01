"""When each frame left ffmpeg's filters for the encoder: the times that name its segments.

x264 holds frames back (lookahead and frame threads: 1.4 to 1.7 s at 10 fps with the
veryfast preset), so ffmpeg lists a segment as closed well after its last frame, and
lists the last one of a run, flushed at the stop, at once: a segment's close time
cannot name it. So ffmpeg also reports every frame as it leaves the filter graph,
before the encoder: the ``metadata`` filter prints a line for it, unbuffered, to a
pipe (``FrameTimes.filter``), and a thread here notes the wall clock beside the
frame's stream time. A segment that starts at stream time ``start`` begins at the
wall time of its first frame: ``start`` plus the smallest (wall - stream time) of its
frames, the offset of the frame read with the least delay. That is the time the frame
entered the encoder, a few milliseconds after ffmpeg read it.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque

log = logging.getLogger("livecam.ffmpeg")

_PTS_TIME = re.compile(rb"^frame:\s*\d+\s+pts:\s*\S+\s+pts_time:\s*(-?[0-9.]+)")
KEY = "livecam_frame"
#: How long a closed segment's first frame may still be on its way through the pipe.
WAIT = 2.0


class FrameTimes:
    """The wall-clock time of each frame ffmpeg encodes, read from ``fd`` (the read end
    of the pipe whose write end ``filter`` names)."""

    def __init__(self, fd: int, fps: float, keep: int, camera: str = ""):
        self.camera = camera
        self._file = os.fdopen(fd, "rb", buffering=0)
        self._half = 0.5 / fps
        self._frames: deque[tuple[float, float]] = deque(maxlen=keep)  # (stream, wall)
        self._seen = threading.Condition()
        self._newest: float | None = None
        self._ended = False
        # The segment list's times minus the filters': 0 while the list is not shifted by
        # x264's B-frame delay (``-avoid_negative_ts disabled``); the first entry, which
        # starts with the first frame, would show any other constant difference.
        self._shift: float | None = None
        self._absent = False  # ffmpeg reported no frame at all: never wait for one

    @staticmethod
    def filter(write_fd: int) -> str:
        """The filters that report each frame to the pipe whose write end is ``write_fd``
        (the ``metadata`` filter prints only frames that carry its key: the first adds it)."""
        return (
            f"metadata=mode=add:key={KEY}:value=1,"
            f"metadata=mode=print:key={KEY}:direct=1:file=/dev/fd/{write_fd}"
        )

    def read(self) -> None:
        """Note each frame's arrival until ffmpeg closes the pipe (a thread's target)."""
        try:
            for line in self._file:
                match = _PTS_TIME.match(line)
                if match:
                    self._note(float(match[1]), time.time())
        except (OSError, ValueError):
            pass
        finally:
            with self._seen:
                self._ended = True
                self._seen.notify_all()
            self._file.close()

    def _note(self, stream: float, wall: float) -> None:
        with self._seen:
            self._frames.append((stream, wall))
            self._newest = stream
            self._seen.notify_all()

    def first_frame_at(self, start: float, end: float) -> float | None:
        """The wall time of the first frame of the segment listed from ``start`` to
        ``end`` (seconds of the segment list); None if no frame of it was reported."""
        with self._seen:
            if self._absent:
                return None
            if self._shift is None:  # the first segment starts with the first frame
                self._seen.wait_for(lambda: self._newest is not None or self._ended, WAIT)
                if not self._frames:
                    self._absent = True
                    log.warning(
                        "camera %s: ffmpeg reports no frame times; segments are named "
                        "by their close, late by what the encoder holds back",
                        self.camera,
                    )
                    return None
                self._shift = start - self._frames[0][0]
            first, last = start - self._shift - self._half, end - self._shift - self._half
            self._seen.wait_for(
                lambda: self._ended or (self._newest is not None and self._newest >= first),
                WAIT,
            )
            offsets = [wall - s for s, wall in self._frames if first <= s < last]
            while self._frames and self._frames[0][0] < last:
                self._frames.popleft()  # this segment's frames: no later one needs them
        return start - self._shift + min(offsets) if offsets else None
