"""Small JSON state files that ``livecam status`` reads, written atomically.

Runtime state lives in the RAM buffer's state directory, so a healthy node
writes nothing to its SD card; the few facts that must survive a reboot (the
eviction count, sequence reservations) live in the spool's.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


def write_json(path: Path, data: dict[str, Any], *, durable: bool = False) -> None:
    """Replace ``path`` atomically; with ``durable``, fsync it (for disk state)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True, default=str)
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path: Path) -> dict[str, Any]:
    """The state in ``path``, or {} when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie is dead


def now() -> float:
    return time.time()
