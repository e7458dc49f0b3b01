"""The ``picamera2`` camera backend: a Raspberry Pi CSI camera cut into gapless segments.

The camera's YUV420 main stream goes straight into picamera2's software H.264
encoder (``LibavH264Encoder``: x264 through PyAV). It is chosen by class, not by
the ``H264Encoder`` alias, because that alias means the V4L2 hardware encoder on
older Pis and on any machine where chip detection finds nothing, and a Pi 5 has
no hardware encoder. The encoder feeds a ``SplittableOutput`` that holds one
``PyavOutput`` per segment file. A timer (the thread running ``record``, never
the camera's thread) asks for a keyframe and calls ``split_output``, which moves
to the next file at that keyframe without losing or repeating a frame.

Each file starts at t=0: picamera2 stamps packets with camera time since the
first frame, so every file after the first would otherwise start late. Dropped
frames show as gaps in those timestamps and are reported to the sink; a camera
that delivers nothing for ``frame_timeout`` fails with CameraError, after the
frames it did deliver are closed into a last segment.

picamera2 and libcamera come from apt on Raspberry Pi OS, so they are imported
only when a camera records; elsewhere the camera fails with "picamera2 not
available".

One private picamera2 detail is used, in one place: ``release_pending_split``.
It is tested against picamera2 ``TESTED_PICAMERA2``; a picamera2 that changed it
fails at the start of recording with a clear error, never silently.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

from livecam import hookimpl, snapshot
from livecam import options as o
from livecam.camera import CameraBackend, CameraError, SegmentSink
from livecam.hookspecs import Register
from livecam.options import ConfigError, Option

log = logging.getLogger("livecam.picamera2")

#: The picamera2 release the backend is tested with (tests/cameras, scripts/bootstrap).
TESTED_PICAMERA2 = "0.3.38"

PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")
EXPOSURE_MODES = {"normal": "Normal", "short": "Short", "long": "Long"}
AWB_MODES = {
    "auto": "Auto",
    "incandescent": "Incandescent",
    "tungsten": "Tungsten",
    "fluorescent": "Fluorescent",
    "indoor": "Indoor",
    "daylight": "Daylight",
    "cloudy": "Cloudy",
}
NOISE_REDUCTION = {
    "off": "Off",
    "fast": "Fast",
    "high_quality": "HighQuality",
    "minimal": "Minimal",
}
INSTALL_HINT = (
    "on Raspberry Pi OS: sudo apt install python3-picamera2, and create livecam's venv "
    "with --system-site-packages"
)


def _camera(value: Any, key: str) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise ConfigError(f"{key}: a camera number is 0 or more, got {value}")
        return value
    text = o.string(value, key).strip()
    if not text:
        raise ConfigError(f"{key}: expected a camera Id or a number")
    return int(text) if text.isdigit() else text


def _transform(value: Any, key: str) -> dict[str, Any]:
    raw = o.check_options(
        key,
        value,
        {
            "hflip": Option(o.boolean, False),
            "vflip": Option(o.boolean, False),
            "rotation": Option(o.integer(0, 180), 0, "0 or 180"),
        },
    )
    if raw["rotation"] not in (0, 180):
        # The ISP flips but cannot transpose: 90 and 270 are not offered by libcamera here.
        raise ConfigError(f"{key}.rotation: must be 0 or 180, got {raw['rotation']}")
    return raw


class Picamera2Camera(CameraBackend):
    """A Raspberry Pi camera recorded through picamera2 and encoded with x264 (PyAV)."""

    description = "Raspberry Pi CSI camera via picamera2, H.264 via x264 (PyAV), gapless splits"
    options: ClassVar = {
        "camera": Option(_camera, 0, "camera Id or number (rpicam-hello --list-cameras)"),
        "size": Option(o.frame_size, [1280, 720]),
        "fps": Option(o.integer(1, 120), 30),
        "bitrate": Option(o.bitrate, "5M"),
        "keyframe_seconds": Option(o.positive_duration, "1s"),
        "preset": Option(o.choice(*PRESETS), "ultrafast", "x264 preset; slower costs CPU"),
        "transform": Option(_transform, {}, "hflip, vflip (booleans), rotation (0 or 180)"),
        "exposure_mode": Option(o.choice(*EXPOSURE_MODES), None, "default: the tuning's"),
        "awb_mode": Option(o.choice(*AWB_MODES), None, "default: the tuning's"),
        "noise_reduction": Option(o.choice(*NOISE_REDUCTION), None, "default: picamera2's"),
        "frame_timeout": Option(o.positive_duration, "5s", "no frame this long: camera failed"),
        "snapshot_seconds": Option(o.duration, "5s", "a JPEG of the latest frame (0: none)"),
    }
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

    # --- the camera ------------------------------------------------------------------

    def open_camera(self, pc: SimpleNamespace) -> Any:
        """Open and configure the camera: a ``Picamera2`` ready for ``start_encoder``."""
        opts = self.opts
        number, ident = self._find_camera(pc)
        factory = self.allocator_factory
        try:
            cam = pc.Picamera2(number, allocator=factory() if factory else None)
        except (RuntimeError, OSError) as exc:
            raise CameraError(
                f"camera {ident}: cannot open it: {_causes(exc)} "
                "(is another process, such as rpicam-* or a second livecam, using it?)"
            ) from None
        try:
            config = cam.create_video_configuration(
                main={"size": tuple(opts["size"]), "format": "YUV420"},
                controls=self._controls(pc),
                transform=self._libcamera_transform(pc),
            )
            cam.configure(config)
        except Exception as exc:
            _quietly(cam.close)
            raise CameraError(f"camera {ident}: cannot configure it: {_causes(exc)}") from None
        return cam

    def _find_camera(self, pc: SimpleNamespace) -> tuple[int, str]:
        wanted = self.opts["camera"]
        cameras = pc.Picamera2.global_camera_info()
        ids = [c["Id"] for c in cameras]
        listing = ", ".join(
            f"{i}: {c['Id']} ({c.get('Model', '?')})" for i, c in enumerate(cameras)
        )
        listing = listing or "none; check the ribbon cable and `rpicam-hello --list-cameras`"
        if isinstance(wanted, int):
            if wanted >= len(cameras):
                raise CameraError(f"camera {wanted}: no such camera (cameras found: {listing})")
            return wanted, f"{wanted} ({ids[wanted]})"
        if wanted not in ids:
            raise CameraError(f"camera {wanted}: no such camera (cameras found: {listing})")
        # Picamera2(n) takes n as a position in global_camera_info(), not libcamera's order.
        return ids.index(wanted), wanted

    def _controls(self, pc: SimpleNamespace) -> dict[str, Any]:
        opts = self.opts
        frame_us = round(1_000_000 / opts["fps"])
        controls: dict[str, Any] = {"FrameDurationLimits": (frame_us, frame_us)}
        ctl = pc.libcamera.controls
        if opts["exposure_mode"]:
            mode = EXPOSURE_MODES[opts["exposure_mode"]]
            controls["AeExposureMode"] = getattr(ctl.AeExposureModeEnum, mode)
        if opts["awb_mode"]:
            controls["AwbMode"] = getattr(ctl.AwbModeEnum, AWB_MODES[opts["awb_mode"]])
        if opts["noise_reduction"]:
            mode = NOISE_REDUCTION[opts["noise_reduction"]]
            controls["NoiseReductionMode"] = getattr(ctl.draft.NoiseReductionModeEnum, mode)
        return controls

    def _libcamera_transform(self, pc: SimpleNamespace) -> Any:
        t = self.opts["transform"]
        flip = t["rotation"] == 180
        return pc.libcamera.Transform(hflip=int(t["hflip"] != flip), vflip=int(t["vflip"] != flip))

    # --- recording -------------------------------------------------------------------

    def record(self, sink: SegmentSink) -> None:
        pc = _picamera2()
        if self._stopping.is_set():
            return
        cam = self.open_camera(pc)
        opts = self.opts
        fps = opts["fps"]
        clock = FrameClock(fps, sink.dropped_frames, self.camera)
        encoder = pc.LibavH264Encoder(
            bitrate=opts["bitrate"],
            repeat=True,  # SPS/PPS before every keyframe: each segment decodes on its own
            iperiod=max(1, round(fps * opts["keyframe_seconds"])),
            framerate=fps,
        )
        encoder.preset = opts["preset"]
        current = self._new_file(pc, sink, clock)
        splitter = pc.SplittableOutput(current)
        snaps = Snapshots(self.camera, snapshot.path_for(sink.open_dir), opts["snapshot_seconds"],
                          opts["size"], pc.encode_jpeg)  # fmt: skip
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
                sink.close(current.path, duration=current.duration())
                current = nxt
        finally:
            # The camera first (as Picamera2.stop_recording): no frame may reach an
            # encoder that is flushing.
            _quietly(cam.stop)
            if started:
                # Flushes x264's queued frames into the current file and closes it.
                _quietly(cam.stop_encoder, encoder)
            _quietly(cam.close)
            pending = self._pending
            if pending is not None:
                # A split was waiting for a keyframe that never came. Release its thread
                # only now (picamera2 offers no cancel): earlier, it would close the file
                # that the encoder's flush was still writing to.
                release_pending_split(splitter)
                _quietly(pending.stop)
        # The flush may have reached the pending file if it began with a keyframe.
        for out in (current, pending):
            if out is None:
                continue
            if out.frames and not self._killed:
                sink.close(out.path, duration=out.duration())
            else:
                out.path.unlink(missing_ok=True)
        if self._failure:
            raise CameraError(self._failure)

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


class FrameClock:
    """Counts frames by their camera timestamps: gaps are dropped frames, silence a stall."""

    def __init__(self, fps: int, on_drop: Any, camera: str):
        self.interval_us = 1_000_000 / fps
        self.on_drop = on_drop
        self.camera = camera
        self.frames = 0
        self.dropped = 0
        self.splits = 0
        self.last_ts: int | None = None
        self.last_at = time.monotonic()

    def frame(self, timestamp_us: int) -> None:
        """Called from the encoder's thread for every video packet, in order."""
        self.last_at = time.monotonic()
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


class Snapshots:
    """Every ``every`` seconds one frame of the main stream as a small JPEG (see
    livecam.snapshot). The camera's thread only copies the frame it is asked for from
    the request the encoder gets anyway; the recorder's thread encodes and writes it.
    A snapshot that cannot be made is logged and never stops the recording."""

    def __init__(
        self, camera: str, target: Path, every: float, size: list[int], encode: Any
    ) -> None:
        self.camera = camera
        self.target = target
        self.every = every
        self.width, self.height = size
        self.step = -(-self.width // snapshot.MAX_WIDTH)  # keep every step-th pixel
        self.encode = encode
        self.want = threading.Event()
        self.got = threading.Event()
        self.frame: Any = None
        self.next_at = time.monotonic()
        self.written = 0

    def on_request(self, request: Any) -> None:
        """Picamera2's post_callback: runs in the camera's thread for every frame."""
        if self.want.is_set():
            self.want.clear()
            try:
                self.frame = request.make_array("main")
            except Exception as exc:
                log.warning("camera %s: snapshot: %s: %s", self.camera, type(exc).__name__, exc)
            self.got.set()

    def poll(self) -> None:
        if not self.every:
            return
        now = time.monotonic()
        if self.got.is_set():
            self.got.clear()
            frame, self.frame = self.frame, None
            self.next_at = now + self.every
            if frame is not None:
                try:
                    snapshot.write(self.target, self._jpeg(frame))
                    self.written += 1
                except Exception as exc:
                    log.warning("camera %s: snapshot %s: %s", self.camera, self.target, exc)
        elif not self.want.is_set() and now >= self.next_at:
            self.want.set()

    def _jpeg(self, frame: Any) -> bytes:
        """A YUV420 frame (planes one under the other, as picamera2's JpegEncoder reads
        them) scaled down by keeping every ``step``-th pixel, as JPEG."""
        w, h, s = self.width, self.height, self.step
        rows = frame.reshape((frame.shape[0] * 2, frame.strides[0] // 2))
        y = frame[:h:s, :w:s]
        u = rows[2 * h : 2 * h + h // 2 : s, : w // 2 : s]
        v = rows[2 * h + h // 2 : 2 * h + h : s, : w // 2 : s]
        y = y[: 2 * u.shape[0], : 2 * u.shape[1]]  # 4:2:0: luma twice the chroma
        return bytes(self.encode(*(p.copy() for p in (y, u, v)), 80))


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


def _picamera2() -> SimpleNamespace:
    """Import picamera2 (lazily: only Raspberry Pi OS has it) and build the file output."""
    try:
        import libcamera
        from picamera2 import Picamera2
        from picamera2.encoders import LibavH264Encoder
        from picamera2.outputs import PyavOutput, SplittableOutput
        from simplejpeg import encode_jpeg_yuv_planes
    except ImportError as exc:
        raise CameraError(f"picamera2 not available ({exc}); {INSTALL_HINT}") from None

    class SegmentFile(PyavOutput):
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

    return SimpleNamespace(
        can_force_keyframes=_can_force_keyframes(),
        libcamera=libcamera,
        Picamera2=Picamera2,
        LibavH264Encoder=LibavH264Encoder,
        SplittableOutput=SplittableOutput,
        SegmentFile=SegmentFile,
        encode_jpeg=encode_jpeg_yuv_planes,
    )


def _can_force_keyframes() -> bool:
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


def _causes(exc: BaseException) -> str:
    """An exception and its causes on one line: picamera2 wraps libcamera's reason."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 4:
        parts.append(str(seen) or type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    return ": ".join(dict.fromkeys(parts))


def _quietly(fn: Any, *args: Any) -> None:
    try:
        fn(*args)
    except Exception as exc:
        log.debug("ignored during shutdown: %s: %s", type(exc).__name__, exc)


@hookimpl
def livecam_register_cameras(register: Register) -> None:
    register("picamera2", Picamera2Camera)
