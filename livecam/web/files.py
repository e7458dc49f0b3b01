"""Serving recordings: only regular files under the root, with HTTP Range.

``safe_path`` refuses what is not plainly a file below the root: an absolute
path, ``..`` (however it was encoded: the server decodes the URL before this sees
it), a hidden component (the index lives in ``<root>/.livecam``), a NUL, and
anything that resolves outside the root (a symlink out of it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK = 256 * 1024
# The most one answer carries: a 30 s segment at 5 Mbit/s (19 MB) in one request, and
# no request that streams gigabytes (a longer range is cut, see app.serve_file).
MAX_SPAN = 32 * 1024 * 1024


def safe_path(root: Path, rel: str) -> Path | None:
    """The file ``rel`` names below ``root`` (already resolved), or None."""
    if not rel or "\0" in rel or "\\" in rel or rel.startswith("/"):
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    try:
        real = (root / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not real.is_relative_to(root) or not real.is_file():
        return None
    return real


class BadRange(Exception):
    """The Range cannot be satisfied: answer 416."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte of a single ``bytes=`` range; None: send the whole file.

    A range starting at or beyond the end, or several ranges, is BadRange (416);
    a header that is not a byte range is ignored, as RFC 9110 allows."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or not spec.strip():
        return None
    if "," in spec:
        raise BadRange("one range at a time")
    first_s, dash, last_s = spec.strip().partition("-")
    if not dash:
        return None
    try:
        if not first_s:  # the last N bytes
            n = int(last_s)
            if n <= 0 or size == 0:
                raise BadRange("empty suffix")
            return max(0, size - n), size - 1
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first >= size:
        raise BadRange("starts beyond the end")
    if first < 0 or last < first:
        return None
    return first, min(last, size - 1)


def read_span(f: BinaryIO, first: int, last: int) -> Iterator[bytes]:
    """Bytes ``first``..``last`` (inclusive) of the open file ``f``, in chunks; closes
    ``f`` when done. Reading the file whose size was taken (``os.fstat``), never the
    path again, keeps a file replaced meanwhile (a new snapshot renamed into place)
    out of the answer."""
    with f:
        f.seek(first)
        left = last - first + 1
        while left > 0:
            block = f.read(min(CHUNK, left))
            if not block:
                return
            left -= len(block)
            yield block


def size_of(f: BinaryIO) -> int:
    return os.fstat(f.fileno()).st_size
