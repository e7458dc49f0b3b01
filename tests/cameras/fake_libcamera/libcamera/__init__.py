"""A stand-in for the libcamera Python binding, for machines without a Raspberry Pi camera.

picamera2 imports ``libcamera`` (a C++ binding that ships only with Raspberry Pi OS)
at module level, so nothing of picamera2 imports without it. This package offers the
names picamera2 touches at import time, the control ids its encoders read
(``controls.SensorTimestamp``) and a ``CameraManager`` whose camera list comes from
``$FAKE_LIBCAMERA_CAMERAS`` (comma-separated ids) so camera selection can be tested.
It captures nothing: frames come from the livecam picamera2 plugin's synthetic camera.
"""

from __future__ import annotations

import enum
import os
from types import SimpleNamespace

from . import controls as controls
from . import properties

_libcamera = SimpleNamespace()  # picamera2 checks isinstance against libcamera._libcamera.X


class Transform:
    def __init__(self, hflip: int = 0, vflip: int = 0, transpose: int = 0, rotation: int = 0):
        if rotation == 180:
            hflip, vflip = not hflip, not vflip
        self.hflip, self.vflip, self.transpose = bool(hflip), bool(vflip), bool(transpose)

    def _key(self) -> tuple[bool, bool, bool]:
        return (self.hflip, self.vflip, self.transpose)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Transform) and self._key() == other._key()

    def __hash__(self) -> int:  # picamera2 keys tables by Transform
        return hash(self._key())

    def __str__(self) -> str:
        return f"<Transform hflip={int(self.hflip)} vflip={int(self.vflip)}>"


class ColorSpace:
    def __init__(self, name: str):
        self.primaries = self.transferFunction = self.ycbcrEncoding = self.range = name

    def __str__(self) -> str:
        return self.primaries

    @classmethod
    def Sycc(cls) -> ColorSpace:
        return cls("sYCC")

    @classmethod
    def Smpte170m(cls) -> ColorSpace:
        return cls("SMPTE170M")

    @classmethod
    def Rec709(cls) -> ColorSpace:
        return cls("Rec709")

    @classmethod
    def Raw(cls) -> ColorSpace:
        return cls("RAW")


class Size:
    def __init__(self, width: int = 0, height: int = 0):
        self.width, self.height = width, height


class Rectangle:
    def __init__(self, x: int = 0, y: int = 0, width: int = 0, height: int = 0):
        self.x, self.y, self.width, self.height = x, y, width, height


class PixelFormat(str):
    pass


class SensorConfiguration:
    pass


class Orientation(enum.IntEnum):
    Rotate0 = 1
    Rotate0Mirror = 2
    Rotate180 = 3
    Rotate180Mirror = 4
    Rotate90Mirror = 5
    Rotate270 = 6
    Rotate90 = 7
    Rotate270Mirror = 8


class ControlType(enum.IntEnum):
    Bool = 1
    Integer32 = 3
    Integer64 = 4
    Float = 5
    String = 6
    Rectangle = 7
    Size = 8


class StreamRole(enum.IntEnum):
    Raw = 0
    StillCapture = 1
    VideoRecording = 2
    Viewfinder = 3


class Request:
    class Status(enum.IntEnum):
        Pending = 0
        Complete = 1
        Cancelled = 2


class FrameMetadata:
    class Status(enum.IntEnum):
        Success = 0
        Error = 1
        Cancelled = 2


class FrameBuffer:
    class Plane:
        def __init__(self, fd: int = -1, offset: int = 0, length: int = 0):
            self.fd, self.offset, self.length = fd, offset, length


class FrameBufferAllocator:
    def __init__(self, camera: object):
        raise RuntimeError("fake libcamera allocates no buffers")


class CameraConfiguration:
    class Status(enum.IntEnum):
        Valid = 0
        Adjusted = 1
        Invalid = 2


class Camera:
    """A camera that can be listed, never opened: it has no sensor behind it."""

    def __init__(self, camera_id: str):
        self.id = camera_id
        self.properties = {properties.Model: "fake", properties.Location: 2, properties.Rotation: 0}
        self.controls: dict = {}

    def acquire(self) -> None:
        raise RuntimeError(f"fake libcamera: camera {self.id} has no sensor to acquire")


class CameraManager:
    _instance: CameraManager | None = None

    def __init__(self) -> None:
        self.event_fd = os.eventfd(0) if hasattr(os, "eventfd") else -1
        self.version = "fake"

    @classmethod
    def singleton(cls) -> CameraManager:
        if cls._instance is None:
            cls._instance = cls()
        return cls._instance

    @property
    def cameras(self) -> list[Camera]:
        """Read on every call, so a test can plug cameras in and out."""
        ids = os.environ.get("FAKE_LIBCAMERA_CAMERAS", "")
        return [Camera(i) for i in ids.split(",") if i]

    def get_ready_requests(self) -> list:
        return []


for _cls in (Transform, ColorSpace, Size, Rectangle, Camera, CameraConfiguration, FrameBuffer):
    setattr(_libcamera, _cls.__name__, _cls)
