"""Fixtures for the s3 transport tests: one real SeaweedFS per session, a prefix per test.

Run under the suite's own lock: ``flock /tmp/lc-lock-s3 .venv/bin/python -m pytest tests/s3``.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livecam.options import check_options
from tests.s3.servers import BUCKET, NODE, Seaweed

_prefixes = itertools.count()


class Bucket:
    """One test's view of the server: its prefix, node transports, and what arrived."""

    def __init__(self, server: Seaweed, tmp: Path):
        self.server, self.tmp = server, tmp
        self.prefix = f"lcs3-{os.getpid()}-{next(_prefixes)}"
        self.store = tmp / "bucket-copy"  # what segments() downloaded, for tests.core.node

    def options(self, creds: tuple[str, str] = NODE, **over: Any) -> dict[str, Any]:
        """The node's ``transport:`` YAML (the secret in a 0600 file)."""
        secret = self.tmp / f"secret-{creds[0]}"
        if not secret.exists():
            secret.write_text(creds[1] + "\n")
            secret.chmod(0o600)
        opts: dict[str, Any] = {
            "plugin": "s3",
            "endpoint": self.server.endpoint,
            "bucket": BUCKET,
            "prefix": self.prefix,
            "addressing_style": "path",
            "access_key_id": creds[0],
            "secret_access_key_file": str(secret),
        }
        opts.update(over)
        return opts

    def transport(self, timeout: float = 10, **over: Any) -> Any:
        from livecam_plugins.s3 import S3Transport

        raw = self.options(**over)
        raw.pop("plugin")
        opts = check_options("transport", raw, S3Transport.options)
        S3Transport.check(opts, "transport")
        return S3Transport(opts, timeout=timeout)

    def objects(self) -> dict[str, int]:
        """Key (below the prefix) -> size, as the admin lists them."""
        client = self.server.client()
        found: dict[str, int] = {}
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=self.prefix + "/"
        ):
            for obj in page.get("Contents", []):
                found[obj["Key"][len(self.prefix) + 1 :]] = obj["Size"]
        return found

    def read(self, key: str) -> bytes:
        body = self.server.client().get_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}")
        return body["Body"].read()

    def segments(self) -> dict[str, Path]:
        """Every .mp4 object, downloaded into ``store`` (name -> local copy)."""
        shutil.rmtree(self.store, ignore_errors=True)
        out: dict[str, Path] = {}
        for key in self.objects():
            if key.endswith(".mp4"):
                path = self.store / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.read(key))
                out[path.name] = path
        return out

    def hidden(self) -> list[Path]:
        return []  # an object store has no temp files: a PUT is visible whole or not at all


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seaweed]:
    server = Seaweed(tmp_path_factory.mktemp("lcs3-weed"))
    server.start()
    try:
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(seaweed: Seaweed, tmp_path: Path) -> Iterator[Bucket]:
    if seaweed.proc is None:  # a test stopped it and failed before starting it again
        seaweed.start()
    yield Bucket(seaweed, tmp_path)
    if seaweed.proc is None:
        seaweed.start()
