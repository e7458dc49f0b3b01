"""SeaweedFS full or over its bucket quota: what the node sees, and that it recovers.

SeaweedFS 4.48 answers a PUT into a bucket its quota made read-only, and a PUT when
no volume has room, with ``500 InternalError`` and no reason (its own log says
"read only" or "No writable volumes and no free volumes left"). The transport cannot
tell that from a passing server failure, so it is transient with one line that
names the possibility: retried with backoff, the segment kept on the node, nothing
stored in part; once space returns (quota raised, a volume added) it arrives.
RGW names its quota (``QuotaExceeded``, permanent): test_contract.py.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from livecam.storage.files import file_digest
from livecam.transport import Item, TransientError
from tests.s3.conftest import Bucket
from tests.s3.servers import BUCKET, NODE, Seaweed
from tests.s3.test_contract import DAY, publish, segment, sha

pytestmark = pytest.mark.slow


def usage(server: Seaweed) -> float:
    """The bucket's usage of its quota in percent, as ``s3.bucket.list`` reports it."""
    found = re.search(rf"{BUCKET}\s.*usage:([\d.]+)%", server.shell("s3.bucket.list"))
    return float(found.group(1)) if found else 0.0


def test_over_quota_is_transient_named_and_recovers(bucket, tmp_path):
    if bucket.server.kind != "seaweedfs":
        pytest.skip("RGW's quota is QuotaExceeded (test_contract.py)")
    server: Seaweed = bucket.server
    t = bucket.transport()
    first = segment(tmp_path, 1, 1_200_000)
    assert publish(t, first) is True
    late = segment(tmp_path, 2, 300_000)
    server.shell(f"s3.bucket.quota -name={BUCKET} -op=set -sizeMB=1")
    try:
        deadline = time.monotonic() + 60  # the volume servers report sizes every few seconds
        while usage(server) <= 100:
            assert time.monotonic() < deadline, server.shell("s3.bucket.list")
            time.sleep(1)
        assert "to read only" in server.shell("s3.bucket.quota.enforce -apply")
        with pytest.raises(TransientError) as err:
            publish(t, late)
        assert "InternalError: the server failed (SeaweedFS answers this also when full" in str(
            err.value
        )
        assert len(str(err.value).splitlines()) == 1 and NODE[1] not in str(err.value)
        assert f"{DAY}/{late.name}" not in bucket.objects()  # nothing, not even a part
        assert late.exists()  # the transport never touches the local copy
    finally:
        server.shell(f"s3.bucket.quota -name={BUCKET} -op=remove")
        server.shell("s3.bucket.quota.enforce -apply")
    assert publish(t, late) is True  # space is back: it arrives
    assert sha(bucket.read(f"{DAY}/{late.name}")) == file_digest(late)


def test_no_free_volume_is_transient_named_and_recovers(tmp_path: Path):
    """A SeaweedFS with room for two 1 MB volumes: PUTs fail once both are full, and
    succeed after it restarts with room for more (a disk added)."""
    server = Seaweed(tmp_path / "weed")
    argv = server.argv
    argv[argv.index("-master.volumeSizeLimitMB") + 1] = "1"
    argv[argv.index("-volume.max") + 1] = "2"
    server.start()
    try:
        server.client().create_bucket(Bucket=BUCKET)
        b = Bucket(server, tmp_path)
        t = b.transport(timeout=10)
        segs = [segment(tmp_path, i, 300_000) for i in range(1, 16)]
        items = [Item(s, f"{DAY}/{s.name}", s.stat().st_size, file_digest(s)) for s in segs]
        done = []
        with pytest.raises(TransientError, match="InternalError: the server failed") as err:
            for item, _sent in t.publish_batch(items):
                done.append(item)
        assert 2 <= len(done) < len(items), "it never filled"
        assert len(str(err.value).splitlines()) == 1
        stored = b.objects()
        assert {i.remote for i in done} <= set(stored)
        for item in items:  # what is there is whole
            if item.remote in stored:
                assert stored[item.remote] == item.size
        server.stop()
        argv[argv.index("-volume.max") + 1] = "20"  # room again
        server.start()
        again = dict((i.remote, sent) for i, sent in t.publish_batch(items))
        assert len(again) == len(items)
        assert not any(again[i.remote] for i in done)
        for item in items:
            assert sha(b.read(item.remote)) == item.digest
    finally:
        server.stop()
