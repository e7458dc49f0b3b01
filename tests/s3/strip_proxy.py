"""A small real HTTP reverse proxy that drops ``If-None-Match`` on its way to S3.

It stands for an object store (or a gateway in front of one) that does not honour
conditional writes: every request is forwarded to the real server without that
header, re-signed (SigV4, payload signed) with the node's key, since the header
was signed. What the node sees is a server that stores an unconditional PUT over
an existing key. With ``corrupt`` set it also changes a byte of each PUT body on
the way (re-signed over the changed body, so only the checksums can catch it).
"""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

DROPPED = {"if-none-match", "authorization", "x-amz-date", "x-amz-content-sha256", "host",
           "connection", "keep-alive", "expect", "transfer-encoding"}  # fmt: skip


class StripProxy:
    """Listens on 127.0.0.1 (``endpoint``); forwards to ``upstream`` (http://host:port)."""

    def __init__(
        self, upstream: str, creds: tuple[str, str], region: str = "us-east-1", strip: bool = True
    ):
        from botocore.auth import S3SigV4Auth
        from botocore.credentials import Credentials

        self.signer = S3SigV4Auth(Credentials(*creds), "s3", region)
        self.upstream = urlsplit(upstream)
        #: Drop If-None-Match (else it is forwarded).
        self.strip = strip
        #: How many requests arrived with If-None-Match (and went on without it).
        self.stripped = 0
        #: Change one byte of each PUT's body on the way (a link that corrupts).
        self.corrupt = False
        self.corrupted = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def forward(self) -> None:
                proxy.handle(self)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def handle(self, h: BaseHTTPRequestHandler) -> None:
        from botocore.awsrequest import AWSRequest

        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        dropped = DROPPED - ({"if-none-match"} if not self.strip else set())
        if self.strip and "If-None-Match" in h.headers:
            self.stripped += 1
        if self.corrupt and h.command == "PUT" and body:
            body = bytes([body[0] ^ 0xFF]) + body[1:]
            self.corrupted += 1
        headers = {k: v for k, v in h.headers.items() if k.lower() not in dropped}
        url = f"{self.upstream.scheme}://{self.upstream.netloc}{h.path}"
        request = AWSRequest(method=h.command, url=url, data=body, headers=headers)
        self.signer.add_auth(request)
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            conn.request(h.command, h.path, body=body or None, headers=dict(request.headers))
            answer = conn.getresponse()
            data = answer.read()
        finally:
            conn.close()
        h.send_response(answer.status, answer.reason)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                h.send_header(key, value)
        length_header = answer.getheader("Content-Length")
        h.send_header(
            "Content-Length", (length_header or "0") if h.command == "HEAD" else str(len(data))
        )
        h.end_headers()
        if h.command != "HEAD":
            h.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
