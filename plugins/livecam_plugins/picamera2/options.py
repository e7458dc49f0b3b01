"""The picamera2 backend's options, and the libcamera controls and transform they make."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from livecam import options as o
from livecam.options import ConfigError, Option

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


#: ``cameras.<name>:`` of a picamera2 camera (docs/raspberry-pi.md).
OPTIONS = {
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


def controls(pc: SimpleNamespace, opts: Any) -> dict[str, Any]:
    """The libcamera controls the camera starts with: the frame rate, and the modes
    the options name (absent ones are left to the tuning file or picamera2)."""
    frame_us = round(1_000_000 / opts["fps"])
    found: dict[str, Any] = {"FrameDurationLimits": (frame_us, frame_us)}
    ctl = pc.libcamera.controls
    if opts["exposure_mode"]:
        mode = EXPOSURE_MODES[opts["exposure_mode"]]
        found["AeExposureMode"] = getattr(ctl.AeExposureModeEnum, mode)
    if opts["awb_mode"]:
        found["AwbMode"] = getattr(ctl.AwbModeEnum, AWB_MODES[opts["awb_mode"]])
    if opts["noise_reduction"]:
        mode = NOISE_REDUCTION[opts["noise_reduction"]]
        found["NoiseReductionMode"] = getattr(ctl.draft.NoiseReductionModeEnum, mode)
    return found


def transform(pc: SimpleNamespace, opts: Any) -> Any:
    """The libcamera Transform of the ``transform`` option: a 180 degree turn is both flips."""
    t = opts["transform"]
    flip = t["rotation"] == 180
    return pc.libcamera.Transform(hflip=int(t["hflip"] != flip), vflip=int(t["vflip"] != flip))
