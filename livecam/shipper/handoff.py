"""The hand-off between the publisher and eviction: who holds a segment, and how
eviction takes one the publisher has lent it.

Each of the shipper's threads claims the segment it works on (``claim``); the
other skips it. The publisher lends its batch's segments to eviction
(``batch``, ``Batch.lend``): each gets a ``Lent`` hold, which the transport
``start``s before it sends the item (``livecam.transport.Hold`` is all a
transport sees of it). Eviction, needing room, ``take``s a lent segment without
waiting:

- ``Taken.QUEUED``: not started, it never will be: evict it like any other;
- ``Taken.STARTED``: only where the transport can let go of a started item
  (``Transport.takes_started``: rsync): its file may go at once, and whether it
  was lost is settled when the batch ends (``settle(lost)``);
- None: keep off (a store transport is writing it this moment).

When a batch ends its claims are released, then every started segment eviction
took is settled: lost unless the transport proved it on the NAS.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from livecam.storage.segment import Segment

#: Called once a batch that a taken segment was in has ended: True if it was lost.
Settle = Callable[[bool], None]


class Taken(enum.Enum):
    """How eviction took a lent segment (``Handoff.take``)."""

    QUEUED = "queued"  # it will never be sent: evict it now
    STARTED = "started"  # delete it now; its batch settles whether it was lost


class Lent:
    """A segment's place in a batch: queued until the transport starts it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._started = False
        self.taken = False  # eviction took it

    def start(self) -> bool:
        """Mark the item started; False if eviction took it first (skip it: it is
        neither published nor an error)."""
        with self._lock:
            self._started = not self.taken
            return self._started

    def take(self, started_too: bool) -> Taken | None:
        """Eviction takes the item: QUEUED (it will never start), STARTED (only when
        ``started_too``; its publish may still prove it), None (not now)."""
        with self._lock:
            if self.taken or (self._started and not started_too):
                return None
            self.taken = True
            return Taken.STARTED if self._started else Taken.QUEUED


class Batch:
    """The publisher's side of one batch: what it lent and what was proven."""

    def __init__(self, handoff: Handoff, claims: ExitStack):
        self._handoff = handoff
        self._claims = claims
        self._settles: dict[Path, Settle] = {}
        self._proven: set[Path] = set()

    def lend(self, segment: Segment) -> Lent | None:
        """Claim ``segment`` for this batch and lend it to eviction; None when the
        other thread holds it."""
        hold = Lent()
        lent = (segment.path, hold, self)
        return hold if self._claims.enter_context(self._handoff.claim(segment.name, lent)) else None

    def proven(self, path: Path) -> None:
        """The transport proved the segment at ``path`` on the NAS."""
        self._proven.add(path)

    def _took(self, path: Path, settle: Settle) -> None:
        self._settles[path] = settle

    def _settle(self) -> None:
        for path, settle in self._settles.items():
            settle(path not in self._proven)


class Handoff:
    """The shipper's claims and loans; see the module doc."""

    def __init__(self, *, takes_started: bool):
        self.takes_started = takes_started
        self._held: set[str] = set()
        self._lent: dict[str, tuple[Path, Lent, Batch]] = {}
        self._changed = threading.Condition()

    @contextmanager
    def claim(
        self, name: str, lent: tuple[Path, Lent, Batch] | None = None, *, wait: float = 0.0
    ) -> Iterator[bool]:
        """Hold ``name`` for this thread; yields False if another thread kept it for
        longer than ``wait`` seconds. ``lent``: lent to eviction while held."""
        with self._changed:
            got = self._changed.wait_for(lambda: name not in self._held, timeout=wait)
            if got:
                self._held.add(name)
                if lent is not None:
                    self._lent[name] = lent
        try:
            yield got
        finally:
            if got:
                with self._changed:
                    self._held.discard(name)
                    self._lent.pop(name, None)
                    self._changed.notify_all()

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        """One batch of the publisher: when it ends, its claims are released and
        what eviction took from it is settled."""
        with ExitStack() as claims:
            batch = Batch(self, claims)
            try:
                yield batch
            finally:
                claims.close()  # nothing more is taken from here on
                batch._settle()

    def take(self, name: str, path: Path, settle: Settle) -> Taken | None:
        """Eviction asks for the copy at ``path`` of the segment ``name``: how it got
        it, or None (keep off). ``settle`` is called when a STARTED one's batch ends."""
        with self._changed:
            path_lent, hold, batch = self._lent.get(name) or (None, None, None)
            if hold is None or batch is None or path != path_lent:
                return None  # not lent, or the other tier's copy of the same segment
            how = hold.take(self.takes_started)
            if how is Taken.STARTED:
                batch._took(path, settle)
            return how
