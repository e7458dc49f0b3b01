"""A plain TCP forwarder: ``python forward.py LISTEN_HOST PORT TARGET_HOST PORT``.

The s3 link test runs it inside a network namespace, so a node on the host reaches
RGW (a second radosgw on the host end of the veth) through the veth both ways:
cutting the veth cuts the node from the object store. Each connection gets two
threads copying bytes; nothing is changed or buffered beyond one read.
"""

from __future__ import annotations

import contextlib
import socket
import sys
import threading


def pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 16):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)


def serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    server = socket.create_server(listen, reuse_port=False)
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection(target, timeout=10)
            upstream.settimeout(None)
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pipe, args=(a, b), daemon=True).start()


if __name__ == "__main__":
    host, port, to_host, to_port = sys.argv[1:5]
    serve((host, int(port)), (to_host, int(to_port)))
