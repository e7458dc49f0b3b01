"""A batch as several rsync calls, two of them at once: publish_batch's scheduler.

- **Overlap.** Up to ``LANES`` calls run at once, each on its own lane (its own
  SSH master connection, ``master``). The next call starts when the running one
  should be half done at the recent rate (``Pacer.half_done``): two calls share
  the link nearly all the time, and one's start-up (rrsync's start and about ten
  round trips) runs while the other sends. Starting early costs nothing;
  starting late leaves the link idle, and a rate measured on a small call (whose
  start-up weighs more) errs late. Only the first call of a batch pays its
  start-up alone. With ``bwlimit`` set, calls never overlap (two calls would
  each get the whole limit).
- **One at a time.** The NAS's rrsync must let a key run two calls at once
  (``-no-lock``, as the NAS role sets it up). Where it refuses the second
  ("Another instance of rrsync": ``errors.Busy``), the transport sends that call
  again, goes on with one call at a time, and says so once.
- **Overdue.** A call stopped as overdue (``errors.Overdue``) handed back what it
  proved; the rest of it goes again, in calls sized from what it managed.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from livecam.transport import ConflictError, Item, PermanentError, Transport
from livecam_plugins.rsync.errors import Busy, Overdue
from livecam_plugins.rsync.master import ControlDir, Lane
from livecam_plugins.rsync.pacer import Pacer
from livecam_plugins.rsync.send import Proving, Sender

log = logging.getLogger("livecam.rsync")

LANES = 2


@dataclass(eq=False)
class _Call:
    """One rsync call of a batch, run in its own thread (``Calls.publish``)."""

    items: list[Item]
    lane: Lane  # the master connection that carries it
    next_at: float | None  # when the batch's next call may start (monotonic)
    crowded: bool = False  # another call of the batch ran beside it
    thread: threading.Thread = field(init=False)
    results: list[tuple[Item, bool]] = field(default_factory=list)
    refused: list[PermanentError] = field(default_factory=list)
    error: BaseException | None = None

    def collect(self, call: Proving) -> Iterator[tuple[Item, bool]]:
        """``call``'s results; what it returns (the refused items) goes to ``refused``."""
        self.refused = yield from call


def cut(items: Sequence[Item], limit: int) -> Iterator[list[Item]]:
    """``items`` in order, cut into runs of at most ``limit`` bytes (at least one item)."""
    call: list[Item] = []
    size = 0
    for item in items:
        if call and size + item.size > limit:
            yield call
            call, size = [], 0
        call.append(item)
        size += item.size
    if call:
        yield call


class Calls:
    """A transport's lanes, and the calls of each batch on them (module doc)."""

    def __init__(self, transport: Transport, control: ControlDir, pacer: Pacer):
        self.lanes = [Lane(n, transport.opts, control) for n in range(LANES)]
        # How many calls may run at once: two calls would each get bwlimit.
        self.at_once = 1 if transport.opts["bwlimit"] else LANES
        self._pacer = pacer
        self._sender = Sender(transport, control, pacer)

    def publish(self, items: Sequence[Item]) -> Iterator[tuple[Item, bool]]:
        """``RsyncTransport.publish_batch``: ``items`` in calls of ``Pacer.call_limit``
        bytes, overlapping. After a failure no call starts; the ones running are
        waited for and reported."""
        todo = list(items)
        ended: queue.Queue[_Call] = queue.Queue()
        running: list[_Call] = []
        refused: list[PermanentError] = []
        failure: BaseException | None = None
        try:
            while True:
                room = bool(todo) and failure is None and len(running) < self.at_once
                due = running[-1].next_at if running and room else None
                now = time.monotonic()
                if room and (not running or (due is not None and now >= due)):
                    busy = {c.lane.n for c in running}
                    lane = next(ln for ln in self.lanes[: self.at_once] if ln.n not in busy)
                    call = self._start(todo, ended, lane)
                    for other in running:
                        call.crowded = other.crowded = True
                    running.append(call)
                    continue
                if not running:
                    break
                try:
                    call = ended.get(timeout=None if due is None else max(0.0, due - now))
                except queue.Empty:
                    continue
                running.remove(call)
                yield from call.results
                refused += call.refused
                error = self._ended(call, todo)
                if error is not None and failure is None:
                    failure = error
        finally:
            for call in running:  # the consumer gave up: let no call outlive the batch
                call.thread.join()
        if failure is not None:
            self._pacer.measured(0, 0)  # the next batch starts with one segment
            raise failure
        if refused:
            _raise_refused(refused)

    def _start(self, todo: list[Item], ended: queue.Queue[_Call], lane: Lane) -> _Call:
        """Take the next call's items off ``todo`` and start it on ``lane`` in a thread
        that puts it on ``ended`` when it has ended."""
        n = len(next(cut(todo, self._pacer.call_limit())))
        items, todo[:n] = todo[:n], []
        now = time.monotonic()
        # No rate to tell when this call ends: the next waits for it.
        half = self._pacer.half_done(sum(i.size for i in items))
        call = _Call(items, lane, next_at=None if half is None else now + half)
        call.thread = threading.Thread(
            target=self._run, args=(call, ended), name="rsync-call", daemon=True
        )
        call.thread.start()
        return call

    def _ended(self, call: _Call, todo: list[Item]) -> BaseException | None:
        """The error of ``call``, which has ended; None when there is none, or when
        what it did not prove goes again (put back on ``todo``): it was overdue, or
        the NAS refused to run it beside our other call."""
        again = isinstance(call.error, Overdue)
        if isinstance(call.error, Busy) and call.crowded:
            # The NAS's rrsync refused to run beside our other call.
            self._one_at_a_time()
            again = True
        if not again:
            return call.error
        proven = {id(item) for item, _ in call.results}  # handed back already
        todo[:0] = [i for i in call.items if id(i) not in proven]
        return None

    def _run(self, call: _Call, ended: queue.Queue[_Call]) -> None:
        """``Sender.call`` of ``call.items`` over its lane, its outcome kept in ``call``."""
        try:
            call.results.extend(call.collect(self._sender.call(call.items, call.lane)))
        except BaseException as exc:  # re-raised in the publisher's thread
            call.error = exc
        finally:
            ended.put(call)

    def _one_at_a_time(self) -> None:
        if self.at_once > 1:
            self.at_once = 1
            log.warning(
                "the NAS's rrsync runs one call of this node at a time (its key lacks "
                "-no-lock): rsync calls no longer overlap, and each call's start-up "
                "(about ten round trips) leaves the link idle"
            )

    def close(self) -> None:
        """End every lane's master connection."""
        for lane in self.lanes:
            lane.exit()


def _raise_refused(refused: list[PermanentError]) -> None:
    """Raise the first of the batch's per-item errors: a conflict first (the
    shipper sets that segment aside and goes on)."""
    refused.sort(key=lambda e: not isinstance(e, ConflictError))
    if len(refused) > 1:
        log.error("rsync: %d segments refused; the first: %s", len(refused), refused[0])
    raise refused[0]
