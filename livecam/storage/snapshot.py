"""A camera's snapshot: its newest frame as a small JPEG beside its segments in the RAM
buffer (``<buffer>/<camera>/.snapshot.jpg``).

The camera backend writes it every ``snapshot_seconds`` from frames it has anyway
(never a second video encoder); the node's web page serves it. It is replaced
atomically (a temporary name, then a rename), so a reader sees one whole JPEG or the
one before. The dot-names keep both out of the tier: never a segment, never shipped.
"""

from __future__ import annotations

import os
from pathlib import Path

from livecam.storage.files import atomic_write

NAME = ".snapshot.jpg"
MAX_WIDTH = 640  # pixels: enough to see where a camera points, small to send


def path_for(open_dir: str | os.PathLike[str]) -> Path:
    """The snapshot of the camera whose sink writes into ``open_dir`` (``<cam>/.open``)."""
    return Path(open_dir).parent / NAME


def write(target: Path, jpeg: bytes) -> None:
    """Replace ``target`` with ``jpeg`` atomically (RAM: no fsync)."""
    atomic_write(target, jpeg)
