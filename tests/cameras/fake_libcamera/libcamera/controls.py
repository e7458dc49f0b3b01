"""Control ids of the fake libcamera binding: each has the ``name`` picamera2 reads."""

from __future__ import annotations

import enum
from types import SimpleNamespace


class ControlId:
    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"ControlId({self.name})"


SensorTimestamp = ControlId("SensorTimestamp")
FrameDuration = ControlId("FrameDuration")
FrameDurationLimits = ControlId("FrameDurationLimits")
ExposureTime = ControlId("ExposureTime")
ExposureTimeMode = ControlId("ExposureTimeMode")
AnalogueGain = ControlId("AnalogueGain")
AnalogueGainMode = ControlId("AnalogueGainMode")
AeExposureMode = ControlId("AeExposureMode")
AwbMode = ControlId("AwbMode")
NoiseReductionMode = ControlId("NoiseReductionMode")


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


draft = SimpleNamespace(NoiseReductionModeEnum=NoiseReductionModeEnum)
