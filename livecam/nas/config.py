"""The NAS config file and the command-line values every NAS command shares.

``/etc/livecam/nas.yaml`` (or ``$LIVECAM_NAS_CONFIG``, or ``--config``)::

    root: /srv/livecam          # the recordings root (required unless --root is given)
    db: /srv/livecam/.livecam/index.sqlite   # default: <root>/.livecam/index.sqlite
    grace: 15m                  # a hole this close to a camera's newest arrival is
                                # "not yet shipped" rather than unexplained
    sha256: false               # digest every segment while indexing (reads every byte)
    probe_workers: 2            # ffprobe processes at once while indexing
    cameras: [lab/node01/cam0]  # SITE/NODE/CAMERA the inventory deploys: the audit
                                # holds each to account even before it sent anything

``--root`` alone is enough: no config file is then needed. A bad file gives one
line naming the key (``ConfigError``); the command exits 2.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from livecam import options as o
from livecam.options import ConfigError, Option

DEFAULT_PATH = Path("/etc/livecam/nas.yaml")
ENV = "LIVECAM_NAS_CONFIG"
INDEX_DIR = ".livecam"  # the only directory NAS commands create below the root

_PART = re.compile(r"[^/\s.][^/\s]*")  # a site, node or camera: no slash, space or leading dot


def camera_list(value: object, key: str) -> list[tuple[str, str, str]]:
    """``cameras``: a list of ``SITE/NODE/CAMERA`` strings; ConfigError naming the key
    and the first bad entry."""
    out = []
    for i, entry in enumerate(o.string_list(value, key)):
        parts = tuple(entry.split("/"))
        if len(parts) != 3 or not all(_PART.fullmatch(p) for p in parts):
            raise ConfigError(
                f"{key}[{i}]: {entry!r} is not SITE/NODE/CAMERA (e.g. lab/node01/cam0)"
            )
        out.append((parts[0], parts[1], parts[2]))
    return sorted(set(out))


SCHEMA = {
    "root": Option(o.path, None, "the recordings root, e.g. /srv/livecam"),
    "db": Option(o.path, None, "the SQLite index; default <root>/.livecam/index.sqlite"),
    "grace": Option(o.duration, "15m", "recent holes count as not yet shipped"),
    "sha256": Option(o.boolean, False, "digest every segment while indexing"),
    "probe_workers": Option(o.integer(1, 64), 2, "ffprobe processes at once"),
    "cameras": Option(camera_list, [], "SITE/NODE/CAMERA that must exist"),
}


@dataclass(frozen=True)
class NasConfig:
    """Where the recordings are and how the NAS commands treat them."""

    root: Path
    db: Path
    grace: float = 900.0
    sha256: bool = False
    probe_workers: int = 2
    source: str = "--root"
    cameras: tuple[tuple[str, str, str], ...] = ()  # what the inventory deploys


def load(config_file: str | None, root: str | None, db: str | None = None) -> NasConfig:
    """The NAS config: ``--root``/``--db`` override the file's keys.

    The file is read when given, or when ``--root`` is not (then it must exist)."""
    raw: dict[str, Any] = {}
    source = "--root"
    path = Path(config_file or os.environ.get(ENV) or DEFAULT_PATH)
    if config_file or os.environ.get(ENV) or root is None:
        source = str(path)
        raw = _read(path, root)
    try:
        values = o.check_options("", raw, SCHEMA)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    if root is not None:
        values["root"] = Path(root)
    if db is not None:
        values["db"] = Path(db)
    if values["root"] is None:
        raise ConfigError(f"{path}: root: required key is missing (the recordings root)")
    root_path = Path(values["root"]).resolve()
    if not root_path.is_dir():
        raise ConfigError(f"root: {root_path} is not a directory")
    return NasConfig(
        root=root_path,
        db=Path(values["db"] or root_path / INDEX_DIR / "index.sqlite"),
        grace=values["grace"],
        sha256=values["sha256"],
        probe_workers=values["probe_workers"],
        source=source,
        cameras=tuple(values["cameras"]),
    )


def _read(path: Path, root: str | None) -> dict[str, Any]:
    """The file's keys. PyYAML is imported here, not at the top: with ``--root`` alone
    no file is read, and a command such as ``livecam export`` starts about 10 ms
    sooner without it (docs/benchmarks.md)."""
    import yaml

    try:
        loaded = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        hint = "" if root else "; give --root DIR or create it with 'root: /srv/livecam'"
        raise ConfigError(f"{path}: no such NAS config file{hint}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read: {str(exc).splitlines()[0]}") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: expected a mapping of keys (root, db, grace, ...)")
    return loaded or {}


def parse_time(value: str, key: str) -> datetime:
    """An ISO 8601 time with a zone (``2026-11-27T14:03:00+01:00``, ``...Z``), or a date
    (``2026-11-27``, taken as UTC midnight); ConfigError for anything else."""
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(
            f"{key}: {value!r} is not an ISO 8601 time, e.g. 2026-11-27T14:03:00+01:00"
        ) from None
    if when.tzinfo is None:
        if len(value) == 10:  # a bare date
            return when.replace(tzinfo=UTC)
        raise ConfigError(
            f"{key}: {value!r} has no zone; add one, e.g. {value}Z (UTC) or {value}+01:00"
        )
    return when.astimezone(UTC)


def parse_since(value: str, key: str, now: float) -> float:
    """``--since``: a date or time (see ``parse_time``), or an age such as ``7d`` or ``12h``
    (that long before ``now``); Unix seconds."""
    try:
        return parse_time(value, key).timestamp()
    except ConfigError:
        if not value.strip()[-1:].isalpha():
            raise
    try:
        return now - o.parse_duration(value, key)
    except ConfigError:
        raise ConfigError(
            f"{key}: {value!r} is neither a date or time (2026-11-27, ...T14:03Z) nor an age (7d)"
        ) from None
