"""Loss records as livecam wrote them before issue 22 (commit 5452132, ``livecam/losses.py``).

A record was JSON (``json.dump(record, sort_keys=True, default=str)`` and a newline)
named as a segment of the pseudo-camera ``livecam-losses``, with a ``.mp4`` suffix:
``livecam-losses/livecam-losses-<UTC time>-<microseconds>.mp4`` in a tier, and
``{site}/{node}/livecam-losses/{date}/livecam-losses-...mp4`` on the NAS (the default
``remote_path``, ``{date}`` the record's UTC date). Nodes upgraded with such records
waiting, and NAS trees holding them, must keep working: these helpers make both,
byte for byte as that version did (checked against its code by hand, see the report
of issue 22), without importing anything of today's naming.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

OLD_CAMERA = "livecam-losses"
# Today's record name (livecam/storage/segment.py), to turn a new tree into an old one.
NEW_NAME = re.compile(r"^loss-(?P<start>\d{8}T\d{6}Z)-(?P<seq>\d{6,})\.json$")


def old_name(start: str, seq: int) -> str:
    """The old file name of a record written at ``start`` (``%Y%m%dT%H%M%SZ``), ``seq`` µs."""
    return f"{OLD_CAMERA}-{start}-{seq:06d}.mp4"


def write_old_record(tier: Path, record: dict[str, Any]) -> Path:
    """``record`` (its ``time`` in Unix seconds) into ``tier`` as the old node wrote it."""
    now = float(record["time"])
    start = f"{datetime.fromtimestamp(now, UTC):%Y%m%dT%H%M%SZ}"
    folder = tier / OLD_CAMERA
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / old_name(start, int(now * 1e6))
    with open(path, "w") as f:
        json.dump(record, f, sort_keys=True, default=str)
        f.write("\n")
    return path


def to_old_layout(root: Path) -> dict[Path, Path]:
    """Give every loss record below ``root`` (a NAS tree of today's layout,
    ``{site}/{node}/_losses/{date}/loss-...json``) the old folder and name, same bytes;
    {old path: new path it was}."""
    moved = {}
    for path in sorted(root.glob("*/*/_losses/*/loss-*.json")):
        match = NEW_NAME.match(path.name)
        assert match, path
        node_dir, date = path.parents[2], path.parent.name
        dest = node_dir / OLD_CAMERA / date / old_name(match["start"], int(match["seq"]))
        dest.parent.mkdir(parents=True, exist_ok=True)
        path.rename(dest)
        moved[dest] = path
    for empty in sorted(root.glob("*/*/_losses/*")) + sorted(root.glob("*/*/_losses")):
        empty.rmdir()
    return moved
