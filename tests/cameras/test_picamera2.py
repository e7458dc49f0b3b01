"""The picamera2 backend on its own: lost frames, a stalling camera, camera choice, options.

Everything runs in this process for real: picamera2's ``Picamera2`` class (camera
manager thread, configuration, request loop), its encoder and outputs, PyAV's x264.
Only the libcamera binding (and pykms, python-prctl) come from fake_libcamera, whose
cameras each test describes in a config file (see ``libcamera._fake``).
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import libcamera
import pytest
from fake_dma_heap import MemfdDmaAllocator
from libcamera import _fake
from livecam_plugins.picamera2 import segments
from livecam_plugins.picamera2.backend import Picamera2Camera

from livecam.camera import CameraError
from livecam.options import ConfigError, check_options
from livecam.pluginhost.manager import Plugins
from tests.cameras.conftest import (
    CAM_IMX219,
    CAM_IMX708,
    FAKE_LIBCAMERA,
    IMX219_MODES,
    frame_numbers,
)
from tests.conftest import REPO, ffprobe

pytestmark = [
    # picamera2 0.3.38's own: NullPreview's setDaemon(), and Picamera2.close() ending with
    # a new DmaAllocator, whose __init__ fails here (no DMA heap) and whose __del__ then
    # complains. The camera is closed and released before that.
    pytest.mark.filterwarnings("ignore:setDaemon:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning"),
]


class Sink:
    """A SegmentSink that keeps what it is given."""

    def __init__(self, open_dir: Path):
        open_dir.mkdir(exist_ok=True)
        self.open_dir = open_dir
        self.closed: list[Path] = []
        self.starts: list[float | None] = []  # each one's first frame's capture time
        self.dropped = 0

    def close(
        self, path: Path, *, duration: float | None = None, start: float | None = None
    ) -> None:
        self.closed.append(Path(path))
        self.starts.append(start)

    def dropped_frames(self, count: int) -> None:
        self.dropped += count


@pytest.fixture(autouse=True)
def dma_heap(monkeypatch):
    """Camera buffers from the fake DMA heap: this kernel has none (see fake_dma_heap)."""
    monkeypatch.setattr(Picamera2Camera, "allocator_factory", MemfdDmaAllocator)


@pytest.fixture
def cameras(tmp_path, monkeypatch):
    """Plug in fake cameras: the imx708 with ``faults`` (number 0), then an imx219."""

    def plug(imx708: dict[str, Any] | None = None, imx219: dict[str, Any] | None = None) -> None:
        config = _fake.write_config(
            tmp_path / "cameras.json",
            {"id": CAM_IMX708, **(imx708 or {})},
            {"id": CAM_IMX219, "model": "imx219", "modes": IMX219_MODES, **(imx219 or {})},
        )
        monkeypatch.setenv(_fake.CONFIG_ENV, str(config))

    return plug


def backend(camera: Any = 0, segment_seconds: float = 1, **opts: Any) -> Picamera2Camera:
    values = check_options(
        "cameras.cam0",
        {"camera": camera, "size": [160, 120], "fps": 10, "bitrate": "200k", **opts},
        Picamera2Camera.options,
    )
    return Picamera2Camera("cam0", values, segment_seconds=segment_seconds)


def run(cam: Picamera2Camera, sink: Sink, seconds: float) -> None:
    """Record for ``seconds``; a backend that hangs fails the test instead of hanging it."""
    stop = threading.Timer(seconds, cam.stop)
    guard = threading.Timer(seconds + 20, cam.kill)
    stop.start()
    guard.start()
    try:
        cam.record(sink)
    finally:
        stop.cancel()
        guard.cancel()


def fake_camera(camera_id: str) -> Any:
    return libcamera.CameraManager.singleton().get(camera_id)


def numbers(sink: Sink) -> list[int]:
    return [n for path in sink.closed for n in frame_numbers(path)]


def test_lost_frames_are_counted_and_nothing_else_is_lost(tmp_path, cameras):
    # Dropped: the sensor never delivers them. Corrupt: delivered with an error
    # status, which picamera2 discards before any encoder sees them.
    lost = {12, 13, 14, 27, 33}
    cameras({"drop": [[12, 14], 27], "corrupt": [33]})
    sink = Sink(tmp_path / "open")
    run(backend(), sink, 4.6)
    assert sink.dropped == len(lost)
    frames = numbers(sink)
    assert frames[-1] > 35
    assert frames == [n for n in range(frames[-1] + 1) if n not in lost]
    assert all(abs(ffprobe(p)["start"]) < 0.001 for p in sink.closed)


def test_a_stalling_camera_fails_after_closing_what_it_delivered(tmp_path, cameras):
    cameras({"stall_after": 25})
    sink = Sink(tmp_path / "open")
    with pytest.raises(CameraError, match=r"no frame for 1\.[0-9]s; the camera stalled"):
        run(backend(frame_timeout="1s"), sink, 20)
    assert numbers(sink) == list(range(25))
    assert set(sink.open_dir.iterdir()) == set(sink.closed)  # no half-written file left
    assert fake_camera(CAM_IMX708).sensor is None  # stopped and released all the same


def test_snapshots_from_the_main_stream_atomically_never_shipped(tmp_path, cameras):
    """Every snapshot_seconds a JPEG of the newest frame beside the camera's segments:
    whole whenever read, showing later frames as time goes, never a segment."""
    from PIL import Image

    cameras()
    (tmp_path / "cam0").mkdir()
    sink = Sink(tmp_path / "cam0" / ".open")
    target = tmp_path / "cam0" / ".snapshot.jpg"
    shown: list[int] = []  # the frame number in each distinct snapshot read
    torn: list[int] = []  # sizes of reads that were not one whole JPEG
    reads = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal reads
        last = b""
        while not done.wait(0.005):
            try:
                data = target.read_bytes()
            except FileNotFoundError:
                continue
            reads += 1
            # A reader never sees a half-written file: the snapshot is renamed into place.
            if data[:2] != b"\xff\xd8" or data[-2:] != b"\xff\xd9":
                torn.append(len(data))
            elif data != last:
                image = Image.open(io.BytesIO(data))
                assert image.size == (160, 120) and image.format == "JPEG"
                shown.append(_fake.read_frame_number(image.convert("L").tobytes(), 160))
                last = data

    reader = threading.Thread(target=watch)
    reader.start()
    try:
        cam = backend(snapshot_seconds="1s")
        run(cam, sink, 4.6)
    finally:
        done.set()
        reader.join()
    recorded = numbers(sink)
    print(f"{reads} reads; snapshots of frames {shown}; {len(recorded)} frames recorded")
    assert reads > 100 and not torn, torn
    assert len(shown) >= 3 and shown == sorted(shown), shown  # it changes, and moves on
    assert set(shown) <= set(recorded)  # frames the encoder got: the same stream
    # Only the snapshot is left beside the segments (no temporary file), and it is
    # none of the segments the sink was given.
    assert sorted(p.name for p in (tmp_path / "cam0").iterdir()) == [".open", ".snapshot.jpg"]
    assert all(p.parent == sink.open_dir and p.suffix == ".mp4" for p in sink.closed)
    assert recorded == list(range(recorded[-1] + 1))  # snapshots cost the video no frame

    # snapshot_seconds: 0 writes none.
    target.unlink()
    run(backend(snapshot_seconds="0"), Sink(tmp_path / "cam0" / ".open"), 2.5)
    assert not target.exists()


def test_plugin_loads_without_picamera2_and_says_so_when_used(tmp_path):
    # A fresh interpreter without fake_libcamera on its path: no libcamera at all.
    code = (
        "from livecam.pluginhost.manager import Plugins\n"
        "from livecam_plugins.picamera2.library import load\n"
        "assert 'picamera2' in Plugins().cameras.names()\n"
        "try:\n    load()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True, env=env
    ).stdout
    assert out.startswith("CameraError picamera2 not available"), out
    assert "apt install python3-picamera2" in out


@pytest.mark.parametrize(
    ("camera", "expected"),
    [(CAM_IMX219, CAM_IMX219), (1, CAM_IMX219), (0, CAM_IMX708), (CAM_IMX708, CAM_IMX708)],
)
def test_cameras_are_chosen_by_id_or_number(tmp_path, cameras, camera, expected):
    # Numbers are positions in picamera2's global_camera_info(), which sorts Ids in
    # reverse: the imx708 on i2c@88000 is 0 although libcamera lists it first too.
    cameras()
    sink = Sink(tmp_path / "open")
    run(backend(camera, segment_seconds=0.5), sink, 1.2)
    assert numbers(sink)[:5] == [0, 1, 2, 3, 4]
    used = [c for c in (CAM_IMX708, CAM_IMX219) if fake_camera(c).started_with]
    assert used == [expected]


@pytest.mark.parametrize(
    ("camera", "faults", "message"),
    [
        (5, {}, f"camera 5: no such camera (cameras found: 0: {CAM_IMX708} (imx708), 1: "),
        ("/base/nope", {}, "camera /base/nope: no such camera"),
        (CAM_IMX219, {"imx219": {"busy": True}}, f"camera {CAM_IMX219}: cannot open it: "),
        (0, {"imx708": {"busy": True}}, f"camera 0 ({CAM_IMX708}): cannot open it: "),
    ],
)
def test_absent_and_busy_cameras_fail_clearly(tmp_path, cameras, camera, faults, message):
    cameras(**faults)
    with pytest.raises(CameraError) as err:
        backend(camera).record(Sink(tmp_path / "open"))
    assert str(err.value).startswith(message)
    if "cannot open" in message:
        assert "Failed to acquire camera: Device or resource busy" in str(err.value)


def test_a_camera_held_by_another_process_is_busy(tmp_path, cameras):
    cameras()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from picamera2 import Picamera2\nfrom fake_dma_heap import "
            "MemfdDmaAllocator\nPicamera2(0, allocator=MemfdDmaAllocator())\n"
            "print('open', flush=True)\nimport sys\nsys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(FAKE_LIBCAMERA)},
    )
    try:
        assert holder.stdout.readline() == "open\n"
        with pytest.raises(CameraError, match=r"cannot open it: .*Device or resource busy"):
            backend(0).record(Sink(tmp_path / "open"))
    finally:
        holder.communicate("", timeout=30)


def test_no_cameras_at_all(tmp_path, monkeypatch):
    monkeypatch.delenv(_fake.CONFIG_ENV, raising=False)
    none = r"camera 0: no such camera \(cameras found: none; check the ribbon cable"
    with pytest.raises(CameraError, match=none):
        backend(0).record(Sink(tmp_path / "open"))


def test_options_reach_libcamera_as_controls_and_orientation(tmp_path, cameras):
    cameras()
    cam = backend(
        CAM_IMX219,
        segment_seconds=0.5,
        exposure_mode="short",
        awb_mode="daylight",
        noise_reduction="off",
        transform={"hflip": True, "rotation": 180},
    )
    sink = Sink(tmp_path / "open")
    run(cam, sink, 1.2)
    ctl = libcamera.controls
    camera = fake_camera(CAM_IMX219)
    assert {c.name: v for c, v in camera.started_with.items()} == {
        "FrameDurationLimits": (100_000, 100_000),
        "AeExposureMode": ctl.AeExposureModeEnum.Short,
        "AwbMode": ctl.AwbModeEnum.Daylight,
        "NoiseReductionMode": ctl.draft.NoiseReductionModeEnum.Off,  # not picamera2's Fast
    }
    # hflip undone by the 180 degree turn: a vertical flip only.
    assert camera.configured.orientation == libcamera.Orientation.Rotate180Mirror
    main = camera.configured.at(0)
    assert (str(main.pixel_format), main.size.width, main.size.height) == ("YUV420", 160, 120)
    # The frame rate came from FrameDurationLimits: the sensor would run at 30 fps without it.
    probe = ffprobe(sink.closed[0])
    assert probe["frames"] / probe["duration"] == pytest.approx(10, rel=0.1)


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"transform": {"rotation": 90}}, "cameras.cam0.transform.rotation: must be 0 or 180"),
        ({"camera": ""}, "cameras.cam0.camera: expected a camera Id or a number"),
        ({"camera": -1}, "cameras.cam0.camera: a camera number is 0 or more"),
        ({"awb_mode": "sunny"}, "cameras.cam0.awb_mode: must be one of"),
        ({"preset": "placebo"}, "cameras.cam0.preset: must be one of"),
    ],
)
def test_bad_options_name_the_key(opts, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        check_options("cameras.cam0", opts, Picamera2Camera.options)


def test_registered_as_a_builtin_plugin():
    assert Plugins().cameras.get("picamera2", "backend") is Picamera2Camera


class _Output:
    """The least an output needs for SplittableOutput.split_output."""

    def __init__(self) -> None:
        self.stopped = False

    def start(self) -> None:
        pass

    def stop(self) -> None:
        self.stopped = True

    def _add_stream(self, *args: Any, **kwargs: Any) -> None:
        pass


def test_a_split_waiting_for_a_keyframe_is_released_by_picamera2s_own_event():
    # The one private picamera2 detail the backend relies on, against the real
    # SplittableOutput: if picamera2 changes it, this fails (and recording refuses
    # to start, see below) instead of leaving a split thread blocked for ever.
    from picamera2.outputs import SplittableOutput

    old, new = _Output(), _Output()
    splitter = SplittableOutput(old)
    segments.check_split_api(splitter)
    returned = threading.Event()

    def split() -> None:
        splitter.split_output(new)  # waits for a keyframe that never comes
        returned.set()

    thread = threading.Thread(target=split, daemon=True)
    thread.start()
    assert not returned.wait(0.5), "split_output is waiting for a keyframe"
    segments.release_pending_split(splitter)
    assert returned.wait(5), "released: split_output returned"
    assert old.stopped, "and closed the old output, as after a real split"


def test_a_picamera2_without_the_split_event_fails_loudly():
    class Changed:
        pass

    with pytest.raises(CameraError, match=r"tested with picamera2 0\.3\.38"):
        segments.release_pending_split(Changed())
    # The version these tests run is the one the docs and the error name.
    assert importlib.metadata.version("picamera2") == segments.TESTED_PICAMERA2
