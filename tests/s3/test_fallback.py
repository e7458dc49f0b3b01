"""The HEAD-then-PUT fallback, against a real server chain that does not honour
``If-None-Match``: ``strip_proxy.StripProxy`` in front of each object store.

The probe finds the header is not honoured, ``check-config --online`` and the
shipper's log say so, and publish then HEADs before a plain PUT: it still never
replaces other content under a segment's name (ConflictError) and still answers
"already there". The race the fallback cannot close (a writer between the HEAD and
the PUT) is shown as well.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from livecam.storage.files import file_digest
from livecam.transport import ConflictError, TransientError
from tests.core.node import Node, wait_for
from tests.s3.conftest import Bucket
from tests.s3.servers import BUCKET, NODE
from tests.s3.strip_proxy import StripProxy
from tests.s3.test_contract import DAY, publish, segment, sent_requests, sha
from tests.transports.test_check_config import config

NOT_HONOURED = "If-None-Match NOT honoured: HEAD-then-PUT, racy between writers"


@pytest.fixture
def proxy(bucket: Bucket) -> Iterator[StripProxy]:
    p = StripProxy(bucket.server.endpoint, NODE)
    yield p
    p.close()


def test_probe_finds_the_header_not_honoured(bucket, proxy):
    t = bucket.transport(endpoint=proxy.endpoint)
    where = t.online()
    assert proxy.stripped >= 1  # the probe's conditional PUTs reached the proxy
    assert t.conditional is False
    assert NOT_HONOURED in where, where
    assert NODE[1] not in where


def test_fallback_heads_puts_answers_already_there_and_never_overwrites(bucket, proxy, tmp_path):
    t = bucket.transport(endpoint=proxy.endpoint)
    sent = sent_requests(t)
    assert t.conditional is False
    seg = segment(tmp_path)
    key = f"{DAY}/{seg.name}"
    assert publish(t, seg) is True
    assert sent[:2] == ["HeadObject", "PutObject"], sent  # the HEAD first, then plain
    assert sha(bucket.read(key)) == file_digest(seg)
    assert publish(t, seg) is False  # already there: same SHA-256
    assert sent.count("PutObject") == 1
    first = bucket.read(key)
    seg.write_bytes(os.urandom(300_000))
    with pytest.raises(ConflictError, match="other content"):
        publish(t, seg)
    assert sent.count("PutObject") == 1  # the HEAD found it: no PUT was sent
    assert bucket.read(key) == first


def test_the_documented_race_a_writer_between_head_and_put(bucket, proxy, tmp_path, monkeypatch):
    """What docs/transports.md warns of: without conditional writes, a writer that
    stores the key between the node's HEAD and its PUT is replaced."""
    from livecam_plugins.s3 import S3Store

    t = bucket.transport(endpoint=proxy.endpoint)
    t.stores(1)
    seg = segment(tmp_path)
    real_size = S3Store.size

    def size(store, remote):
        found = real_size(store, remote)  # missing
        bucket.server.client().put_object(Bucket=BUCKET, Key=store.key(remote), Body=b"other")
        return found

    monkeypatch.setattr(S3Store, "size", size)
    assert publish(t, seg) is True
    assert sha(bucket.read(f"{DAY}/{seg.name}")) == file_digest(seg)  # "other" is gone


def test_check_config_online_and_the_shipper_say_not_honoured(bucket, proxy, tmp_path, run_livecam):
    opts = bucket.options(endpoint=proxy.endpoint)
    result = run_livecam("-c", config(tmp_path, opts), "check-config")
    assert result.returncode == 0, result.stderr
    assert NOT_HONOURED not in result.stdout, "without --online it asks nothing"
    result = run_livecam("-c", config(tmp_path, opts), "check-config", "--online")
    assert result.returncode == 0, result.stderr
    assert f"  online: s3 {proxy.endpoint}" in result.stdout, result.stdout
    assert NOT_HONOURED in result.stdout, result.stdout
    # The shipper logs it at its first connection (its first segment).
    node = Node(tmp_path / "node", opts)
    try:
        proc = node.start("run")
        wait_for(lambda: NOT_HONOURED in node.log_text(), 60, "the shipper logged the probe")
        assert node.stop(proc) == 0
    finally:
        node.cleanup()


def test_a_body_changed_on_the_way_is_refused_by_the_server(bucket, tmp_path):
    """The payload goes unsigned: the signed Content-MD5 and x-amz-checksum-sha256
    headers are what bind it. A proxy that changes one byte of the body (and signs
    what it sends) gets the PUT refused: transient, nothing stored; then it arrives."""
    proxy = StripProxy(bucket.server.endpoint, NODE, strip=False)
    try:
        t = bucket.transport(endpoint=proxy.endpoint)
        assert "conditional writes honoured" in t.online() and t.conditional is True
        seg = segment(tmp_path)
        proxy.corrupt = True
        with pytest.raises(TransientError, match=r"BadDigest|XAmzContentChecksumMismatch"):
            publish(t, seg)
        assert proxy.corrupted == 1
        assert f"{DAY}/{seg.name}" not in bucket.objects()
        proxy.corrupt = False
        assert publish(t, seg) is True
        assert sha(bucket.read(f"{DAY}/{seg.name}")) == file_digest(seg)
    finally:
        proxy.close()
