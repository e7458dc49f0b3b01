"""Control ids of the fake libcamera binding, with the ``name`` and ``type`` picamera2 reads."""

from __future__ import annotations

import enum
from types import SimpleNamespace
from typing import Any


class ControlType(enum.IntEnum):
    """As ``libcamera.ControlType``: picamera2 turns tuples into Rectangle/Size by it."""

    None_ = 0
    Bool = 1
    Byte = 2
    Integer32 = 3
    Integer64 = 4
    Float = 5
    String = 6
    Rectangle = 7
    Size = 8


class ControlId:
    """A control's identity; libcamera's binding hashes these by identity, as here."""

    def __init__(self, id: int, name: str, type: ControlType):
        self.id, self.name, self.type = id, name, type

    def __repr__(self) -> str:
        return f"libcamera.ControlId({self.id}, {self.name}, {self.type.name})"

    def __str__(self) -> str:
        return self.name


class ControlInfo:
    """The range a camera accepts for a control, as ``Camera.controls`` maps it."""

    def __init__(self, min: Any, max: Any, default: Any = None, values: list | None = None):
        self.min, self.max, self.default, self.values = min, max, default, values or []


_T = ControlType
AeEnable = ControlId(1, "AeEnable", _T.Bool)
AeExposureMode = ControlId(4, "AeExposureMode", _T.Integer32)
ExposureTime = ControlId(7, "ExposureTime", _T.Integer32)
AnalogueGain = ControlId(8, "AnalogueGain", _T.Float)
Brightness = ControlId(10, "Brightness", _T.Float)
Contrast = ControlId(11, "Contrast", _T.Float)
AwbEnable = ControlId(13, "AwbEnable", _T.Bool)
AwbMode = ControlId(14, "AwbMode", _T.Integer32)
Saturation = ControlId(17, "Saturation", _T.Float)
Sharpness = ControlId(19, "Sharpness", _T.Float)
ScalerCrop = ControlId(22, "ScalerCrop", _T.Rectangle)
FrameDuration = ControlId(24, "FrameDuration", _T.Integer64)
FrameDurationLimits = ControlId(25, "FrameDurationLimits", _T.Integer64)
SensorTimestamp = ControlId(27, "SensorTimestamp", _T.Integer64)
ExposureTimeMode = ControlId(40, "ExposureTimeMode", _T.Integer32)
AnalogueGainMode = ControlId(41, "AnalogueGainMode", _T.Integer32)
NoiseReductionMode = ControlId(10002, "NoiseReductionMode", _T.Integer32)


class AeExposureModeEnum(enum.IntEnum):
    Normal = 0
    Short = 1
    Long = 2
    Custom = 3


class AwbModeEnum(enum.IntEnum):
    Auto = 0
    Incandescent = 1
    Tungsten = 2
    Fluorescent = 3
    Indoor = 4
    Daylight = 5
    Cloudy = 6
    Custom = 7


class NoiseReductionModeEnum(enum.IntEnum):
    Off = 0
    Fast = 1
    HighQuality = 2
    Minimal = 3
    ZSL = 4


# libcamera keeps controls that are not yet standard under ``draft``.
draft = SimpleNamespace(
    NoiseReductionMode=NoiseReductionMode, NoiseReductionModeEnum=NoiseReductionModeEnum
)
