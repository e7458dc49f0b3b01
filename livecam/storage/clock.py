"""The wall clock that names segments (and only names them), with its test hook.

Nothing orders by this clock: a camera's segments are ordered by their
sequence. ``LIVECAM_CLOCK_OFFSET`` shifts it for tests of clock steps: either a
number of seconds, or the path of a file holding one (read at every call, so a
test can step the clock of a running recorder). libfaketime is not an option:
it breaks Python 3.11's ``time.sleep``.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

ENV = "LIVECAM_CLOCK_OFFSET"


def offset() -> float:
    """Seconds the naming clock is shifted by (0 without the test hook)."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return 0.0
    try:
        return float(value)
    except ValueError:
        pass
    try:
        return float(Path(value).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0.0


def now() -> datetime:
    """The current UTC time as segment names see it."""
    return datetime.now(UTC) + timedelta(seconds=offset())


def at(timestamp: float) -> datetime:
    """A file time (``st_mtime``) as segment names see it."""
    return datetime.fromtimestamp(timestamp, UTC) + timedelta(seconds=offset())
