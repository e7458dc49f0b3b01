"""The camera's snapshot: every few seconds a small JPEG of the newest main-stream frame."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from livecam.storage import snapshot

log = logging.getLogger("livecam.picamera2")


class Snapshots:
    """Every ``every`` seconds one frame of the main stream as a small JPEG (see
    livecam.storage.snapshot). The camera's thread only copies the frame it is asked for from
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
        """In the recorder's thread: write the frame the camera's thread copied, or ask
        it for one when the next snapshot is due."""
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
