"""The transport contract for ``s3``, against real SeaweedFS and Ceph RGW on loopback.

Each test publishes the way the shipper does, then looks at the bucket with the
admin's credentials: what arrived, byte for byte, and that nothing was replaced.
Failures are real: the server killed mid-batch and started again, a wrong secret,
a missing bucket, a server that is not there.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from livecam.options import ConfigError
from livecam.storage.files import file_digest
from livecam.transport import ConflictError, Item, PermanentError, TransientError
from tests.s3.conftest import set_policy
from tests.s3.servers import ADMIN, BUCKET, LOCKED, NODE, free_ports

NAME = "cam0-20261126T121530Z-{:06d}.mp4"
DAY = "lab/node01/cam0/2026-11-26"


def segment(tmp_path: Path, seq: int = 1, size: int = 300_000) -> Path:
    path = tmp_path / NAME.format(seq)
    path.write_bytes(os.urandom(size))
    return path


def publish(t, local: Path, remote: str | None = None) -> bool:
    remote = remote or f"{DAY}/{local.name}"
    return t.publish(local, remote, size=local.stat().st_size, digest=file_digest(local))


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sent_requests(t) -> list[str]:
    """The names of the S3 operations ``t``'s client sends from now on."""
    (store,) = t.stores(1)
    names: list[str] = []
    store.client.meta.events.register(
        "before-send.s3", lambda request, **kw: names.append(kw["event_name"].split(".")[-1])
    )
    return names


def test_publishes_once_and_answers_already_there(bucket, tmp_path):
    t = bucket.transport()
    sent = sent_requests(t)
    seg = segment(tmp_path)
    assert publish(t, seg) is True
    assert sent == ["PutObject"], sent  # the conditional PUT alone: no HEAD first
    key = f"{DAY}/{seg.name}"
    assert bucket.objects()[key] == seg.stat().st_size
    assert sha(bucket.read(key)) == file_digest(seg)
    # SeaweedFS keeps the SHA-256 the PUT carried (what "already there" compares);
    # RGW 16 keeps none, so "already there" reads the object back.
    head = bucket.server.client(NODE).head_object(
        Bucket=BUCKET, Key=f"{bucket.prefix}/{key}", ChecksumMode="ENABLED"
    )
    assert bool(head.get("ChecksumSHA256")) == (bucket.server.kind == "seaweedfs")
    assert publish(t, seg) is False  # a retry after a crash before the local delete
    assert publish(bucket.transport(), seg) is False  # a restarted shipper
    assert set(bucket.objects()) == {".livecam-probe", key}


def test_check_config_says_conditional_writes_are_honoured(bucket):
    t = bucket.transport()
    assert t.conditional is None and "honoured" not in t.describe()  # a query: no request
    where = t.online()
    assert t.conditional is True
    assert "conditional writes honoured" in where, where
    assert NODE[1] not in where


def test_never_overwrites_other_content(bucket, tmp_path):
    t = bucket.transport()
    seg = segment(tmp_path)
    publish(t, seg)
    key = f"{DAY}/{seg.name}"
    first = bucket.read(key)
    seg.write_bytes(os.urandom(300_000))
    with pytest.raises(ConflictError, match="other content") as err:
        publish(t, seg)
    assert err.value.remote == key
    assert bucket.read(key) == first


def test_a_writer_between_head_and_put_is_not_overwritten(bucket, tmp_path, monkeypatch):
    """The conditional PUT itself refuses (412): another writer stores the key just
    before the node's PUT arrives (with conditional writes there is no HEAD first)."""
    from livecam_plugins.s3 import S3Store

    t = bucket.transport()
    sent = sent_requests(t)  # connected and probed before the race is staged
    seg = segment(tmp_path)
    key = f"{DAY}/{seg.name}"
    other = os.urandom(1000)
    real_put = S3Store.put

    def put(store, item, remote):
        # The other writer (its own client) wins the race right before our PUT.
        bucket.server.client().put_object(Bucket=BUCKET, Key=store.key(remote), Body=other)
        return real_put(store, item, remote)

    monkeypatch.setattr(S3Store, "put", put)
    with pytest.raises(ConflictError):
        publish(t, seg)
    assert sent == ["PutObject", "HeadObject"], sent  # no HEAD first, the refused PUT, a HEAD
    assert bucket.read(key) == other


def test_batch_survives_the_server_killed_and_restarted(bucket, tmp_path):
    t = bucket.transport(timeout=5)
    segs = [segment(tmp_path, i, 1_000_000) for i in range(1, 25)]
    items = [Item(s, f"{DAY}/{s.name}", s.stat().st_size, file_digest(s)) for s in segs]
    done: list[Item] = []
    with pytest.raises(TransientError):
        for item, sent in t.publish_batch(items):
            assert sent
            done.append(item)
            if len(done) == 3:
                bucket.server.stop()
    assert 3 <= len(done) < len(items)
    bucket.server.start()
    # Everything yielded is there, whole; what was in flight is published by the retry.
    again = {i.remote: sent for i, sent in t.publish_batch(items)}
    assert len(again) == len(items)
    assert not any(again[i.remote] for i in done)  # already there: not sent twice
    objects = bucket.objects()
    for item in items:
        assert objects[item.remote] == item.size
        assert sha(bucket.read(item.remote)) == item.digest


def test_a_server_that_is_down_is_transient(bucket, tmp_path):
    (port,) = free_ports(1)
    t = bucket.transport(endpoint=f"http://127.0.0.1:{port}")
    assert f"127.0.0.1:{port}" in t.describe()  # a query: it does not connect
    with pytest.raises(TransientError):
        t.online()
    with pytest.raises(TransientError):
        publish(t, segment(tmp_path))


def test_wrong_secret_is_permanent_and_never_shown(bucket, tmp_path):
    wrong = (NODE[0], "not-the-secret-0123456789")
    t = bucket.transport(creds=wrong)
    with pytest.raises(PermanentError) as err:
        publish(t, segment(tmp_path))
    assert "SignatureDoesNotMatch: signature refused" in str(err.value), err.value
    assert wrong[1] not in str(err.value) and wrong[1] not in t.describe()
    assert not bucket.objects()


def test_unknown_access_key_is_permanent(bucket, tmp_path):
    t = bucket.transport(creds=("lcs3nobody", "whatever-0123456789"))
    with pytest.raises(PermanentError, match=r"InvalidAccessKeyId|AccessDenied"):
        publish(t, segment(tmp_path))


def test_missing_bucket_is_permanent(bucket, tmp_path):
    # A key allowed everywhere hears "no such bucket"; the node's key, limited to its
    # bucket, is refused first (the line says so).
    t = bucket.transport(bucket="lcs3-no-such-bucket", creds=ADMIN)
    with pytest.raises(PermanentError, match="NoSuchBucket: no such bucket"):
        publish(t, segment(tmp_path))
    t = bucket.transport(bucket="lcs3-no-such-bucket")
    with pytest.raises(PermanentError, match=r"AccessDenied: access denied|NoSuchBucket"):
        publish(t, segment(tmp_path))


def test_secret_file_readable_by_others_is_refused(bucket):
    opts = bucket.options()
    Path(opts["secret_access_key_file"]).chmod(0o640)
    with pytest.raises(ConfigError, match=r"transport.secret_access_key_file: .* chmod 600"):
        bucket.transport()


def test_node_credentials_cannot_delete_or_overwrite(bucket, tmp_path):
    """With the documented bucket policy (Deny s3:DeleteObject), the node's own key
    can neither delete a segment nor replace it with a conditional PUT."""
    set_policy(bucket.server, deny_delete=True)
    try:
        seg = segment(tmp_path)
        assert publish(bucket.transport(), seg) is True
        key = f"{bucket.prefix}/{DAY}/{seg.name}"
        node = bucket.server.client(NODE)
        with pytest.raises(Exception, match="AccessDenied"):
            node.delete_object(Bucket=BUCKET, Key=key)
        with pytest.raises(Exception, match="PreconditionFailed"):
            node.put_object(Bucket=BUCKET, Key=key, Body=b"forged", IfNoneMatch="*")
        assert sha(bucket.read(f"{DAY}/{seg.name}")) == file_digest(seg)
    finally:
        set_policy(bucket.server, deny_delete=False)


def test_the_policy_that_refuses_unconditional_puts_is_not_evaluated(bucket, tmp_path):
    """AWS refuses a PUT without If-None-Match under a Deny on ``Null
    s3:if-none-match``. RGW 16 and SeaweedFS 4.48 do not know that condition key, so
    the Deny refuses every PUT, the conditional ones too: on these servers a node's
    key is kept from overwriting history by ``object_lock`` instead (test below)."""
    policy = bucket.server.policy(deny_delete=True)
    policy["Statement"].append({
        "Effect": "Deny", "Principal": {"AWS": ["*"]}, "Action": ["s3:PutObject"],
        "Resource": [f"arn:aws:s3:::{BUCKET}/*"],
        "Condition": {"Null": {"s3:if-none-match": "true"}},
    })  # fmt: skip
    admin, node = bucket.server.client(), bucket.server.client(NODE)
    key = f"{bucket.prefix}/{DAY}/{NAME.format(1)}"
    admin.put_bucket_policy(Bucket=BUCKET, Policy=json.dumps(policy))
    try:
        with pytest.raises(Exception, match="AccessDenied"):
            node.put_object(Bucket=BUCKET, Key=key, Body=b"segment", IfNoneMatch="*")
    finally:
        set_policy(bucket.server, deny_delete=False)
    assert not bucket.objects()
    # Without it (and without object_lock) the node's key replaces an object with a
    # plain PUT, which livecam never sends: this is what object_lock is for.
    node.put_object(Bucket=BUCKET, Key=key, Body=b"segment", IfNoneMatch="*")
    node.put_object(Bucket=BUCKET, Key=key, Body=b"forged")
    assert bucket.read(f"{DAY}/{NAME.format(1)}") == b"forged"


def test_quota_exceeded_is_permanent(bucket, tmp_path):
    if bucket.server.kind != "rgw":
        pytest.skip("SeaweedFS answers InternalError over its quota: test_full.py")
    name = f"lcs3-quota-{bucket.prefix}"
    bucket.server.quota_bucket(name, 1_000_000)
    t = bucket.transport(bucket=name)
    sent = 0
    with pytest.raises(PermanentError, match="QuotaExceeded: quota exceeded") as err:
        for seq in range(1, 10):
            publish(t, segment(tmp_path, seq, 300_000))
            sent += 1
    assert sent == 3, "the quota refused before it was full"
    assert NODE[1] not in str(err.value)


def test_object_lock_keeps_history_from_the_node(bucket, tmp_path):
    """With ``object_lock`` each segment is stored under COMPLIANCE retention: a
    stolen node key that overwrites it without If-None-Match only adds a version,
    and nobody (not even the admin) can remove the segment's version."""
    admin = bucket.server.client()
    if LOCKED not in [b["Name"] for b in admin.list_buckets()["Buckets"]]:
        bucket.server.locked_bucket(LOCKED)
    t = bucket.transport(bucket=LOCKED, object_lock=1)
    seg = segment(tmp_path)
    assert publish(t, seg) is True
    key = f"{bucket.prefix}/{DAY}/{seg.name}"
    node = bucket.server.client(NODE)
    retention = node.get_object_retention(Bucket=LOCKED, Key=key)["Retention"]
    assert retention["Mode"] == "COMPLIANCE"
    assert retention["RetainUntilDate"].timestamp() > time.time() + 23 * 3600
    node.put_object(Bucket=LOCKED, Key=key, Body=b"forged")  # what a stolen key could do
    versions = admin.list_object_versions(Bucket=LOCKED, Prefix=key)["Versions"]
    assert len(versions) == 2
    original = next(v for v in versions if not v["IsLatest"])
    for who in (node, admin):
        with pytest.raises(Exception, match="AccessDenied"):
            who.delete_object(Bucket=LOCKED, Key=key, VersionId=original["VersionId"])
    body = node.get_object(Bucket=LOCKED, Key=key, VersionId=original["VersionId"])["Body"]
    assert sha(body.read()) == file_digest(seg)
