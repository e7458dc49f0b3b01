"""The recordings tree as the nodes lay it out: ``{site}/{node}/.../{name}``.

Only the first two directory levels (site, node) and the file name matter: the
camera, UTC start and sequence come from the name (see ``livecam.storage.segment``), so a
site's own ``remote_path`` below ``{site}/{node}/`` works too. Dot-names (transport
temp files, the index's own directory) are never looked at.

A loss record is ``loss-<time>-<us>.json`` (in ``_losses/{date}/`` by default); one a
node published before issue 22 is ``livecam-losses-<time>-<us>.mp4`` (in
``livecam-losses/{date}/``): both are records, never segments.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from livecam.storage.segment import LOSSES, OLD_LOSSES, Segment

# A segment (or record) the shipper published beside other content under the same name.
_CONFLICT_RE = re.compile(r"^(?P<stem>.+)\.conflict-[0-9a-f]{12}(?P<ext>\.mp4|\.json)$")
# A directory ``{date}`` in ``remote_path`` made: the segment's UTC start date.
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@dataclass(frozen=True)
class Found:
    """A file below the root that is a segment or a loss record."""

    rel: str  # path relative to the root, with '/'
    site: str
    node: str
    camera: str
    seq: int
    start: float  # Unix seconds, from the name
    is_loss_record: bool


def parse(rel: str) -> Found | None:
    """What the file at ``rel`` (relative to the root) is; None if neither kind."""
    parts = PurePosixPath(rel).parts
    if len(parts) < 3 or any(p.startswith(".") for p in parts):
        return None
    name = parts[-1]
    conflict = _CONFLICT_RE.match(name)
    if conflict:
        name = conflict["stem"] + conflict["ext"]
    try:
        segment = Segment.from_path(Path(name))
    except ValueError:  # named like a segment, but no real time in it (20261301T...)
        return None
    if segment is None:
        return None
    return Found(
        rel=rel,
        site=parts[0],
        node=parts[1],
        camera=segment.camera,
        seq=segment.seq,
        start=segment.start.timestamp(),
        is_loss_record=segment.is_record,
    )


def day_of(rel: str) -> float | None:
    """The UTC midnight (Unix seconds) of a directory of segments named for its date
    (``.../2026-11-27``); None for any other directory, and for loss records' (a
    node may write a record long after the segments it concerns)."""
    parts = PurePosixPath(rel).parts
    if not parts or LOSSES in parts or OLD_LOSSES in parts or not _DATE_RE.match(parts[-1]):
        return None
    try:
        return datetime.strptime(parts[-1], "%Y-%m-%d").replace(tzinfo=UTC).timestamp()
    except ValueError:  # 2026-13-01
        return None


def listing(path: Path, rel: str) -> tuple[list[str], dict[str, os.stat_result]]:
    """Sub-directories and files (with their stat) of one directory; dot-names skipped."""
    subdirs: list[str] = []
    files: dict[str, os.stat_result] = {}
    try:
        entries = list(os.scandir(path))
    except FileNotFoundError:
        return subdirs, files
    for entry in entries:
        if entry.name.startswith("."):
            continue
        child = f"{rel}/{entry.name}" if rel else entry.name
        try:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(child)
            elif entry.is_file(follow_symlinks=False):
                files[child] = entry.stat(follow_symlinks=False)
        except FileNotFoundError:
            continue
    return sorted(subdirs), files
