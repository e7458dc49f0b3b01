"""picamera2 itself: imported only when a camera records, and quiet where it must be."""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from livecam.camera import CameraError
from livecam_plugins.picamera2.segments import can_force_keyframes, segment_file

log = logging.getLogger("livecam.picamera2")

INSTALL_HINT = (
    "on Raspberry Pi OS: sudo apt install python3-picamera2, and create livecam's venv "
    "with --system-site-packages"
)


def load() -> SimpleNamespace:
    """Import picamera2 (lazily: only Raspberry Pi OS has it) and build the file output;
    CameraError "picamera2 not available" with the install hint where it is missing."""
    try:
        import libcamera
        from picamera2 import Picamera2
        from picamera2.encoders import LibavH264Encoder
        from picamera2.outputs import PyavOutput, SplittableOutput
        from simplejpeg import encode_jpeg_yuv_planes
    except ImportError as exc:
        raise CameraError(f"picamera2 not available ({exc}); {INSTALL_HINT}") from None
    return SimpleNamespace(
        can_force_keyframes=can_force_keyframes(),
        libcamera=libcamera,
        Picamera2=Picamera2,
        LibavH264Encoder=LibavH264Encoder,
        SplittableOutput=SplittableOutput,
        SegmentFile=segment_file(PyavOutput),
        encode_jpeg=encode_jpeg_yuv_planes,
    )


def causes(exc: BaseException) -> str:
    """An exception and its causes on one line: picamera2 wraps libcamera's reason."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 4:
        parts.append(str(seen) or type(seen).__name__)
        seen = seen.__cause__ or seen.__context__
    return ": ".join(dict.fromkeys(parts))


def quietly(fn: Any, *args: Any) -> None:
    """Call ``fn`` while shutting down, where an error must not hide the one that matters."""
    try:
        fn(*args)
    except Exception as exc:
        log.debug("ignored during shutdown: %s: %s", type(exc).__name__, exc)
