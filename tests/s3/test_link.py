"""A link cut in a network namespace: SeaweedFS behind a veth whose host end goes down
in the middle of a batch. The batch fails transient within its timeouts (no hang),
and after the link is back every segment arrives once, byte-identical.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from livecam.segment import file_digest
from livecam.transport import Item, TransientError
from tests.s3.conftest import Bucket
from tests.s3.servers import BUCKET, Seaweed
from tests.s3.test_contract import DAY, segment
from tests.transports.servers import NetNs

pytestmark = pytest.mark.slow


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[tuple[Bucket, NetNs]]:
    netns = NetNs("lcs3-link", subnet="10.77.14")
    server = Seaweed(tmp_path / "weed", host=netns.ns_ip, netns=netns.name)
    try:
        netns.shape(50, burst="128kb")  # slow enough that segments are in flight at the cut
        server.start()
        server.client().create_bucket(Bucket=BUCKET)
        yield Bucket(server, tmp_path), netns
    finally:
        netns.link(up=True)
        server.stop()
        netns.remove()


def test_link_cut_mid_batch_then_restored(linked, tmp_path):
    bucket, netns = linked
    t = bucket.transport(timeout=3)
    segs = [segment(tmp_path, i, 1_000_000) for i in range(1, 21)]
    items = [Item(s, f"{DAY}/{s.name}", s.stat().st_size, file_digest(s)) for s in segs]
    done = []
    t0 = time.monotonic()
    with pytest.raises(TransientError):
        for item, _sent in t.publish_batch(items):
            done.append(item)
            if len(done) == 2:
                netns.link(up=False)
                t0 = time.monotonic()
    failed_after = time.monotonic() - t0
    assert 2 <= len(done) < len(items)
    # Read timeout 3 s per wait, a segment's share of the link: never a hang.
    assert failed_after < 40, failed_after
    netns.link(up=True)
    again = dict((i.remote, sent) for i, sent in t.publish_batch(items))
    assert len(again) == len(items)
    assert not any(again[i.remote] for i in done)
    objects = bucket.objects()
    for item in items:
        assert objects[item.remote] == item.size
        assert hashlib.sha256(bucket.read(item.remote)).hexdigest() == item.digest
