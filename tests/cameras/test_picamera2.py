"""The picamera2 backend on its own: lost frames, a stalling camera, camera choice, options.

picamera2's real encoder and outputs run in this process with PyAV's x264; only
the libcamera binding (and pykms, python-prctl) come from fake_libcamera.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest
from livecam_plugins import picamera2 as plugin

from livecam.camera import CameraError
from livecam.options import ConfigError, check_options
from livecam.plugins import Plugins
from tests.cameras.conftest import FAKE_LIBCAMERA, frame_numbers
from tests.conftest import REPO, ffprobe

sys.path.insert(0, str(FAKE_LIBCAMERA))


class Sink:
    """A SegmentSink that keeps what it is given."""

    def __init__(self, open_dir: Path):
        self.open_dir = open_dir
        self.closed: list[Path] = []
        self.dropped = 0

    def close(self, path: Path, *, duration: float | None = None) -> None:
        self.closed.append(Path(path))

    def dropped_frames(self, count: int) -> None:
        self.dropped += count


def backend(camera: Any = "synthetic", segment_seconds: float = 1, **opts: Any):
    values = check_options(
        "cameras.cam0",
        {"camera": camera, "size": [160, 120], "fps": 10, "bitrate": "200k", **opts},
        plugin.Picamera2Camera.options,
    )
    return plugin.Picamera2Camera("cam0", values, segment_seconds=segment_seconds)


class FaultyCamera(plugin.Picamera2Camera):
    """The backend with a synthetic camera that loses frames or goes silent."""

    faults: ClassVar[dict[str, Any]] = {}

    def open_camera(self, pc):
        return plugin.SyntheticCamera(pc, self.opts["size"], self.opts["fps"], **self.faults)


def faulty(faults: dict[str, Any], **opts: Any) -> FaultyCamera:
    b = backend(**opts)
    cam = FaultyCamera("cam0", b.opts, segment_seconds=1)
    cam.faults = faults
    return cam


def numbers(sink: Sink) -> list[int]:
    return [n for path in sink.closed for n in frame_numbers(path)]


def test_lost_frames_are_counted_and_nothing_else_is_lost(tmp_path):
    cam = faulty({"drop": {12, 13, 14, 27}})
    sink = Sink(tmp_path)
    threading.Timer(3.6, cam.stop).start()
    cam.record(sink)
    assert sink.dropped == 4
    frames = numbers(sink)
    expected = [n for n in range(frames[-1] + 1) if n not in {12, 13, 14, 27}]
    assert frames == expected
    assert all(abs(ffprobe(p)["start"]) < 0.001 for p in sink.closed)


def test_a_stalling_camera_fails_after_closing_what_it_delivered(tmp_path):
    cam = faulty({"stall_after": 25}, frame_timeout="1s")
    sink = Sink(tmp_path)
    timer = threading.Timer(20, cam.kill)  # a hung backend must not hang the test
    timer.start()
    try:
        with pytest.raises(CameraError, match="stalled"):
            cam.record(sink)
    finally:
        timer.cancel()
    assert numbers(sink) == list(range(25))
    assert set(tmp_path.iterdir()) == set(sink.closed)  # no half-written file left behind


def test_plugin_loads_without_picamera2_and_says_so_when_used(tmp_path):
    # A fresh interpreter without fake_libcamera on its path: no libcamera at all.
    code = (
        "from livecam.plugins import Plugins\n"
        "from livecam_plugins.picamera2 import Picamera2Camera, _picamera2\n"
        "assert 'picamera2' in Plugins().cameras.names()\n"
        "try:\n    _picamera2()\nexcept Exception as exc:\n    print(type(exc).__name__, exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    ).stdout
    assert out.startswith("CameraError picamera2 not available"), out
    assert "apt install python3-picamera2" in out


@pytest.mark.parametrize(
    ("camera", "message"),
    [
        (5, "camera 5: no such camera (cameras found: 0: /base/i2c@88000/imx708@1a"),
        ("/base/nope", "camera /base/nope: no such camera"),
        ("/base/i2c@80000/imx219@10", "camera /base/i2c@80000/imx219@10: cannot open it"),
        (0, "camera 0 (/base/i2c@88000/imx708@1a): cannot open it"),
    ],
)
def test_cameras_are_chosen_by_id_or_number_with_clear_errors(
    tmp_path, monkeypatch, camera, message
):
    monkeypatch.setenv(
        "FAKE_LIBCAMERA_CAMERAS", "/base/i2c@88000/imx708@1a,/base/i2c@80000/imx219@10"
    )
    with pytest.raises(CameraError) as err:
        backend(camera).record(Sink(tmp_path))
    assert str(err.value).startswith(message)


def test_options_map_to_picamera2_controls_and_transform():
    pc = plugin._picamera2()
    b = backend(
        0,
        exposure_mode="short",
        awb_mode="daylight",
        noise_reduction="off",
        transform={"hflip": True, "rotation": 180},
    )
    controls = b._controls(pc)
    assert controls["FrameDurationLimits"] == (100_000, 100_000)
    assert controls["AeExposureMode"] == pc.libcamera.controls.AeExposureModeEnum.Short
    assert controls["AwbMode"] == pc.libcamera.controls.AwbModeEnum.Daylight
    assert controls["NoiseReductionMode"] == pc.libcamera.controls.draft.NoiseReductionModeEnum.Off
    t = b._libcamera_transform(pc)
    assert (t.hflip, t.vflip) == (False, True)  # hflip undone by the 180 degree turn


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"transform": {"rotation": 90}}, "cameras.cam0.transform.rotation: must be 0 or 180"),
        ({"camera": ""}, "cameras.cam0.camera: expected a camera Id"),
        ({"awb_mode": "sunny"}, "cameras.cam0.awb_mode: must be one of"),
        ({"preset": "placebo"}, "cameras.cam0.preset: must be one of"),
    ],
)
def test_bad_options_name_the_key(opts, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        check_options("cameras.cam0", opts, plugin.Picamera2Camera.options)


def test_registered_as_a_builtin_plugin():
    assert Plugins().cameras.get("picamera2", "backend") is plugin.Picamera2Camera
