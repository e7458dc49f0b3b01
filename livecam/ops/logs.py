"""Log lines that a person and journald both read: one event per line.

On a terminal (or into a file) a line is ``TIME LEVEL logger[pid]: message``.
Under systemd, whose journal stamps every line itself, it is ``<N>LEVEL
logger[pid]: message`` instead: the ``<N>`` prefix of sd-daemon(3) carries the
line's priority, so ``journalctl -p warning -u 'livecam-*'`` finds every WARNING
and ERROR (an EVICTED segment, SPOOL FAILED), and no second timestamp is written.
Every line of a multi-line message (a traceback) carries the prefix.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import TextIO

#: syslog priorities, as journald reads them from the ``<N>`` prefix.
PRIORITIES = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}
LINE = "%(levelname)s %(name)s[%(process)d]: %(message)s"


class JournalFormatter(logging.Formatter):
    """``<N>`` before every line of a record: its journald priority."""

    def format(self, record: logging.LogRecord) -> str:
        priority = next((p for level, p in PRIORITIES.items() if record.levelno >= level), 7)
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).split("\n"))


def to_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is systemd's journal: ``$JOURNAL_STREAM`` names its device
    and inode (sd_journal_stream_fd(3))."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def setup(level: int, *, stream: TextIO | None = None) -> None:
    """Log at ``level`` to ``stream`` (stderr), in the journal's form under systemd."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    if to_journal(stream):
        handler.setFormatter(JournalFormatter(LINE))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s " + LINE))
    logging.basicConfig(level=level, handlers=[handler])
