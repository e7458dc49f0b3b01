"""A concurrent batch runner for transports that pay round trips per segment (sftp, smb).

Several segments in flight over one connection hide one segment's round trips
(stat, open, close, rename) behind the next one's data.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence

from livecam.transport import ConflictError, Item, PublishError, TransientError


def run_concurrently(
    items: Sequence[Item], workers: Sequence[Callable[[Item], bool]]
) -> Iterator[tuple[Item, bool]]:
    """Publish ``items`` with each worker in its own thread, a few segments in flight.

    Each worker is a ``publish`` over its own channel of one connection, so one
    segment's round trips (stat, open, close, rename) overlap the next one's data.
    Yields ``(item, sent)`` as soon as a worker returned (it verified and renamed),
    in the order they finish. After an error other than a ConflictError (one
    item's name holding other content) no new item is started; the items in
    flight finish or fail. Raises the first error (a connection failure before a
    ConflictError) once every thread has ended: items not
    yielded were not proven published and stay local.
    """
    todo = deque(items)
    done: queue.SimpleQueue[tuple[Item, bool | None, PublishError | None]] = queue.SimpleQueue()
    stop = threading.Event()
    lock = threading.Lock()

    def run(worker: Callable[[Item], bool]) -> None:
        while not stop.is_set():
            with lock:
                if not todo:
                    break
                item = todo.popleft()
            try:
                done.put((item, worker(item), None))
            except PublishError as exc:
                if not isinstance(exc, ConflictError):
                    stop.set()
                done.put((item, None, exc))
            except BaseException as exc:  # a bug must still end the batch, not hang it
                stop.set()
                done.put((item, None, TransientError(f"{type(exc).__name__}: {exc}")))
        done.put((None, None, None))  # type: ignore[arg-type]  # this thread has ended

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
                yield item, bool(sent)
    finally:
        stop.set()  # the caller stopped early: start nothing new
        for t in threads:
            t.join()
    if errors:
        raise next((e for e in errors if not isinstance(e, ConflictError)), errors[0])
