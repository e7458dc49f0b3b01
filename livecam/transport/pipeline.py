"""Pipelined writes over one connection: the ``sftp`` and ``smb`` transports' writer.

One request at a time waits a round trip per request; over a link with latency
that, not the bandwidth, sets the rate. ``PipelinedWriter`` sends write requests
without waiting for their answers, keeps the bytes sent and not yet acknowledged
within the connection's ``Window`` (shared by a batch's workers), and takes the
answers in order, so every write is acknowledged before the caller believes the
size. A transport gives it only how to send one request.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from typing import BinaryIO

#: Waits for one request's answer; raises when the server refused the write or
#: took less than it was sent.
Wait = Callable[[], None]
#: Sends ``chunk`` (or the part of it the connection can carry now) at ``offset``
#: without waiting: (bytes sent, their ``Wait``), or None when nothing could be sent
#: now (only while ``alone`` is false: answers still due free the connection, as
#: SMB's credits do). ``alone``: none of this write's requests are unanswered.
Send = Callable[[memoryview, int, bool], tuple[int, Wait] | None]


class Window:
    """Bytes written and not yet acknowledged on one connection, shared by a batch's
    workers, at most ``limit`` (one write may exceed it when nothing else is out).

    Over one connection every request queues behind the data sent before it: with
    megabytes in flight, each worker's next small request (the size check, the
    rename, the next open) waits for every other worker's data, the workers fall
    into step and the link idles while all of them wait on round trips at once.
    A window a little above the link's bandwidth-delay product keeps the link full
    and those requests quick.
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    def take(self, n: int) -> bool:
        """Count ``n`` bytes as sent if they fit now; False if they do not."""
        with self._cond:
            if self.used and self.used + n > self.limit:
                return False
            self.used += n
            return True

    def wait(self, n: int) -> None:
        """Count ``n`` bytes as sent, waiting for other workers' acknowledgements
        (for a worker with nothing of its own in flight)."""
        with self._cond:
            self._cond.wait_for(lambda: not self.used or self.used + n <= self.limit)
            self.used += n

    def release(self, n: int) -> None:
        """``n`` bytes were acknowledged (or will never be)."""
        with self._cond:
            self.used -= n
            self._cond.notify_all()


class PipelinedWriter:
    """Writes a file as requests of at most ``request`` bytes, as many unanswered as
    ``window`` allows, through ``send`` (see ``Send``).

    ``read`` bytes are read from the source at once (default: ``request``), and
    ``between`` (if given) runs after each such block went out: a transport whose
    library cannot bound the whole write raises its time limit there.
    """

    def __init__(
        self,
        window: Window,
        send: Send,
        request: int,
        *,
        read: int = 0,
        between: Callable[[], None] | None = None,
    ):
        self.window, self.send, self.request = window, send, request
        self.read = read or request
        self.between = between

    def write(self, src: BinaryIO) -> None:
        """Send all of ``src`` from offset 0 and wait for every answer. Whatever way
        it ends, the window holds none of this write's bytes afterwards."""
        pending: deque[tuple[Wait, int]] = deque()  # (its answer, bytes) in send order
        offset = 0
        try:
            while block := src.read(self.read):
                view = memoryview(block)
                while view:
                    sent = self._send(view[: self.request], offset, pending)
                    view, offset = view[sent:], offset + sent
                if self.between is not None:
                    self.between()
            while pending:
                self._acknowledge(pending)
        finally:
            self.window.release(sum(n for _, n in pending))

    def _send(self, chunk: memoryview, offset: int, pending: deque[tuple[Wait, int]]) -> int:
        """Send (part of) ``chunk`` once the window has room for it: bytes sent, 0
        when the connection could carry none now (an answer was taken meanwhile)."""
        want = len(chunk)
        while not self.window.take(want):
            if not pending:  # nothing of ours to wait for: wait for the others'
                self.window.wait(want)
                break
            self._acknowledge(pending)
        sent = 0
        try:
            answer = self.send(chunk, offset, not pending)
            if answer is not None:
                sent, wait = answer
                pending.append((wait, sent))
        finally:
            self.window.release(want - sent)
        if not sent:
            self._acknowledge(pending)  # its answer frees the connection for the next
        return sent

    def _acknowledge(self, pending: deque[tuple[Wait, int]]) -> None:
        """Wait for the oldest unanswered request; its bytes leave the window."""
        wait, length = pending.popleft()
        try:
            wait()
        finally:
            self.window.release(length)
