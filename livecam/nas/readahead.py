"""Asking the kernel to read an export's segment files before the export copies them.

On a NAS the span's segments are rarely in the page cache. Left to itself, the
kernel reads a mapped file as it is touched, a few megabytes at a time, and the
export then waits on each read in turn: reading a segment's boxes (one ``moof``
every second of video, spread over the file) and copying its media alternate with
the disk instead of overlapping it. ``POSIX_FADV_WILLNEED`` starts the reads and
returns; the kernel caps each call at its readahead size, so a file is advised in
chunks. A window of files ahead of the copy is advised, not the whole span at once:
a long span must not push its own first files out of the page cache before they
are copied. Advice only: an error here never fails an export.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

CHUNK = 512 << 10  # at most the kernel's smallest usual readahead cap per call
WINDOW = 256 << 20  # bytes advised ahead of the file being copied


def will_need(path: Path) -> int:
    """Start reading all of ``path`` into the page cache; its size (0 if it cannot be
    opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return 0
    try:
        size = os.fstat(fd).st_size
        for offset in range(0, size, CHUNK):
            os.posix_fadvise(fd, offset, CHUNK, os.POSIX_FADV_WILLNEED)
        return size
    except OSError:
        return 0
    finally:
        os.close(fd)


def read_ahead(paths: Sequence[Path], window: int = WINDOW) -> Iterator[Path]:
    """``paths`` in order; before each is handed out, it and the files after it up to
    ``window`` bytes are being read (``will_need``)."""
    sizes: list[int] = []
    ahead = 0  # bytes advised from the current file on
    for i, path in enumerate(paths):
        while len(sizes) < len(paths) and (len(sizes) <= i or ahead < window):
            sizes.append(will_need(paths[len(sizes)]))
            ahead += sizes[-1]
        yield path
        ahead -= sizes[i]
