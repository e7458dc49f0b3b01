"""A publish that really hangs: a transport that waits on its server, and a server
that accepts the connection and never answers.

``UNANSWERED`` is a site transport plugin (loaded from ``plugin_dirs`` like any
third party's). It sends the segment's remote name and waits for the server's
one-byte answer with no timeout of its own: it breaks the transport contract
("every network call has a hard timeout"), which is exactly the fault systemd's
watchdog is there for. Under it the shipper's publisher thread blocks in
``recv`` for good while its housekeeper (the main thread) goes on spilling.

``SilentServer`` is that server on loopback, in the test's process; the
``LISTENER`` script is the same server for a booted tree (``python3 -c``).
"""

from __future__ import annotations

import selectors
import socket
import threading
import time

UNANSWERED = '''
"""Test site plugin: the transport ``unanswered``, which waits for its server's
answer with no timeout (see tests/monitoring/hung.py)."""
import socket

from livecam import hookimpl
from livecam import options as o
from livecam.options import Option
from livecam.transport import TransientError, Transport


class Unanswered(Transport):
    description = "sends the name, waits for the server's answer without a timeout"
    options = {"host": Option(o.string), "port": Option(o.integer(1, 65535))}

    def describe(self):
        return f"unanswered to {self.opts['host']}:{self.opts['port']}"

    def publish(self, local, remote, *, size, digest):
        with socket.create_connection((self.opts["host"], self.opts["port"])) as sock:
            sock.sendall(remote.encode() + b"\\n")
            if sock.recv(1) != b"+":  # blocks for as long as the server is silent
                raise TransientError("the server hung up")
        return True


@hookimpl
def livecam_register_transports(register):
    register("unanswered", Unanswered)
'''

# The server, for `python3 -c SCRIPT PORT` in a booted tree: it prints "request"
# when a publish's request comes (its journal shows it). A reachability probe that
# connects and hangs up is no request.
LISTENER = """
import selectors, socket, sys
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(16)
sel = selectors.DefaultSelector()
sel.register(server, selectors.EVENT_READ)
while True:
    for key, _ in sel.select():
        if key.fileobj is server:
            sel.register(server.accept()[0], selectors.EVENT_READ)
        elif data := key.fileobj.recv(4096):
            print("request", data.decode(errors="replace").strip(), flush=True)
        else:
            sel.unregister(key.fileobj)
            key.fileobj.close()
"""


class SilentServer:
    """Listens on 127.0.0.1 and never answers; keeps every connection open.

    ``requests`` holds the monotonic time of each request (the first bytes on a
    connection), in order: a publish waiting for its answer from then on. A
    reachability probe connects and hangs up without a request."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port: int = self.sock.getsockname()[1]
        self.requests: list[float] = []
        self._held: list[socket.socket] = []
        self._sel = selectors.DefaultSelector()
        self._sel.register(self.sock, selectors.EVENT_READ)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(timeout=0.2):
                conn = key.fileobj
                assert isinstance(conn, socket.socket)
                if conn is self.sock:
                    self._sel.register(conn.accept()[0], selectors.EVENT_READ)
                elif conn.recv(4096):
                    self.requests.append(time.monotonic())
                    self._sel.unregister(conn)
                    self._held.append(conn)  # open, never answered
                else:
                    self._sel.unregister(conn)
                    conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for key in list(self._sel.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        self._sel.close()
        for conn in self._held:
            conn.close()
