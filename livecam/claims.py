"""Claims: which segment a shipper thread is working on, so the other one skips it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Claims:
    """Segment names held by one thread at a time (the publisher or the housekeeper)."""

    def __init__(self) -> None:
        self._held: set[str] = set()
        self._changed = threading.Condition()

    @contextmanager
    def claim(self, name: str, wait: float = 0.0) -> Iterator[bool]:
        """Hold ``name`` for this thread; yields False if another thread kept it
        for longer than ``wait`` seconds."""
        with self._changed:
            got = self._changed.wait_for(lambda: name not in self._held, timeout=wait)
            if got:
                self._held.add(name)
        try:
            yield got
        finally:
            if got:
                with self._changed:
                    self._held.discard(name)
                    self._changed.notify_all()
