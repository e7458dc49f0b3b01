"""A working stand-in for the libcamera Python binding, for machines without a Pi camera.

picamera2 drives cameras through libcamera's C++ binding, which ships only with
Raspberry Pi OS. This package offers the part of that binding picamera2 0.3.38 uses,
with the same names and behaviour, so that picamera2's own ``Picamera2`` class runs
unchanged: the camera manager and its event fd, acquiring and configuring a camera
(``generate_configuration``, ``validate``, ``configure``), libcamera's frame buffer
allocator (memfd buffers standing in for dmabufs), requests that are queued, completed
by a capture thread, returned through ``get_ready_requests`` and reused. What the
cameras are and how they misbehave is described in ``_fake`` (not part of libcamera).
"""

from __future__ import annotations

import collections
import contextlib
import enum
import errno
import fcntl
import hashlib
import os
import threading
from types import SimpleNamespace
from typing import Any

from . import _fake
from . import controls as controls
from . import properties as properties
from .controls import ControlInfo, ControlType

__all__ = ["ControlType", "controls", "properties"]


def _failure(what: str, code: int) -> RuntimeError:
    # The binding turns a failing libcamera call into std::system_error, which pybind11
    # raises as RuntimeError "<what>: <strerror>".
    return RuntimeError(f"{what}: {os.strerror(code)}")


class Orientation(enum.IntEnum):
    Rotate0 = 1
    Rotate0Mirror = 2
    Rotate180 = 3
    Rotate180Mirror = 4
    Rotate90Mirror = 5
    Rotate270 = 6
    Rotate90 = 7
    Rotate270Mirror = 8


class Transform:
    """A 2D plane transform; ``Transform(other)`` copies, as the binding's constructor."""

    def __init__(
        self, hflip: Any = 0, vflip: int = 0, transpose: int = 0, rotation: int = 0
    ) -> None:
        if isinstance(hflip, Transform):
            hflip, vflip, transpose = hflip.hflip, hflip.vflip, hflip.transpose
        if rotation % 360 == 180:
            hflip, vflip = not hflip, not vflip
        elif rotation % 360:
            raise ValueError(f"Invalid rotation {rotation}")
        self.hflip, self.vflip, self.transpose = bool(hflip), bool(vflip), bool(transpose)

    def __str__(self) -> str:
        names = [n for n in ("hflip", "vflip", "transpose") if getattr(self, n)]
        return f"<libcamera.Transform '{'/'.join(names) or 'identity'}'>"


class ColorSpace:
    """A colour space; picamera2 compares them field by field (it patches ``__eq__``)."""

    class Primaries(enum.IntEnum):
        Raw = 0
        Smpte170m = 1
        Rec709 = 2
        Rec2020 = 3

    class TransferFunction(enum.IntEnum):
        Linear = 0
        Srgb = 1
        Rec709 = 2

    class YcbcrEncoding(enum.IntEnum):
        Null = 0
        Rec601 = 1
        Rec709 = 2
        Rec2020 = 3

    class Range(enum.IntEnum):
        Full = 0
        Limited = 1

    def __init__(self, primaries: Any, transfer: Any = None, ycbcr: Any = None, rng: Any = None):
        if isinstance(primaries, ColorSpace):
            other = primaries
            primaries, transfer = other.primaries, other.transferFunction
            ycbcr, rng = other.ycbcrEncoding, other.range
        self.primaries, self.transferFunction = primaries, transfer
        self.ycbcrEncoding, self.range = ycbcr, rng

    def __str__(self) -> str:
        for name in ("Raw", "Sycc", "Smpte170m", "Rec709"):
            ref = getattr(ColorSpace, name)()
            if vars(ref) == vars(self):
                return name
        return "/".join(str(v.name) for v in vars(self).values())

    @classmethod
    def Raw(cls) -> ColorSpace:
        c = cls
        return c(c.Primaries.Raw, c.TransferFunction.Linear, c.YcbcrEncoding.Null, c.Range.Full)

    @classmethod
    def Sycc(cls) -> ColorSpace:
        c = cls
        return c(c.Primaries.Rec709, c.TransferFunction.Srgb, c.YcbcrEncoding.Rec601, c.Range.Full)

    @classmethod
    def Smpte170m(cls) -> ColorSpace:
        c = cls
        p, t, e = c.Primaries.Smpte170m, c.TransferFunction.Rec709, c.YcbcrEncoding.Rec601
        return c(p, t, e, c.Range.Limited)

    @classmethod
    def Rec709(cls) -> ColorSpace:
        c = cls
        return c(
            c.Primaries.Rec709, c.TransferFunction.Rec709, c.YcbcrEncoding.Rec709, c.Range.Limited
        )


class Size:
    def __init__(self, width: int = 0, height: int = 0):
        self.width, self.height = int(width), int(height)

    def __repr__(self) -> str:
        return f"libcamera.Size({self.width}, {self.height})"


class Rectangle:
    def __init__(self, x: int = 0, y: int = 0, width: int = 0, height: int = 0):
        self.x, self.y, self.width, self.height = x, y, width, height


class PixelFormat:
    """A fourcc by name; ``str()`` gives the name picamera2 compares with."""

    def __init__(self, name: str | PixelFormat):
        self._name = str(name)

    def __str__(self) -> str:
        return self._name

    def __repr__(self) -> str:
        return f"<libcamera.PixelFormat '{self._name}'>"

    def __eq__(self, other: object) -> bool:
        return str(other) == self._name

    def __hash__(self) -> int:
        return hash(self._name)


class StreamRole(enum.IntEnum):
    Raw = 0
    StillCapture = 1
    VideoRecording = 2
    Viewfinder = 3


class SensorConfiguration:
    def __init__(self) -> None:
        self.bit_depth = 0
        self.output_size = Size()


class StreamFormats:
    def __init__(self, formats: dict[str, list[Size]]):
        self._formats = formats

    @property
    def pixel_formats(self) -> list[PixelFormat]:
        return [PixelFormat(f) for f in self._formats]

    def sizes(self, pixel_format: Any) -> list[Size]:
        return list(self._formats.get(str(pixel_format), []))


class Stream:
    """A camera's stream; exists once the camera is configured."""

    def __init__(self, configuration: StreamConfiguration):
        self.configuration = configuration


# Bytes per pixel of the first plane, and the whole frame's size relative to it.
_PROCESSED = {
    "YUV420": (1, 1.5),
    "YVU420": (1, 1.5),
    "NV12": (1, 1.5),
    "NV21": (1, 1.5),
    "XBGR8888": (4, 1),
    "XRGB8888": (4, 1),
    "RGB888": (3, 1),
    "BGR888": (3, 1),
}


class StreamConfiguration:
    def __init__(self, role: StreamRole, spec: _fake.CameraSpec):
        self.role = role
        if role == StreamRole.Raw:
            w, h, _ = spec.modes[0]
            fmt = _fake.RAW_FORMAT
            self.formats = StreamFormats({fmt: [Size(m[0], m[1]) for m in spec.modes]})
        else:
            w, h, fmt = 1920, 1080, "YUV420" if role == StreamRole.VideoRecording else "XBGR8888"
            big = max(spec.modes, key=lambda m: m[0] * m[1])
            self.formats = StreamFormats({f: [Size(big[0], big[1])] for f in _PROCESSED})
        self.size = Size(w, h)
        self.pixel_format = PixelFormat(fmt)
        self.stride = 0
        self.frame_size = 0
        self.buffer_count = 4
        self.color_space = ColorSpace.Raw() if role == StreamRole.Raw else ColorSpace.Sycc()
        self.stream: Stream | None = None

    def __str__(self) -> str:
        return f"{self.size.width}x{self.size.height}-{self.pixel_format}"


class CameraConfiguration:
    class Status(enum.IntEnum):
        Valid = 0
        Adjusted = 1
        Invalid = 2

    def __init__(self, camera: Camera, roles: list[StreamRole]):
        self._camera = camera
        self._configs = [StreamConfiguration(r, camera._spec) for r in roles]
        self.orientation = Orientation.Rotate0
        self.sensor_config: SensorConfiguration | None = None

    def at(self, index: int) -> StreamConfiguration:
        return self._configs[index]

    def __iter__(self):
        return iter(self._configs)

    def __len__(self) -> int:
        return len(self._configs)

    @property
    def size(self) -> int:
        return len(self._configs)

    def validate(self) -> CameraConfiguration.Status:
        """Adjust what the camera cannot do, as libcamera's Raspberry Pi pipeline does."""
        status = self.Status.Valid
        modes = self._camera._spec.modes
        if self.orientation in (
            Orientation.Rotate90, Orientation.Rotate270,
            Orientation.Rotate90Mirror, Orientation.Rotate270Mirror,
        ):  # fmt: skip
            self.orientation = Orientation.Rotate0  # the ISP can flip, not transpose
            status = self.Status.Adjusted
        if self.sensor_config is not None:
            out = self.sensor_config.output_size
            if (out.width, out.height) not in [(m[0], m[1]) for m in modes]:
                return self.Status.Invalid
        big = max(modes, key=lambda m: m[0] * m[1])
        for cfg in self._configs:
            fmt = str(cfg.pixel_format)
            if cfg.role == StreamRole.Raw or fmt.startswith(("SRGGB", "SBGGR", "SGRBG", "SGBRG")):
                if fmt != _fake.RAW_FORMAT:
                    cfg.pixel_format, status = PixelFormat(_fake.RAW_FORMAT), self.Status.Adjusted
                mode = self._camera._choose_mode(self)
                if (cfg.size.width, cfg.size.height) != mode[:2]:
                    cfg.size, status = Size(*mode[:2]), self.Status.Adjusted
                # 10-bit CSI-2 packing: 4 pixels in 5 bytes, rows padded to 32 bytes.
                cfg.stride = _align(cfg.size.width * 5 // 4, 32)
                cfg.frame_size = cfg.stride * cfg.size.height
                continue
            if fmt not in _PROCESSED:
                fmt, status = "YUV420", self.Status.Adjusted
                cfg.pixel_format = PixelFormat(fmt)
            w = min(max(64, cfg.size.width - cfg.size.width % 2), big[0])
            h = min(max(64, cfg.size.height - cfg.size.height % 2), big[1])
            if (w, h) != (cfg.size.width, cfg.size.height):
                cfg.size, status = Size(w, h), self.Status.Adjusted
            bpp, frame = _PROCESSED[fmt]
            # The Pi's ISPs write rows padded to 64 bytes; 0 asks for the smallest stride.
            cfg.stride = max(cfg.stride, _align(w * bpp, 64))
            cfg.frame_size = int(cfg.stride * h * frame)
            if cfg.buffer_count < 1:
                cfg.buffer_count, status = 1, self.Status.Adjusted
        return status


def _align(value: int, to: int) -> int:
    return (value + to - 1) // to * to


class FrameMetadata:
    class Status(enum.IntEnum):
        Success = 0
        Error = 1
        Cancelled = 2

    def __init__(self, planes: int):
        self.status = FrameMetadata.Status.Success
        self.sequence = 0
        self.timestamp = 0
        self.planes = [SimpleNamespace(bytes_used=0) for _ in range(planes)]


class FrameBuffer:
    class Plane:
        def __init__(self) -> None:
            self.fd, self.offset, self.length = -1, 0, 0

    def __init__(self, planes: list[FrameBuffer.Plane], cookie: int = 0):
        self.planes = list(planes)
        self.cookie = cookie
        self.metadata = FrameMetadata(len(self.planes))


class FrameBufferAllocator:
    """libcamera's own buffer allocator; memfd memory stands in for the ISP's dmabufs."""

    def __init__(self, camera: Camera):
        self._camera = camera
        self._buffers: dict[Stream, list[FrameBuffer]] = {}
        self._fds: dict[Stream, list[int]] = {}

    def allocate(self, stream: Stream) -> int:
        if self._camera._config is None or stream not in self._camera._streams:
            return -errno.EINVAL
        if stream in self._buffers:
            return -errno.EBUSY
        cfg = stream.configuration
        buffers, fds = [], []
        for i in range(cfg.buffer_count):
            fd = os.memfd_create(f"libcamera-fake-{cfg}-{i}", os.MFD_CLOEXEC)
            os.ftruncate(fd, cfg.frame_size)
            fds.append(fd)
            buffers.append(FrameBuffer(_planes(fd, cfg)))
        self._buffers[stream], self._fds[stream] = buffers, fds
        return len(buffers)

    def buffers(self, stream: Stream) -> list[FrameBuffer]:
        return self._buffers.get(stream, [])

    def free(self, stream: Stream) -> int:
        for fd in self._fds.pop(stream, []):
            os.close(fd)
        self._buffers.pop(stream, None)
        return 0

    def __del__(self) -> None:
        for stream in list(self._fds):
            self.free(stream)


def _planes(fd: int, cfg: StreamConfiguration) -> list[FrameBuffer.Plane]:
    """One fd with a plane per colour component, as V4L2's single-planar formats."""
    s, h = cfg.stride, cfg.size.height
    if str(cfg.pixel_format) in ("YUV420", "YVU420"):
        layout = [(0, s * h), (s * h, s * h // 4), (s * h * 5 // 4, s * h // 4)]
    elif str(cfg.pixel_format) in ("NV12", "NV21"):
        layout = [(0, s * h), (s * h, s * h // 2)]
    else:
        layout = [(0, cfg.frame_size)]
    planes = []
    for offset, length in layout:
        p = FrameBuffer.Plane()
        p.fd, p.offset, p.length = fd, offset, length
        planes.append(p)
    return planes


class Request:
    class Status(enum.IntEnum):
        Pending = 0
        Complete = 1
        Cancelled = 2

    class ReuseFlag(enum.IntEnum):
        Default = 0
        ReuseBuffers = 1

    def __init__(self, camera: Camera, cookie: int):
        self._camera = camera
        self.cookie = cookie
        self.status = Request.Status.Pending
        self.sequence = 0
        self.buffers: dict[Stream, FrameBuffer] = {}
        self.metadata: dict[Any, Any] = {}
        self.controls: dict[Any, Any] = {}

    def add_buffer(self, stream: Stream, buffer: FrameBuffer) -> None:
        if stream not in self._camera._streams:
            raise _failure("Failed to add buffer", errno.EINVAL)
        self.buffers[stream] = buffer

    def set_control(self, control: Any, value: Any) -> None:
        if control not in self._camera.controls:
            raise RuntimeError(f"Control {control.name} is not supported by the camera")
        self.controls[control] = value

    def reuse(self, flags: int = 0) -> None:
        self.status = Request.Status.Pending
        self.metadata = {}
        self.controls = {}

    def __str__(self) -> str:
        return f"Request(seq {self.sequence}, {self.status.name}, cookie {self.cookie})"


class Camera:
    """One camera: acquired by one user at a time, configured, then started and stopped."""

    def __init__(self, manager: CameraManager, spec: _fake.CameraSpec):
        self._manager = manager
        self._spec = spec
        self.id = spec.id
        self._acquired = False
        self._lock_fd: int | None = None
        self._config: CameraConfiguration | None = None
        self._streams: list[Stream] = []
        self._mode = spec.modes[0]
        self._queue: collections.deque[Request] = collections.deque()
        self._queued = threading.Condition()
        self.sensor: _fake.Sensor | None = None  # the running capture thread (tests read it)
        self.started_with: dict[Any, Any] = {}  # the controls given to start() (tests read it)
        self.configured: CameraConfiguration | None = None  # the last configure() (ditto)

    @property
    def properties(self) -> dict[Any, Any]:
        big = max(self._spec.modes, key=lambda m: m[0] * m[1])
        return {
            properties.Model: self._spec.model,
            properties.Location: 2,
            properties.Rotation: 0,
            properties.PixelArraySize: Size(big[0], big[1]),
            properties.ColorFilterArrangement: properties.ColorFilterArrangementEnum.RGGB,
        }

    @property
    def controls(self) -> dict[Any, ControlInfo]:
        c = controls
        fastest = round(1e6 / self._mode[2])
        big = max(self._spec.modes, key=lambda m: m[0] * m[1])
        return {
            c.AeEnable: ControlInfo(False, True, True),
            c.AeExposureMode: ControlInfo(0, 3, 0),
            c.AwbEnable: ControlInfo(False, True, True),
            c.AwbMode: ControlInfo(0, 7, 0),
            c.ExposureTime: ControlInfo(26, 66_666_666, 20_000),
            c.ExposureTimeMode: ControlInfo(0, 1, 0),
            c.AnalogueGain: ControlInfo(1.0, 16.0, 1.0),
            c.AnalogueGainMode: ControlInfo(0, 1, 0),
            c.Brightness: ControlInfo(-1.0, 1.0, 0.0),
            c.Contrast: ControlInfo(0.0, 32.0, 1.0),
            c.Saturation: ControlInfo(0.0, 32.0, 1.0),
            c.Sharpness: ControlInfo(0.0, 16.0, 1.0),
            c.ScalerCrop: ControlInfo(
                Rectangle(0, 0, 64, 64), Rectangle(0, 0, big[0], big[1]), Rectangle(0, 0, *big[:2])
            ),
            c.FrameDurationLimits: ControlInfo(fastest, 1_000_000_000, fastest),
            c.NoiseReductionMode: ControlInfo(0, 4, 1),
        }

    def acquire(self) -> None:
        if self._acquired or self._spec.busy:
            raise _failure("Failed to acquire camera", errno.EBUSY)
        if self._spec.lock_dir is not None:
            name = hashlib.sha1(self.id.encode()).hexdigest()[:16]
            fd = os.open(self._spec.lock_dir / f".camera-{name}.lock", os.O_CREAT | os.O_RDWR)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise _failure("Failed to acquire camera", errno.EBUSY) from None
            self._lock_fd = fd
        self._acquired = True

    def release(self) -> None:
        if self.sensor is not None:
            raise _failure("Failed to release camera", errno.EBUSY)
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
        self._acquired = False
        self._config, self._streams = None, []

    def generate_configuration(self, roles: list[StreamRole]) -> CameraConfiguration:
        return CameraConfiguration(self, list(roles))

    def _choose_mode(self, config: CameraConfiguration) -> tuple[int, int, float]:
        if config.sensor_config is not None:
            out = config.sensor_config.output_size
            for mode in self._spec.modes:
                if mode[:2] == (out.width, out.height):
                    return mode
        main = config.at(0).size
        fits = [m for m in self._spec.modes if m[0] >= main.width and m[1] >= main.height]
        return min(fits or self._spec.modes, key=lambda m: m[0] * m[1])

    def configure(self, config: CameraConfiguration) -> None:
        if not self._acquired or self.sensor is not None:
            raise _failure("Failed to configure camera", errno.EACCES)
        if config.validate() == CameraConfiguration.Status.Invalid:
            raise _failure("Failed to configure camera", errno.EINVAL)
        self._mode = self._choose_mode(config)
        self._streams = []
        for cfg in config:
            cfg.stream = Stream(cfg)
            self._streams.append(cfg.stream)
        self._config = self.configured = config

    def create_request(self, cookie: int = 0) -> Request | None:
        return Request(self, cookie) if self._config is not None else None

    def start(self, controls: dict[Any, Any] | None = None) -> None:
        if self._config is None or self.sensor is not None:
            raise _failure("Failed to start camera", errno.EACCES)
        controls = dict(controls or {})
        unknown = [c.name for c in controls if c not in self.controls]
        if unknown:
            raise _failure(f"Failed to start camera (unsupported controls {unknown})", errno.EINVAL)
        self.started_with = controls
        self.sensor = _fake.Sensor(self, controls)
        self.sensor.start()

    def stop(self) -> None:
        sensor, self.sensor = self.sensor, None
        if sensor is None:
            return
        sensor.stopping.set()
        with self._queued:
            self._queued.notify_all()
        sensor.join()
        # Stopping cancels every request still queued: they come back through the manager.
        with self._queued:
            pending, self._queue = list(self._queue), collections.deque()
        for request in pending:
            for fb in request.buffers.values():
                fb.metadata.status = FrameMetadata.Status.Cancelled
            self._manager._complete(request, Request.Status.Cancelled)

    def queue_request(self, request: Request) -> None:
        if self.sensor is None:
            raise _failure("Failed to queue request", errno.EACCES)
        with self._queued:
            self._queue.append(request)
            self._queued.notify_all()

    def _wait_queued(self, stopping: threading.Event) -> bool:
        """Wait for a first request to be queued; False if stopped first."""
        with self._queued:
            while not self._queue and not stopping.is_set():
                self._queued.wait(0.1)
            return not stopping.is_set()

    def _next_request(self, timeout: float | None) -> Request | None:
        """The oldest queued request; ``timeout`` None: only one already queued."""
        with self._queued:
            if not self._queue and timeout:
                self._queued.wait(timeout)
            return self._queue.popleft() if self._queue else None


class CameraManager:
    """The process's camera manager; completed requests wait here for its event fd reader."""

    _instance: CameraManager | None = None
    _instance_lock = threading.Lock()
    version = "v0.5.0+fake"

    def __init__(self) -> None:
        self.event_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._ready: list[Request] = []
        self._lock = threading.Lock()
        self._cameras: dict[tuple[Any, str], Camera] = {}

    @classmethod
    def singleton(cls) -> CameraManager:
        with cls._instance_lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    @property
    def cameras(self) -> list[Camera]:
        """The cameras in the config file now; the same Camera object for the same Id.

        A camera described by another config file (another test) is another camera.
        """
        out = []
        for spec in _fake.load_specs():
            key = (spec.lock_dir, spec.id)
            cam = self._cameras.get(key)
            if cam is None:
                cam = self._cameras[key] = Camera(self, spec)
            elif not cam._acquired:
                cam._spec = spec
            out.append(cam)
        return out

    def get(self, camera_id: str) -> Camera | None:
        return next((c for c in self.cameras if c.id == camera_id), None)

    def get_ready_requests(self) -> list[Request]:
        """The requests completed since the last call; clears the event fd, as libcamera."""
        with self._lock:
            with contextlib.suppress(BlockingIOError):  # nothing new since the last call
                os.eventfd_read(self.event_fd)
            ready, self._ready = self._ready, []
        return ready

    def _complete(self, request: Request, status: Request.Status = Request.Status.Complete) -> None:
        request.status = status
        with self._lock:
            self._ready.append(request)
            os.eventfd_write(self.event_fd, 1)


# picamera2 checks configurations with isinstance(x, libcamera._libcamera.<Class>).
_libcamera = SimpleNamespace(
    **{
        c.__name__: c
        for c in (Transform, ColorSpace, Size, Rectangle, Camera, CameraConfiguration, FrameBuffer)
    }
)
