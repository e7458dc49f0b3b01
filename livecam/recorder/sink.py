"""Where a camera backend delivers segments: named, checked, and made ready atomically.

A closed file is checked by the backend class that wrote it, named
``<camera>-<UTC start>-<sequence>.mp4`` (the start: its first frame's capture time,
as the backend reports it) and renamed into the buffer's camera directory: from that
rename on the shipper sees it. Unfinished files a crash left in ``.open/`` are
salvaged the same way, as far as their backend says they play.
"""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime, timedelta
from pathlib import Path

from livecam.camera import BadSegment, CameraBackend
from livecam.pluginhost.manager import Plugins
from livecam.recorder.sequence import SequenceCounter
from livecam.storage import clock
from livecam.storage.losses import LossWriter
from livecam.storage.segment import Segment, segment_name, to_millisecond
from livecam.storage.state import ClockStep, RecorderState, StateFile

log = logging.getLogger("livecam.recorder")

STEP_TOLERANCE = 2.0  # seconds the wall clock may drift from the monotonic one between segments


class BufferSink:
    """The ``SegmentSink`` of one camera's recorder (see ``livecam.camera``)."""

    def __init__(
        self,
        camera: str,
        backend: type[CameraBackend],
        *,
        ready_dir: Path,
        seq: SequenceCounter,
        segment_seconds: float,
        plugins: Plugins,
        state: StateFile[RecorderState],
        losses: LossWriter | None = None,
    ):
        self.camera = camera
        self.backend = backend
        self.ready_dir = ready_dir
        self.open_dir = ready_dir / ".open"
        self.seq = seq
        self.segment_seconds = segment_seconds
        self.plugins = plugins
        self.state = state
        self.losses = losses  # salvage and clock steps, for the NAS audit
        #: When the last segment closed (monotonic); the recorder's watchdog reads it.
        self.last_closed = time.monotonic()
        self._last_end: tuple[datetime, float] | None = None  # (wall, monotonic)

    def close(
        self, path: Path, *, duration: float | None = None, start: float | None = None
    ) -> Segment | None:
        return self.segment_done(Path(path), duration, start=start)

    def dropped_frames(self, count: int) -> None:
        with self.state.edit() as st:
            st.dropped_frames += count
            total = st.dropped_frames
        log.warning("camera %s: %d frames dropped (%d in all)", self.camera, count, total)

    def segment_done(
        self,
        path: Path,
        duration: float | None,
        end: datetime | None = None,
        *,
        start: float | None = None,
    ) -> Segment | None:
        """Name a finished file and make it ready; None if it is not a usable segment.

        It is named by ``start``, when its first frame was captured (``time.time()``'s
        seconds) if the backend knows it, else by ``end`` minus ``duration``; ``end``
        is when its last frame was written (default: now)."""
        try:
            self.backend.check_segment(path)
        except BadSegment as exc:
            with self.state.edit() as st:
                st.bad_segments += 1
                st.last_error = str(exc)
            log.error("camera %s: discarding %s: %s", self.camera, path.name, exc)
            path.unlink(missing_ok=True)
            return None
        if end is None:
            end = clock.now()
            stepped = self._clock_step(end)
        else:
            stepped = None  # a salvaged file's end is its mtime, not now
        if start is None:
            begin = end - timedelta(seconds=duration or self.segment_seconds)
        else:
            begin = clock.at(start)
        begin = to_millisecond(begin)  # as the name holds it
        seq = self.seq.take()
        dest = self.ready_dir / segment_name(self.camera, begin, seq)
        if stepped is not None:
            self._report_step(stepped, seq, dest.name)  # before the segment is visible
        os.rename(path, dest)  # atomic: from here on the shipper sees it
        segment = Segment(self.camera, begin, seq, dest)
        self.last_closed = time.monotonic()
        with self.state.edit() as st:
            if st.state != "stopping":  # a stopping camera's last segments: still stopping
                st.state = "recording"
            st.segments += 1
            st.last_segment = dest.name
            st.last_closed_at = time.time()
            st.spool_failed = self.seq.spool_error
        log.info("camera %s: closed %s (%d bytes)", self.camera, dest.name, dest.stat().st_size)
        self.plugins.segment_closed(segment=segment)
        return segment

    def _clock_step(self, end: datetime) -> float | None:
        """Seconds the wall clock jumped since the last segment closed (None: no step).

        The monotonic clock never steps, so any difference between the two
        clocks' progress beyond ``STEP_TOLERANCE`` is a step of the wall clock."""
        mono = time.monotonic()
        last, self._last_end = self._last_end, (end, mono)
        if last is None:
            return None
        jump = (end - last[0]).total_seconds() - (mono - last[1])
        return jump if abs(jump) > STEP_TOLERANCE else None

    def _report_step(self, seconds: float, seq: int, name: str) -> None:
        if self.losses is not None:  # for the NAS audit: why this segment's time jumps
            self.losses.record(
                "clock_step",
                self.camera,
                [seq],
                f"wall clock stepped {seconds:+.1f}s",
                step_seconds=seconds,
            )
        with self.state.edit() as st:
            st.clock_steps += 1
            st.last_clock_step = ClockStep(time.time(), round(seconds, 1), name)
        log.warning(
            "camera %s: the clock stepped %+.1fs before %s; order follows the sequence",
            self.camera,
            seconds,
            name,
        )

    def salvage(self) -> None:
        """Keep what plays of the files a crashed camera or recorder left open."""
        for leftover in sorted(self.open_dir.iterdir()):
            found = self.backend.salvage(leftover)
            if found is None:
                log.warning(
                    "camera %s: removing unplayable unfinished %s", self.camera, leftover.name
                )
                leftover.unlink(missing_ok=True)
                continue
            end = clock.at(leftover.stat().st_mtime)
            segment = self.segment_done(leftover, found.seconds, end)
            if segment is not None:
                with self.state.edit() as st:
                    st.salvaged += 1
                if self.losses is not None:
                    self.losses.record(
                        "salvaged",
                        self.camera,
                        [segment.seq],
                        f"kept {found.frames} frames of a cut-off segment",
                        frames=found.frames,
                        seconds=found.seconds,
                    )
                log.warning(
                    "camera %s: salvaged %d frames (%.1fs) of an unfinished segment as %s",
                    self.camera,
                    found.frames,
                    found.seconds,
                    segment.name,
                )
