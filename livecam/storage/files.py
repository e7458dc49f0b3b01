"""The node's file primitives, each written once: the atomic replace, fsync of a
directory, small JSON files, a file's SHA-256, the mount a path lies on.

Standard library only: the ``nfs`` transport's helper process imports this under
``python -I -S`` (``livecam.transport.dirstore``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def replacing(
    path: Path, *, durable: bool = False, mode: int | None = None, temp: Path | None = None
) -> Iterator[IO[bytes]]:
    """Write ``path``'s new content into the file this yields; when the block ends
    without an exception it replaces ``path`` in one rename, so a reader, a crash or
    a power cut sees the old file or the new one whole, never a part.

    The temp file is ``temp`` (default: a dot-name beside ``path``, never ready
    and never shipped) and is removed after any failure. ``durable``: the file is
    fsynced before the rename and its directory after, so the new content survives
    a power cut once this returns. ``mode``: the file's permissions (default: the
    umask's), for a file another user reads."""
    tmp = temp or path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            if durable:
                f.flush()
                os.fsync(f.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a read-only disk refuses even this
            tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def atomic_write(
    path: Path, data: bytes | str, *, durable: bool = False, mode: int | None = None
) -> None:
    """Replace ``path`` with ``data`` (str as UTF-8) as ``replacing`` does."""
    with replacing(path, durable=durable, mode=mode) as f:
        f.write(data.encode() if isinstance(data, str) else data)


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink in the directory ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, data: dict[str, Any], *, durable: bool = False) -> None:
    """Replace ``path`` with ``data`` as JSON (``atomic_write``)."""
    atomic_write(path, json.dumps(data, indent=1, sort_keys=True, default=str), durable=durable)


def read_json(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``, or {} when it is missing, unreadable or not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_OCTAL = re.compile(r"\\([0-7]{3})")


def mount_of(path: str | os.PathLike[str]) -> tuple[str, str, str] | None:
    """(mount point, 'major:minor', fstype) of the mount holding ``path``, from
    /proc/self/mountinfo (which never blocks, unlike a stat in a hung mount).
    ``path`` should be absolute and resolved."""
    target = os.fspath(path)
    best = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            # The kernel writes space, tab, newline and backslash as \\ooo.
            point = _OCTAL.sub(lambda m: chr(int(m[1], 8)), fields[4])
            inside = target == point or target.startswith(point.rstrip("/") + "/")
            if inside and (best is None or len(point) >= len(best[0])):
                best = (point, fields[2], right.split()[0])
    return best
