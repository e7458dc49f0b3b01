"""Segment files and the switch from one to the next at a keyframe.

Each segment is one ``SegmentFile``, a picamera2 ``PyavOutput`` whose timestamps
are rebased to start at t=0; a ``FrameClock`` counts every frame the files get,
so gaps in the camera's timestamps are dropped frames and silence is a stall.
The switch itself is picamera2's ``SplittableOutput.split_output``; the one
private detail of it that livecam relies on is here, checked against the
picamera2 release the backend is tested with.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from pathlib import Path
from typing import Any

from livecam.camera import CameraError

log = logging.getLogger("livecam.picamera2")

#: The picamera2 release the backend is tested with (tests/cameras, scripts/bootstrap).
TESTED_PICAMERA2 = "0.3.38"


class FrameClock:
    """Counts frames by their camera timestamps: gaps are dropped frames, silence a stall.

    The timestamps the encoder hands its outputs count from its first frame; that
    frame's own sensor timestamp (libcamera's SensorTimestamp, in microseconds of
    CLOCK_BOOTTIME, which the encoder keeps as ``firsttimestamp`` until it stops)
    places them on the wall clock: ``wall_time``."""

    def __init__(self, fps: int, on_drop: Any, camera: str, encoder: Any = None):
        self.interval_us = 1_000_000 / fps
        self.on_drop = on_drop
        self.camera = camera
        self.encoder = encoder
        self.first_us: int | None = None  # the encoder's firsttimestamp, kept past its stop
        self.frames = 0
        self.dropped = 0
        self.splits = 0
        self.last_ts: int | None = None
        self.last_at = time.monotonic()

    def frame(self, timestamp_us: int) -> None:
        """Called from the encoder's thread for every video packet, in order."""
        self.last_at = time.monotonic()
        if self.first_us is None:
            self.first_us = getattr(self.encoder, "firsttimestamp", None)
        if self.last_ts is not None:
            missing = round((timestamp_us - self.last_ts) / self.interval_us) - 1
            if missing > 0:
                self.dropped += missing
                log.warning(
                    "camera %s: %d frames lost before t=%dus", self.camera, missing, timestamp_us
                )
                self.on_drop(missing)
        self.last_ts = timestamp_us
        self.frames += 1

    def silent_for(self) -> float:
        return time.monotonic() - self.last_at

    def wall_time(self, timestamp_us: int) -> float | None:
        """When the frame the encoder stamped ``timestamp_us`` was captured, in
        ``time.time()``'s seconds; None before the encoder had a first frame."""
        if self.first_us is None:
            return None
        ago_us = time.clock_gettime_ns(time.CLOCK_BOOTTIME) / 1000 - (self.first_us + timestamp_us)
        return time.time() - ago_us / 1_000_000


def segment_file(pyav_output: Any) -> Any:
    """The ``SegmentFile`` class over picamera2's ``PyavOutput`` (imported lazily by
    the caller: only Raspberry Pi OS has it)."""

    class SegmentFile(pyav_output):
        """One segment file; rebases camera timestamps so the file starts at t=0."""

        def __init__(self, path: Path, clock: FrameClock):
            super().__init__(str(path), format="mp4")
            self.path = path
            self.clock = clock
            self.origin: int | None = None
            self.last: int | None = None
            self.frames = 0

        def outputframe(self, frame, keyframe=True, timestamp=None, packet=None, audio=False):
            if not audio and timestamp is not None:
                if self.origin is None:
                    if not keyframe:
                        return  # PyavOutput drops these too: a file starts at a keyframe
                    self.origin = timestamp
                self.clock.frame(timestamp)
                self.frames += 1
                self.last = timestamp
                timestamp -= self.origin
            super().outputframe(frame, keyframe, timestamp, packet, audio)

        def duration(self) -> float | None:
            if self.origin is None or self.last is None:
                return None
            return (self.last - self.origin + self.clock.interval_us) / 1_000_000

        def started_at(self) -> float | None:
            """When its first frame was captured (``time.time()``'s seconds)."""
            return None if self.origin is None else self.clock.wall_time(self.origin)

    return SegmentFile


def can_force_keyframes() -> bool:
    """Whether LibavH264Encoder.force_key_frame works with this PyAV.

    picamera2 marks the frame with ``pict_type = "I"``; PyAV 14 made pict_type an
    enum and refuses the string, which would kill the encoder thread. Without it a
    split waits for the next regular keyframe (at most ``keyframe_seconds``).
    """
    import av

    try:
        av.VideoFrame(16, 16, "yuv420p").pict_type = "I"  # type: ignore[assignment]  # the probe
    except (TypeError, ValueError):
        return False
    return True


@functools.cache
def check_split_api(splitter: Any) -> None:
    """Raise CameraError unless ``splitter`` can be released by ``release_pending_split``."""
    if not isinstance(getattr(splitter, "_split_done", None), threading.Event):
        raise CameraError(
            "picamera2's SplittableOutput has no _split_done Event any more: this picamera2 "
            f"is not supported (livecam is tested with picamera2 {TESTED_PICAMERA2})"
        )


def release_pending_split(splitter: Any) -> None:
    """Wake the thread blocked in ``splitter.split_output`` waiting for a keyframe that
    will not come (the camera stopped). picamera2 offers no cancel, so this sets the
    private Event that ``split_output`` waits on; the thread then closes the old file."""
    check_split_api(splitter)
    splitter._split_done.set()
