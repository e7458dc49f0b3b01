"""Reading the loss records the nodes publish (written by ``livecam.storage.losses``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livecam.storage.losses import FORMAT, KINDS


@dataclass(frozen=True)
class LossRecord:
    """One record: what a node lost (or did) and why, as it wrote it."""

    kind: str
    camera: str
    time: float
    sequences: tuple[int, ...]
    reason: str
    detail: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def get(self, key: str) -> Any:
        return self.detail.get(key)


class BadRecord(Exception):
    """A file named like a loss record that is not one this livecam can read."""


def parse(text: str, path: str = "") -> LossRecord:
    """A loss record from its JSON text; BadRecord naming what is wrong."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadRecord(f"{path}: not JSON: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise BadRecord(f"{path}: not a {FORMAT} record")
    kind = data.get("kind")
    if kind not in KINDS:
        raise BadRecord(f"{path}: unknown kind {kind!r}")
    try:
        return LossRecord(
            kind=str(kind),
            camera=str(data["camera"]),
            time=float(data["time"]),
            sequences=tuple(int(s) for s in data.get("sequences", [])),
            reason=str(data.get("reason", "")),
            detail=dict(data.get("detail") or {}),
            path=path,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise BadRecord(f"{path}: bad field: {exc}") from None


def read(path: Path, rel: str = "") -> LossRecord:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadRecord(f"{rel or path}: cannot read: {exc}") from None
    return parse(text, rel or str(path))
