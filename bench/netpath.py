"""The benchmark's network path, each part in its own process.

    python bench/netpath.py relay --target HOST:PORT --port P --delay SECONDS
    python bench/netpath.py sink --host HOST --port P

``relay``: a TCP relay on 127.0.0.1:P that holds every chunk ``delay`` seconds in
each direction before passing it on to HOST:PORT: a link with latency where the
kernel has no netem. It runs in its own process so that it never competes with
the transport under test for one interpreter's lock (a real link is not in the
node's process).

``sink``: accepts connections, reads each to its end, discards the bytes and
answers with their count: with ``push`` it measures what the path itself carries
(the physical reference), no protocol and no encryption on top.

Both print ``ready`` once listening, and run at nice -10 (as root): a shared,
loaded machine must not make the wire slower. ``push`` is imported by bench/transports.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path


class Relay:
    def __init__(self, target: tuple[str, int], delay: float):
        self.target, self.delay = target, delay

    async def client(self, r1: asyncio.StreamReader, w1: asyncio.StreamWriter) -> None:
        r2, w2 = await asyncio.open_connection(*self.target)
        await asyncio.gather(self.pipe(r1, w2), self.pipe(r2, w1))
        w1.close()
        w2.close()

    async def pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

        async def send() -> None:
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                writer.write(data)
                await writer.drain()
            writer.write_eof()  # pass a half-close on (the sink answers after it)

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(1 << 16):
                await queue.put((time.monotonic() + self.delay, data))
        except ConnectionError:
            pass
        await queue.put(None)
        with contextlib.suppress(ConnectionError, OSError):
            await sender


async def relay(target: tuple[str, int], port: int, delay: float) -> None:
    r = Relay(target, delay)
    server = await asyncio.start_server(r.client, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def sink(host: str, port: int) -> None:
    listener = socket.create_server((host, port))
    print("ready", flush=True)

    def serve(conn: socket.socket) -> None:
        with conn:
            buf = bytearray(1 << 20)
            total = 0
            while n := conn.recv_into(buf):
                total += n
            conn.sendall(str(total).encode())

    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()


def push(host: str, port: int, files: Sequence[Path]) -> float:
    """Send the bytes of ``files`` over one TCP connection to a sink; seconds until
    the sink confirmed it read every byte."""
    want = sum(f.stat().st_size for f in files)
    t0 = time.monotonic()
    with socket.create_connection((host, port)) as s:
        for f in files:
            with open(f, "rb") as src:
                s.sendfile(src)
        s.shutdown(socket.SHUT_WR)
        got = int(s.recv(64))
    seconds = time.monotonic() - t0
    if got != want:
        raise RuntimeError(f"sink read {got} of {want} bytes")
    return seconds


def main(argv: Sequence[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("relay")
    r.add_argument("--target", required=True)
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--delay", type=float, required=True)
    s = sub.add_parser("sink")
    s.add_argument("--host", required=True)
    s.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    # The path stands in for a wire: it must not slow down when other work loads the
    # machine's CPUs (it needs little CPU itself).
    with contextlib.suppress(OSError):
        os.nice(-10)
    if args.cmd == "relay":
        host, port = args.target.rsplit(":", 1)
        asyncio.run(relay((host, int(port)), args.port, args.delay))
    else:
        sink(args.host, args.port)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
