"""Inputs that ended: a camera whose input ended is not recorded again from its start.

A backend raises ``InputEnded`` when its input has nothing more to give (a file
read to its end). Recording it again would repeat it, so the recorder notes the
end in the spool's state directory (on disk: it survives a restart and a
reboot) and starts no backend for that camera while the note holds. The note is
keyed by the camera's configuration (backend and options): change the camera's
input, or anything else of it, and it records again.

While the spool cannot be written the note goes to the buffer's state directory
(RAM): it then survives a restart of the recorder, not a reboot.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from livecam.config import CameraConfig
from livecam.storage.files import read_json
from livecam.storage.layout import NodeDisk


def config_key(camera: CameraConfig) -> str:
    """A digest of what the camera records: its backend and its options."""
    text = json.dumps([camera.backend, camera.options], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class EndedInputs:
    """The end note of one camera: on the spool, else in RAM (``NodeDisk.durably``)."""

    def __init__(self, camera: CameraConfig, disk: NodeDisk):
        self.key = config_key(camera)
        self.disk = disk
        self.paths = disk.ended_notes(camera.name)

    def ended(self) -> str | None:
        """Why the input ended, if it did with the camera configured as it is now."""
        for path in self.paths:
            note: dict[str, Any] = read_json(path)
            if note.get("key") == self.key:
                return str(note.get("message") or "input ended")
        return None

    def mark(self, message: str) -> Path:
        """Note that the input ended (durably where it can); returns where. Raises
        OSError when neither directory can be written."""
        note = {"key": self.key, "message": message, "time": time.time()}
        placed = self.disk.write_state(self.paths[0].name, json.dumps(note, sort_keys=True))
        if placed.value is None:
            raise placed.errors["buffer"]
        return placed.value
