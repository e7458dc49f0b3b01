"""Claims: which segment a shipper thread is working on, so the other one skips it.

The publisher may lend a segment it claims to eviction: ``take`` then asks it
to give the segment up (``livecam.transport.Hold``) instead of skipping it, so a
spool under pressure loses its oldest segment even while that one waits in a batch.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

#: Called by ``take`` (under the claims' lock): the local path eviction wants, and
#: what to call when a started publish reports (True: the segment is lost).
#: Returns 'queued', 'started' or None as ``livecam.transport.Hold.take``.
Lender = Callable[[Path, Callable[[bool], None]], str | None]


class Claims:
    """Segment names held by one thread at a time (the publisher or the housekeeper)."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._lent: dict[str, Lender] = {}
        self._changed = threading.Condition()

    @contextmanager
    def claim(self, name: str, wait: float = 0.0, lender: Lender | None = None) -> Iterator[bool]:
        """Hold ``name`` for this thread; yields False if another thread kept it
        for longer than ``wait`` seconds. ``lender``: while held, eviction may
        ``take`` it through that (from the moment it is claimed)."""
        with self._changed:
            got = self._changed.wait_for(lambda: name not in self._held, timeout=wait)
            if got:
                self._held.add(name)
                if lender is not None:
                    self._lent[name] = lender
        try:
            yield got
        finally:
            if got:
                with self._changed:
                    self._held.discard(name)
                    self._lent.pop(name, None)
                    self._changed.notify_all()

    def take(self, name: str, path: Path, settle: Callable[[bool], None]) -> str | None:
        """Ask the holder of ``name`` to give its copy at ``path`` up to eviction:
        'queued' (it will never be sent: evict it now), 'started' (delete it now;
        ``settle`` is called with whether it was lost when its publish reports),
        None (keep off)."""
        with self._changed:
            lender = self._lent.get(name)
            return lender(path, settle) if lender is not None else None
