"""``Picamera2Camera``: the recording loop, its splits at segment boundaries, stop and failure."""

from __future__ import annotations

import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from livecam.camera import CameraBackend, CameraError, SegmentSink
from livecam.options import ConfigError
from livecam.storage import snapshot
from livecam_plugins.picamera2 import library
from livecam_plugins.picamera2.library import quietly
from livecam_plugins.picamera2.opening import open_camera
from livecam_plugins.picamera2.options import OPTIONS
from livecam_plugins.picamera2.segments import FrameClock, check_split_api, release_pending_split
from livecam_plugins.picamera2.snapshots import Snapshots

log = logging.getLogger("livecam.picamera2")


class Picamera2Camera(CameraBackend):
    """A Raspberry Pi camera recorded through picamera2 and encoded with x264 (PyAV)."""

    description = "Raspberry Pi CSI camera via picamera2, H.264 via x264 (PyAV), gapless splits"
    options: ClassVar = OPTIONS
    # Makes Picamera2's frame buffer allocator; None: picamera2's default DmaAllocator,
    # on the Pi kernel's DMA heap. Only a machine without that heap (the tests' fake
    # camera stack) sets another.
    allocator_factory: ClassVar[Any] = None

    def __init__(self, camera: str, options: Any, *, segment_seconds: float):
        super().__init__(camera, options, segment_seconds=segment_seconds)
        self._stopping = threading.Event()
        self._killed = False
        self._failure: str | None = None
        self._seq = 0
        self._pending: Any = None  # the file of a split that never happened

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        if opts["keyframe_seconds"] * opts["fps"] < 1:
            raise ConfigError(
                f"{key}.keyframe_seconds: shorter than one frame at {opts['fps']} fps"
            )

    def open_camera(self, pc: SimpleNamespace) -> Any:
        """Open and configure the camera: a ``Picamera2`` ready for ``start_encoder``."""
        return open_camera(pc, self.opts, self.allocator_factory)

    def record(self, sink: SegmentSink) -> None:
        pc = library.load()
        if self._stopping.is_set():
            return
        cam = self.open_camera(pc)
        opts = self.opts
        encoder = self._encoder(pc)
        clock = FrameClock(opts["fps"], sink.dropped_frames, self.camera, encoder)
        current = self._new_file(pc, sink, clock)
        splitter = pc.SplittableOutput(current)
        target = snapshot.path_for(sink.open_dir)
        snaps = Snapshots(
            self.camera, target, opts["snapshot_seconds"], opts["size"], pc.encode_jpeg
        )
        cam.post_callback = snaps.on_request
        started = False
        try:
            check_split_api(splitter)  # before recording: never fail only at a stop
            cam.start_encoder(encoder, splitter, name="main")
            started = True
            cam.start()
            boundary = time.monotonic() + self.segment_seconds
            while True:
                self._wait(boundary, clock, snaps)
                if self._stopping.is_set():
                    break
                boundary += self.segment_seconds
                nxt = self._new_file(pc, sink, clock)
                if not self._split(pc, splitter, encoder, nxt, clock):
                    break
                sink.close(current.path, duration=current.duration(), start=current.started_at())
                current = nxt
        finally:
            self._shut_down(cam, encoder if started else None, splitter)
        # The flush may have reached the pending file if it began with a keyframe.
        for out in (current, self._pending):
            if out is None:
                continue
            if out.frames and not self._killed:
                sink.close(out.path, duration=out.duration(), start=out.started_at())
            else:
                out.path.unlink(missing_ok=True)
        if self._failure:
            raise CameraError(self._failure)

    def _encoder(self, pc: SimpleNamespace) -> Any:
        opts = self.opts
        fps = opts["fps"]
        encoder = pc.LibavH264Encoder(
            bitrate=opts["bitrate"],
            repeat=True,  # SPS/PPS before every keyframe: each segment decodes on its own
            iperiod=max(1, round(fps * opts["keyframe_seconds"])),
            framerate=fps,
        )
        encoder.preset = opts["preset"]
        return encoder

    def _shut_down(self, cam: Any, encoder: Any, splitter: Any) -> None:
        """Stop the camera, then flush and stop ``encoder`` (None: it never started),
        close the camera, and release a split still waiting for a keyframe."""
        # The camera first (as Picamera2.stop_recording): no frame may reach an
        # encoder that is flushing.
        quietly(cam.stop)
        if encoder is not None:
            # Flushes x264's queued frames into the current file and closes it.
            quietly(cam.stop_encoder, encoder)
        quietly(cam.close)
        if self._pending is not None:
            # A split was waiting for a keyframe that never came. Release its thread
            # only now (picamera2 offers no cancel): earlier, it would close the file
            # that the encoder's flush was still writing to.
            release_pending_split(splitter)
            quietly(self._pending.stop)

    def _new_file(self, pc: SimpleNamespace, sink: SegmentSink, clock: FrameClock) -> Any:
        self._seq += 1
        path = Path(sink.open_dir) / f"{os.getpid()}-{self._seq:09d}.mp4"
        out = pc.SegmentFile(path, clock)
        out.error_callback = self._output_failed
        return out

    def _output_failed(self, exc: Exception) -> None:
        self._failure = f"cannot write a segment: {type(exc).__name__}: {exc}"
        self._stopping.set()

    def _wait(self, until: float, clock: FrameClock, snaps: Snapshots) -> None:
        """Sleep until ``until``, stop or failure; a silent camera becomes a failure.
        Snapshots are taken here, in the recorder's thread, never the camera's."""
        while not self._stopping.wait(max(0.0, min(0.2, until - time.monotonic()))):
            self._check_frames(clock)
            snaps.poll()
            if time.monotonic() >= until:
                return

    def _check_frames(self, clock: FrameClock) -> None:
        silent = clock.silent_for()
        if silent > self.opts["frame_timeout"]:
            self._failure = f"camera {self.camera}: no frame for {silent:.1f}s; the camera stalled"
            log.error("%s", self._failure)
            self._stopping.set()

    def _split(
        self, pc: SimpleNamespace, splitter: Any, encoder: Any, new: Any, clock: FrameClock
    ) -> bool:
        """Move to ``new`` at the next keyframe and close the old file; False on failure."""
        done = threading.Event()

        def run() -> None:
            # A keyframe now rather than at the next GOP boundary, so the segment
            # closes on time; split_output then waits for it in this thread.
            if pc.can_force_keyframes:
                encoder.force_key_frame()
            splitter.split_output(new)
            done.set()

        threading.Thread(target=run, daemon=True, name=f"split-{self.camera}").start()
        while not done.wait(0.2):
            self._check_frames(clock)
            if self._failure or self._killed:
                self._pending = new  # record() settles it after the encoder has stopped
                return False
        clock.splits += 1
        return True

    def stop(self) -> None:
        self._stopping.set()

    def kill(self) -> None:
        self._killed = True
        self._failure = self._failure or f"camera {self.camera}: killed"
        self._stopping.set()
