"""Property ids of the fake libcamera binding (what ``Camera.properties`` is keyed by)."""

from __future__ import annotations

import enum
from types import SimpleNamespace

from .controls import ControlId, ControlType

Location = ControlId(1, "Location", ControlType.Integer32)
Rotation = ControlId(2, "Rotation", ControlType.Integer32)
Model = ControlId(3, "Model", ControlType.String)
PixelArraySize = ControlId(5, "PixelArraySize", ControlType.Size)
# picamera2 treats a camera that has this property as one of the Pi's own (raw stream,
# sensor modes), as every CSI camera on a Pi is.
ColorFilterArrangement = ControlId(10001, "ColorFilterArrangement", ControlType.Integer32)


class ColorFilterArrangementEnum(enum.IntEnum):
    RGGB = 0
    GRBG = 1
    GBRG = 2
    BGGR = 3
    RGB = 4
    MONO = 5


draft = SimpleNamespace(
    ColorFilterArrangement=ColorFilterArrangement,
    ColorFilterArrangementEnum=ColorFilterArrangementEnum,
)
