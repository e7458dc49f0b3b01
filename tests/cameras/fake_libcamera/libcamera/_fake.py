"""What the fake libcamera binding simulates: the cameras, their sensors and their pictures.

Not part of libcamera's API: tests use it to describe cameras and to read frames back.
Cameras come from the JSON file named by ``$FAKE_LIBCAMERA_CONFIG``, read each time the
camera list is read (so a test can plug cameras in and out)::

    {"cameras": [{"id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a",
                  "model": "imx708",
                  "modes": [[1536, 864, 120.13], [2304, 1296, 56.03]],
                  "drop": [[12, 14], 27], "corrupt": [40], "stall_after": 100,
                  "busy": false, "realtime": true}]}

``modes`` are the sensor's (width, height, fastest fps); ``drop`` frame numbers the
sensor produces but never delivers (a range is [first, last]); ``corrupt`` frames
delivered with an error status, which picamera2 discards; ``stall_after`` K: frames
0..K-1 are delivered, then nothing; ``busy``: another process holds the camera;
``realtime`` false: a frame whenever a buffer is queued (benchmarks), timestamps still
1/fps apart. Without the variable there are no cameras, as on a machine without one.

A camera is held across processes with an flock in the config file's folder, so a
second process opening the same camera fails busy as with libcamera.

Every YUV420 picture carries its frame number in its top 16 rows: 16-pixel
black/white blocks, bit 0 leftmost (``read_frame_number`` reads it back). Below it,
the frame's capture time on the wall clock (its SensorTimestamp, as ``time.time()``
tells it): milliseconds since the epoch modulo 2**30, in as many more rows of blocks
as it takes (``read_frame_time`` reads it back).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

CONFIG_ENV = "FAKE_LIBCAMERA_CONFIG"
# The Raspberry Pi Camera Module 3's modes (rpicam-hello --list-cameras on a Pi 5).
IMX708_MODES = [(1536, 864, 120.13), (2304, 1296, 56.03), (4608, 2592, 14.35)]
RAW_FORMAT = "SRGGB10_CSI2P"
TIME_BITS = 30  # a capture time's milliseconds modulo 2**30: 12 days


@dataclass
class CameraSpec:
    """One fake camera as the config file describes it."""

    id: str
    model: str = "imx708"
    modes: list[tuple[int, int, float]] = field(default_factory=lambda: list(IMX708_MODES))
    drop: set[int] = field(default_factory=set)
    corrupt: set[int] = field(default_factory=set)
    stall_after: int | None = None
    busy: bool = False
    realtime: bool = True
    lock_dir: Path | None = None


def _numbers(items: Iterable[Any]) -> set[int]:
    out: set[int] = set()
    for item in items:
        if isinstance(item, list):
            out.update(range(item[0], item[1] + 1))
        else:
            out.add(int(item))
    return out


def load_specs() -> list[CameraSpec]:
    """The cameras of ``$FAKE_LIBCAMERA_CONFIG``, in libcamera's enumeration order."""
    path = os.environ.get(CONFIG_ENV)
    if not path:
        return []
    data = json.loads(Path(path).read_text())
    specs = []
    for cam in data.get("cameras", []):
        specs.append(
            CameraSpec(
                id=cam["id"],
                model=cam.get("model", "imx708"),
                modes=[tuple(m) for m in cam.get("modes", IMX708_MODES)],
                drop=_numbers(cam.get("drop", [])),
                corrupt=_numbers(cam.get("corrupt", [])),
                stall_after=cam.get("stall_after"),
                busy=cam.get("busy", False),
                realtime=cam.get("realtime", True),
                lock_dir=Path(path).resolve().parent,
            )
        )
    return specs


def write_config(path: Path, *cameras: dict[str, Any]) -> Path:
    """Write a config file describing ``cameras`` (dicts as in the module doc)."""
    path.write_text(json.dumps({"cameras": list(cameras)}))
    return path


class Pictures:
    """A few seconds of moving picture with mild noise, cycled; frame numbers on top."""

    CYCLE = 30

    def __init__(self, width: int, height: int):
        self.width, self.height = width, height
        rng = np.random.default_rng(7)
        y, x = np.mgrid[0:height, 0:width]
        base = (x * 160 // max(1, width) + y * 60 // max(1, height) + 16).astype(np.int16)
        noise = rng.integers(-6, 7, size=(height, width), dtype=np.int16)
        self.luma = []
        box = max(8, height // 4)
        for i in range(self.CYCLE):
            luma = base + noise
            bx = (i * width // self.CYCLE) % max(1, width - box)
            luma[height // 3 : height // 3 + box, bx : bx + box] = 220
            self.luma.append(np.clip(luma, 0, 255).astype(np.uint8))
        self.bits = min(32, width // 16)

    def draw(
        self, n: int, y: np.ndarray, u: np.ndarray, v: np.ndarray, at_ms: int | None = None
    ) -> None:
        """Paint frame ``n``, captured at ``at_ms`` (milliseconds since the epoch), into
        planes that may be wider than the picture (row padding)."""
        w, h = self.width, self.height
        y[:h, :w] = self.luma[n % self.CYCLE]
        for bit in range(self.bits):
            y[0:16, bit * 16 : bit * 16 + 16] = 235 if (n >> bit) & 1 else 16
        if at_ms is not None:
            for bit, row, col in time_blocks(w):
                y[row : row + 16, col : col + 16] = 235 if (at_ms >> bit) & 1 else 16
        u[: h // 2, : w // 2] = 128
        v[: h // 2, : w // 2] = 128

    def frame(self, n: int) -> np.ndarray:
        """Frame ``n`` as packed YUV420 (no padding), e.g. to feed ffmpeg the same frames."""
        w, h = self.width, self.height
        out = np.empty(w * h * 3 // 2, dtype=np.uint8)
        q = w * h // 4
        y = out[: w * h].reshape(h, w)
        u = out[w * h : w * h + q].reshape(h // 2, w // 2)
        v = out[w * h + q :].reshape(h // 2, w // 2)
        self.draw(n, y, u, v)
        return out


def time_blocks(width: int) -> list[tuple[int, int, int]]:
    """(bit, top row, left column) of each block of a capture time, below the number."""
    per_row = min(32, width // 16)
    return [(b, 16 + 16 * (b // per_row), 16 * (b % per_row)) for b in range(TIME_BITS)]


def read_frame_time(luma: bytes, width: int, near: float) -> float:
    """The capture time (``time.time()``'s seconds) painted in a decoded frame's luma;
    ``near`` is any time within six days of it (the picture keeps 2**30 ms)."""
    ms = 0
    for bit, row, col in time_blocks(width):
        if luma[(row + 8) * width + col + 8] > 128:
            ms |= 1 << bit
    near_ms, half = round(near * 1000), 1 << (TIME_BITS - 1)
    return (near_ms + (ms - near_ms + half) % (2 * half) - half) / 1000


def read_frame_number(luma_top_rows: bytes, width: int) -> int:
    """The frame number in a decoded frame's top 16 rows of luma (see ``Pictures``)."""
    n = 0
    for bit in range(min(32, width // 16)):
        if luma_top_rows[8 * width + bit * 16 + 8] > 128:
            n |= 1 << bit
    return n


class Sensor(threading.Thread):
    """The camera's capture thread: completes queued requests at the sensor's pace.

    Like libcamera's pipeline handler it runs apart from the application's threads,
    fills each request's buffers, stamps its metadata and hands it to the camera
    manager, which signals its event fd. A frame that finds no queued request is
    lost, as on hardware; its number and timestamp are skipped all the same.
    """

    def __init__(self, camera: Any, controls: dict[Any, Any]):
        super().__init__(daemon=True, name=f"fake-libcamera {camera.id}")
        self.camera = camera
        self.spec: CameraSpec = camera._spec
        self.controls = dict(controls)
        self.stopping = threading.Event()
        self.finished = threading.Event()  # every frame it will ever deliver is out
        self.delivered = 0
        main = camera._config.at(0)
        self.main = main
        self.pictures = Pictures(main.size.width, main.size.height)
        self._maps: dict[int, Any] = {}

    def frame_duration_ns(self) -> int:
        """The frame time FrameDurationLimits asks for, bounded by the sensor mode."""
        from . import controls as ids

        fastest = round(1e9 / self.camera._mode[2])
        limits = self.controls.get(ids.FrameDurationLimits)
        wanted = limits[0] * 1000 if limits else round(1e9 / 30)
        return max(fastest, int(wanted))

    def run(self) -> None:
        from . import controls as ids

        # Streaming begins with the first queued request, which comes after start().
        if not self.camera._wait_queued(self.stopping):
            return
        ts = time.clock_gettime_ns(time.CLOCK_BOOTTIME)  # libcamera's sensor clock
        due = time.monotonic()
        n = 0
        try:
            while not self.stopping.is_set():
                duration = self.frame_duration_ns()
                if self.spec.realtime and self.stopping.wait(max(0.0, due - time.monotonic())):
                    break
                number, stamp = n, ts
                n += 1
                due += duration / 1e9
                ts += duration
                if self.spec.stall_after is not None and number >= self.spec.stall_after:
                    self.finished.set()
                    self.stopping.wait()  # the sensor has gone silent
                    break
                if number in self.spec.drop:
                    continue
                request = self.camera._next_request(None if self.spec.realtime else 0.5)
                while request is None and not self.spec.realtime and not self.stopping.is_set():
                    request = self.camera._next_request(0.5)  # free-running: wait for a buffer
                if request is None:
                    continue
                self.controls.update(request.controls)
                # Sensor timestamps wander by a few microseconds around the frame time.
                stamp += ((number * 7919) % 201 - 100) * duration // 40_000
                status = 1 if number in self.spec.corrupt else 0
                self._fill(request, number, stamp, status)
                request.metadata = {
                    ids.SensorTimestamp: stamp,
                    ids.FrameDuration: duration // 1000,
                    ids.ExposureTime: min(duration // 1000 - 100, 20_000),
                    ids.AnalogueGain: 2.0,
                    **{k: v for k, v in self.controls.items() if k is not ids.FrameDurationLimits},
                }
                self.camera._manager._complete(request)
                self.delivered += 1
        finally:
            for mm in self._maps.values():
                with contextlib.suppress(BufferError):  # a view may outlive the loop
                    mm.close()

    def _fill(self, request: Any, number: int, stamp: int, status: int) -> None:
        import mmap

        from . import FrameMetadata

        for stream, fb in request.buffers.items():
            cfg = stream.configuration
            meta = fb.metadata
            meta.status = FrameMetadata.Status(status)
            meta.sequence, meta.timestamp = number, stamp
            for plane, pm in zip(fb.planes, meta.planes, strict=True):
                pm.bytes_used = plane.length
            if str(cfg.pixel_format) != "YUV420":
                continue  # raw Bayer and other formats: content does not matter here
            fd = fb.planes[0].fd
            if fd not in self._maps:
                self._maps[fd] = mmap.mmap(fd, cfg.frame_size)
            buf = np.frombuffer(self._maps[fd], dtype=np.uint8)
            w, h, s = cfg.size.width, cfg.size.height, cfg.stride
            y = buf[: s * h].reshape(h, s)
            q = (s // 2) * (h // 2)
            u = buf[s * h : s * h + q].reshape(h // 2, s // 2)
            v = buf[s * h + q : s * h + 2 * q].reshape(h // 2, s // 2)
            if w == self.pictures.width:
                # The capture instant on the wall clock: the sensor's clock is BOOTTIME.
                ago = time.clock_gettime_ns(time.CLOCK_BOOTTIME) - stamp
                self.pictures.draw(number, y, u, v, (time.time_ns() - ago) // 1_000_000)
