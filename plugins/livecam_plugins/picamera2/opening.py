"""Which camera, opened and configured: an Id or a number becomes a ready ``Picamera2``."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from livecam.camera import CameraError
from livecam_plugins.picamera2 import options
from livecam_plugins.picamera2.library import causes, quietly


def open_camera(pc: SimpleNamespace, opts: Any, allocator_factory: Any) -> Any:
    """Open and configure the camera ``opts`` name: a ``Picamera2`` ready for
    ``start_encoder``. CameraError names the camera and why (absent, busy, refused
    the configuration); a camera that was opened is closed again on failure."""
    number, ident = find_camera(pc, opts["camera"])
    try:
        cam = pc.Picamera2(number, allocator=allocator_factory() if allocator_factory else None)
    except (RuntimeError, OSError) as exc:
        raise CameraError(
            f"camera {ident}: cannot open it: {causes(exc)} "
            "(is another process, such as rpicam-* or a second livecam, using it?)"
        ) from None
    try:
        config = cam.create_video_configuration(
            main={"size": tuple(opts["size"]), "format": "YUV420"},
            controls=options.controls(pc, opts),
            transform=options.transform(pc, opts),
        )
        cam.configure(config)
    except Exception as exc:
        quietly(cam.close)
        raise CameraError(f"camera {ident}: cannot configure it: {causes(exc)}") from None
    return cam


def find_camera(pc: SimpleNamespace, wanted: int | str) -> tuple[int, str]:
    """``wanted`` (an Id or a number) as picamera2's camera number, and as a name for
    messages; CameraError listing the cameras found when there is no such camera."""
    cameras = pc.Picamera2.global_camera_info()
    ids = [c["Id"] for c in cameras]
    listing = ", ".join(f"{i}: {c['Id']} ({c.get('Model', '?')})" for i, c in enumerate(cameras))
    listing = listing or "none; check the ribbon cable and `rpicam-hello --list-cameras`"
    if isinstance(wanted, int):
        if wanted >= len(cameras):
            raise CameraError(f"camera {wanted}: no such camera (cameras found: {listing})")
        return wanted, f"{wanted} ({ids[wanted]})"
    if wanted not in ids:
        raise CameraError(f"camera {wanted}: no such camera (cameras found: {listing})")
    # Picamera2(n) takes n as a position in global_camera_info(), not libcamera's order.
    return ids.index(wanted), wanted
