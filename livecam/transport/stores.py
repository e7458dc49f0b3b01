"""A transport made of stores: ``publish`` and ``publish_batch`` over the one protocol.

A subclass connects and hands out ``Store`` objects (``livecam.transport.protocol``), one per
worker, and classes its library's errors; everything else (the protocol, the
concurrent batch, the time limit per item) is here. Round trips, not bytes, limit
a backlog over a link with latency, so a batch keeps ``workers`` segments in
flight, each with its own store (a channel or session of one connection): one
segment's round trips (stat, open, close, rename) overlap the next one's data,
and the connection's ``Window`` (``livecam.transport.pipeline``) keeps its bytes
in flight few enough for those round trips to stay short.
"""

from __future__ import annotations

import contextlib
import functools
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.transport import ConflictError, Item, PublishError, TransientError, Transport
from livecam.transport.pipeline import Window
from livecam.transport.protocol import Store, publish

# Segments in flight at once in a batch: with 40 ms RTT one 2 MB segment spends
# about as long on its round trips as on its data (``workers``).
WORKERS = 6
# Bytes written and not yet acknowledged on one connection (``window``): about
# twice the bandwidth-delay product of 100 Mbit/s at 40 ms RTT.
WINDOW = 1 << 20

MIN_WINDOW = 1 << 16


def window_size(value: Any, key: str) -> int:
    """A size of at least 64K: less would leave one write request in flight."""
    n = o.size(value, key)
    if n < MIN_WINDOW:
        raise ConfigError(f"{key}: must be at least 64K (a few write requests), got {value!r}")
    return n


#: The YAML keys of a transport built on stores (sftp, smb).
BATCH_OPTIONS: dict[str, Option] = {
    "workers": Option(o.integer(1, 64), WORKERS, "segments in flight at once in a batch"),
    "window": Option(window_size, WINDOW, "bytes written, not yet acknowledged, per connection"),
}


class StoreTransport(Transport):
    """Base of the file transports: ``stores`` and ``classify`` are theirs, the rest is here."""

    #: Segments in flight at once in a batch (each with its own store).
    workers: ClassVar[int] = WORKERS

    def stores(self, count: int) -> Sequence[Store]:
        """``count`` stores over one connection (connecting first if needed), each
        for one thread. Raises PublishError."""
        raise NotImplementedError

    def new_window(self) -> Window:
        """The ``Window`` of a new connection: ``window`` bytes (the option, else WINDOW)."""
        return Window(self.opts.get("window") or WINDOW)

    def after_failure(self, error: BaseException) -> None:
        """A store raised ``error`` (not a PublishError): a transport whose connection
        may be dead after it drops the connection here (the next publish makes a
        new one). The default keeps it."""

    def attempt(self, store: Store, limit: float) -> contextlib.AbstractContextManager[None]:
        """Bound one item's publish to ``limit`` seconds; a transport whose library
        can wait without limit makes it fail at the limit (the default: no wrapper)."""
        return contextlib.nullcontext()

    def publish(self, local: Path, remote: str, *, size: int, digest: str) -> bool:
        """Publish one file under the protocol; False if the same content is there."""
        (store,) = self.stores(1)
        return self.publish_item(store, Item(local, remote, size, digest), 1)

    def in_flight(self) -> int:
        """Segments in flight in a batch: the ``workers`` option, else the class's."""
        return int(self.opts.get("workers") or self.workers)

    def publish_batch(self, items: Sequence[Item]) -> Iterator[tuple[Item, bool]]:
        """Publish ``items`` with up to ``workers`` in flight; see ``run_concurrently``."""
        if not items:
            return
        stores = self.stores(min(self.in_flight(), len(items)))
        n = len(stores)
        yield from run_concurrently(
            items, [functools.partial(self.publish_item, s, share=n) for s in stores]
        )

    def publish_item(self, store: Store, item: Item, share: int) -> bool:
        """One item with one store; ``share`` segments share the link meanwhile, so
        its time limit is ``timeout`` times that."""
        try:
            with self.attempt(store, self.timeout * share):
                return publish(store, item)
        except PublishError:
            raise
        except Exception as exc:
            self.after_failure(exc)
            raise self.classify(exc, store.where(item.remote)) from None


def run_concurrently(
    items: Sequence[Item], workers: Sequence[Callable[[Item], bool]]
) -> Iterator[tuple[Item, bool]]:
    """Publish ``items`` with each worker in its own thread, a few segments in flight.

    Yields ``(item, sent)`` as soon as a worker returned (it verified and renamed),
    in the order they finish. An item eviction took before a worker started it
    (``Hold``) is skipped. After an error other than a ConflictError (one
    item's name holding other content) no new item is started; the items in
    flight finish or fail. Raises the first error (a connection failure before a
    ConflictError) once every thread has ended: items not yielded were not proven
    published and stay local.
    """
    todo = deque(items)
    done: queue.SimpleQueue[tuple[Item | None, bool, PublishError | None]] = queue.SimpleQueue()
    stop = threading.Event()
    lock = threading.Lock()

    def run(worker: Callable[[Item], bool]) -> None:
        while True:
            with lock:
                if stop.is_set() or not todo:
                    break
                item = todo.popleft()
            if not item.hold.start():
                continue  # eviction took it before it started: never sent, not an error
            try:
                done.put((item, worker(item), None))
            except PublishError as exc:
                if not isinstance(exc, ConflictError):
                    stop.set()
                done.put((item, False, exc))
            except BaseException as exc:  # a bug must still end the batch, not hang it
                stop.set()
                done.put((item, False, TransientError(f"{type(exc).__name__}: {exc}")))
        done.put((None, False, None))  # this thread has ended

    threads = [threading.Thread(target=run, args=(w,), daemon=True) for w in workers]
    for t in threads:
        t.start()
    errors: list[PublishError] = []
    running = len(threads)
    try:
        while running:
            item, sent, error = done.get()
            if item is None:
                running -= 1
            elif error is not None:
                errors.append(error)
            else:
                yield item, sent
    finally:
        stop.set()  # the caller stopped early: start nothing new
        for t in threads:
            t.join()
    if errors:
        raise next((e for e in errors if not isinstance(e, ConflictError)), errors[0])
