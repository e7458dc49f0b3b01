"""Property ids of the fake libcamera binding."""

from __future__ import annotations

import enum
from types import SimpleNamespace

from .controls import ControlId

Model = ControlId("Model")
Location = ControlId("Location")
Rotation = ControlId("Rotation")


class ColorFilterArrangementEnum(enum.IntEnum):
    RGGB = 0
    MONO = 5


draft = SimpleNamespace(ColorFilterArrangementEnum=ColorFilterArrangementEnum)
