"""A link cut in a network namespace, in front of each object store, in the middle of a
batch. The batch fails transient within its timeouts (no hang), no object is ever
visible partly written, and after the link is back every segment arrives once,
byte-identical.

SeaweedFS runs inside the namespace, behind the veth. RGW's mon and OSD listen on
loopback only, so a second radosgw of the session's cluster listens on the host end
of the veth and a plain TCP forwarder (``forward.py``) in the namespace passes the
node's connections to it: the node's bytes cross the veth twice, and cutting the
veth cuts the node from RGW; the admin still lists the bucket directly meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from livecam.storage.files import file_digest
from livecam.transport import Item, TransientError
from tests.s3.conftest import Bucket
from tests.s3.servers import BUCKET, Seaweed, end, free_ports
from tests.s3.test_contract import DAY, segment
from tests.transports.servers import NetNs

pytestmark = pytest.mark.slow

FORWARD = Path(__file__).with_name("forward.py")


@pytest.fixture
def linked(tmp_path: Path) -> Iterator[tuple[Bucket, NetNs, str]]:
    netns = NetNs("lcs3-link", subnet="10.77.14")
    server = Seaweed(tmp_path / "weed", host=netns.ns_ip, netns=netns.name)
    try:
        netns.shape(50, burst="128kb")  # slow enough that segments are in flight at the cut
        server.start()
        server.client().create_bucket(Bucket=BUCKET)
        yield Bucket(server, tmp_path), netns, server.endpoint
    finally:
        netns.link(up=True)
        server.stop()
        netns.remove()


@pytest.fixture
def rgw_linked(bucket: Bucket) -> Iterator[tuple[Bucket, NetNs, str]]:
    if bucket.server.kind != "rgw":
        pytest.skip("SeaweedFS runs inside the namespace: test_link_cut_mid_batch_then_restored")
    netns = NetNs("lcs3-rgwlink", subnet="10.77.41")
    gateway = forward = None
    try:
        netns.shape(50, burst="128kb")
        (port,) = free_ports(1)
        gateway = bucket.server.gateway(netns.host_ip, port)  # type: ignore[union-attr]
        forward = subprocess.Popen(
            ["ip", "netns", "exec", netns.name, sys.executable, str(FORWARD),
             netns.ns_ip, str(port), netns.host_ip, str(port)],
            start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection((netns.ns_ip, port), timeout=1):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield bucket, netns, f"http://{netns.ns_ip}:{port}"
    finally:
        netns.link(up=True)
        end(forward)
        end(gateway)
        netns.remove()


def whole(bucket: Bucket, items: list[Item]) -> dict[str, int]:
    """What the bucket lists now; asserts each listed segment is whole and identical."""
    by_remote = {i.remote: i for i in items}
    objects = {k: v for k, v in bucket.objects().items() if k in by_remote}
    for key, size in objects.items():
        assert size == by_remote[key].size, key
        assert hashlib.sha256(bucket.read(key)).hexdigest() == by_remote[key].digest
    return objects


def cut_mid_batch(
    bucket: Bucket, netns: NetNs, endpoint: str, tmp_path: Path
) -> tuple[list[Item], list[Item], Any]:
    """Cut the link after two segments of a batch: (items, those yielded, transport)."""
    t = bucket.transport(timeout=3, endpoint=endpoint)
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
    return items, done, t


def restore_and_finish(
    bucket: Bucket, netns: NetNs, items: list[Item], done: list[Item], t: Any
) -> None:
    netns.link(up=True)
    again = dict((i.remote, sent) for i, sent in t.publish_batch(items))
    assert len(again) == len(items)
    assert not any(again[i.remote] for i in done)
    assert set(whole(bucket, items)) == {i.remote for i in items}


# Lists the bucket from inside the namespace (the host is cut off): key -> [size, sha256].
LIST_INSIDE = """
import hashlib, json, sys
sys.path.insert(0, sys.argv[3])
from tests.s3.servers import ADMIN, BUCKET, Seaweed
server = Seaweed.__new__(Seaweed)
server.endpoint = sys.argv[1]
client = server.client(ADMIN)
out = {}
for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=sys.argv[2]):
    for obj in page.get("Contents", []):
        body = client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()
        out[obj["Key"][len(sys.argv[2]):]] = [obj["Size"], hashlib.sha256(body).hexdigest()]
print(json.dumps(out))
"""


def test_link_cut_mid_batch_then_restored(linked, tmp_path):
    bucket, netns, endpoint = linked
    items, done, t = cut_mid_batch(bucket, netns, endpoint, tmp_path)
    # During the outage, seen from inside the namespace: every segment the batch
    # yielded is there, and every object visible is whole.
    time.sleep(2)
    listed = subprocess.run(
        ["ip", "netns", "exec", netns.name, sys.executable, "-c", LIST_INSIDE, endpoint,
         bucket.prefix + "/", str(Path(__file__).resolve().parents[2])],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    inside = json.loads(listed.stdout)
    by_remote = {i.remote: i for i in items}
    assert {i.remote for i in done} <= set(inside)
    for key, (size, digest) in inside.items():
        if key in by_remote:
            assert (size, digest) == (by_remote[key].size, by_remote[key].digest), key
    restore_and_finish(bucket, netns, items, done, t)


def test_link_cut_in_front_of_rgw_mid_batch_then_restored(rgw_linked, tmp_path):
    bucket, netns, endpoint = rgw_linked
    items, done, t = cut_mid_batch(bucket, netns, endpoint, tmp_path)
    # During the outage (the admin reaches RGW directly): every segment the batch
    # yielded is there, and every object visible is whole (one whose last bytes
    # passed before the cut may be there too, whole; none in part).
    time.sleep(2)
    assert {i.remote for i in done} <= set(whole(bucket, items))
    restore_and_finish(bucket, netns, items, done, t)
