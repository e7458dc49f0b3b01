"""A real ``livecam web`` (real uvicorn) on a free loopback port, and a raw HTTP client.

Requests go through ``http.client`` so the path is sent byte for byte as written:
``..`` and ``%2e%2e`` reach the server, not a client that normalises them away.
"""

from __future__ import annotations

import base64
import http.client
import os
import socket
import subprocess
import time
from pathlib import Path

from tests.conftest import livecam_cmd

TOKEN = "web-test-token-0123456789"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def token_file(directory: Path, mode: int = 0o600) -> Path:
    path = directory / "web-token"
    path.write_text(TOKEN + "\n")
    os.chmod(path, mode)
    return path


class Web:
    """``livecam web ARGS`` running until ``stop``."""

    def __init__(self, *args: str, env: dict[str, str] | None = None):
        self.port = free_port()
        self.proc = subprocess.Popen(
            livecam_cmd("web", *args, "--port", str(self.port)),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"livecam web exited: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("livecam web did not listen within 30 s") from None
                time.sleep(0.1)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(
        self, path: str, *, auth: bool = True, headers: dict[str, str] | None = None,
        method: str = "GET",
    ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        hdrs = dict(headers or {})
        if auth:
            hdrs.setdefault("Authorization", f"Bearer {TOKEN}")
        conn.request(method, path, headers=hdrs)
        resp = conn.getresponse()
        body = resp.read()
        conn.close()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def basic(password: str) -> str:
    return "Basic " + base64.b64encode(f"anyone:{password}".encode()).decode()
