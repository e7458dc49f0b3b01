"""Fixtures for the s3 transport tests: each real object store (SeaweedFS, Ceph RGW)
once per session, a prefix per test; every test runs on both.

Run under the suite's own lock: ``flock /tmp/lc-lock-s3 .venv/bin/python -m pytest tests/s3``.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livecam.options import check_options
from livecam.storage.losses import is_loss_record
from tests.s3.servers import BUCKET, NODE, Rgw, Seaweed

Server = Seaweed | Rgw

_prefixes = itertools.count()


class Bucket:
    """One test's view of the server: its prefix, node transports, and what arrived."""

    def __init__(self, server: Server, tmp: Path):
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
        # With the node's key: on RGW the node owns its objects (no ACL for the admin).
        body = self.server.client(NODE).get_object(Bucket=BUCKET, Key=f"{self.prefix}/{key}")
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

    def records(self) -> dict[str, Path]:
        """Every loss record object (by its name), downloaded into ``store``."""
        out: dict[str, Path] = {}
        for key in self.objects():
            if is_loss_record(Path(key)):
                path = self.store / key
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(self.read(key))
                out[path.name] = path
        return out

    def hidden(self) -> list[Path]:
        return []  # an object store has no temp files: a PUT is visible whole or not at all


def set_policy(server: Server, *, deny_delete: bool) -> None:
    policy = server.policy(deny_delete=deny_delete)
    if policy is None:
        server.client().delete_bucket_policy(Bucket=BUCKET)
    else:
        server.client().put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))


# Package scope: each store stops after the last s3 test, not at the end of the whole
# run (an idle RGW cluster burns about a core of the two).
@pytest.fixture(scope="package", params=["seaweedfs", "rgw"])
def server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    root = tmp_path_factory.mktemp(f"lcs3-{request.param}")
    made: Server
    if request.param == "rgw":
        if not shutil.which("radosgw"):
            pytest.skip("radosgw is not installed (scripts/bootstrap installs it)")
        made = Rgw(root)
    else:
        made = Seaweed(root)
        made.start()
    try:
        # RGW's first bucket call waits for its pools: give it time.
        deadline = time.monotonic() + 90
        while True:
            try:
                made.client().create_bucket(Bucket=BUCKET)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        if made.policy(deny_delete=False) is not None:
            set_policy(made, deny_delete=False)
        yield made
    finally:
        made.close()


@pytest.fixture
def bucket(server: Server, tmp_path: Path) -> Iterator[Bucket]:
    if server.proc is None:  # a test stopped it and failed before starting it again
        server.start()
    yield Bucket(server, tmp_path)
    if server.proc is None:
        server.start()
