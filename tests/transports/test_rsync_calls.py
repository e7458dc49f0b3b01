"""rsync calls against the real rrsync account: what docs/transports.md promises of
one call's outcome (rsync section, "How it works under rrsync -wo", and Errors).

- exit 23/24 (some files failed): the others are proved at once, only the failed
  ones stay;
- the whole-call limit is ``timeout`` times the segments in it, so a batch slower
  than one segment's ``timeout`` still goes through;
- a call is sized from the last one, at most twice it, and a batch starts small
  after a pause;
- "rrsync refused" the request: a permanent error, nothing written;
- the ssh control directory is private (0700), and a dead shipper's is removed
  only when no master answers its socket.
"""

from __future__ import annotations

import socket
import stat
import subprocess
import time

import pytest
from livecam_plugins.rsync import RsyncTransport, pacer

from livecam.transport import PermanentError, TransientError
from tests.conftest import sha256
from tests.transports import servers
from tests.transports.conftest import backlog

RSYNC = pytest.mark.parametrize("nas", ["rsync"], indirect=True)


@RSYNC
def test_exit_23_proves_the_others_at_once_and_only_the_failed_one_stays(nas, tmp_path):
    t = nas.transport()
    items = backlog(tmp_path, 8)
    gone = items[3]
    gone.local.unlink()  # evicted after the shipper picked the batch
    yielded = []
    with pytest.raises(TransientError) as err:
        for item, sent in t.publish_batch(items):
            yielded.append((item, sent))
    assert "(code 23)" in str(err.value), err.value  # rsync's partial-transfer exit
    others = [i for i in items if i is not gone]
    assert sorted(i.local for i, _ in yielded) == sorted(i.local for i in others)
    assert all(sent for _, sent in yielded)
    got = nas.segments()
    assert sorted(got) == sorted(i.local.name for i in others)
    for item in others:
        assert sha256(got[item.local.name]) == sha256(item.local)
    assert not nas.hidden()


@RSYNC
def test_a_batch_slower_than_one_segments_timeout_still_goes(nas, tmp_path):
    """Three 1 MB segments at 500 KiB/s take about 6 s in one call; the per-segment
    ``timeout`` is 4 s, the call's limit 3 x 4 s."""
    nas.raw = {**nas.raw, "bwlimit": 500}
    t = nas.transport(timeout=4)
    items = backlog(tmp_path, 3, size=1_000_000)
    t0 = time.monotonic()
    done = list(t.publish_batch(items))
    seconds = time.monotonic() - t0
    assert seconds > 4, seconds  # the call outlived one segment's timeout ...
    assert sorted(i.local for i, _ in done) == sorted(i.local for i in items)  # ... and went
    assert all(sent for _, sent in done)
    got = nas.segments()
    for item in items:
        assert sha256(got[item.local.name]) == sha256(item.local)


@RSYNC
def test_a_call_is_sized_from_the_last_and_starts_small_after_a_pause(nas, tmp_path):
    """``batch_limit``: one segment (0) before any call and again after a pause (the
    hold after a return); a call after one that took under MEASURED seconds carries at
    most twice what that one sent, however fast the link looked (loopback allows far
    more in 3 s), and a batch is several calls."""
    t = nas.transport()
    assert t.batch_limit() == 0
    items = backlog(tmp_path, 2, size=200_000)
    assert len(list(t.publish_batch(items))) == 2
    assert 0 < t._pacer.call_limit() <= 2 * 200_000 * 2
    assert t.batch_limit() > 2 * t._pacer.call_limit()
    assert pacer.CALL_SECONDS <= t._pacer.call_seconds <= pacer.CALL_MAX_SECONDS
    time.sleep(pacer.PAUSE + 0.5)
    assert t.batch_limit() == 0


@RSYNC
def test_rrsync_refusing_the_request_is_permanent_and_writes_nothing(nas, tmp_path):
    """The NAS's key restricted read-only (``rrsync -ro``, a slip on the NAS): rrsync
    refuses the upload; that needs a person, so it is permanent."""
    keys = nas.server.dir / "authorized_keys" / servers.RSYNC_USER
    wo = keys.read_text()
    keys.write_text(wo.replace(f"rrsync {servers.RRSYNC_OPTIONS} ", "rrsync -ro "))
    assert keys.read_text() != wo
    (item,) = backlog(tmp_path, 1)
    try:
        t = nas.transport()
        with pytest.raises(PermanentError, match="rrsync refused") as err:
            t.publish(item.local, item.remote, size=item.size, digest=item.digest)
        assert "\n" not in str(err.value)
        assert "not allowed" in str(err.value), err.value  # rrsync's own words
        assert not nas.segments() and not nas.hidden()
    finally:
        keys.write_text(wo)
    # The key fixed on the NAS: the same segment goes.
    assert nas.transport().publish(item.local, item.remote, size=item.size, digest=item.digest)
    assert sha256(nas.segments()[item.local.name]) == sha256(item.local)


def test_the_control_dir_is_private_and_a_master_that_answers_is_kept(tmp_path, monkeypatch):
    """A shipper's control directory is 0700. A directory left by a dead shipper is
    removed only when no master answers its socket (a master outlives its shipper
    for ``control_persist``): one with a listening socket stays."""
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    answering = tmp_path / f"livecam-ssh-{dead.pid}-a"
    silent = tmp_path / f"livecam-ssh-{dead.pid}-s"
    for d in (answering, silent):
        d.mkdir(mode=0o700)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(answering / "master"))
    listener.listen()
    gone = socket.socket(socket.AF_UNIX)  # a socket file nobody listens on any more
    gone.bind(str(silent / "master"))
    gone.close()
    try:
        opts = {
            "host": "h", "port": 22, "user": "u", "path": ".", "identity_file": "k",
            "known_hosts_file": "kh", "bwlimit": 0, "compress": False, "control_persist": 300,
        }  # fmt: skip
        t = RsyncTransport(opts, timeout=5)
        mine = t._control.path()
        assert mine.parent == tmp_path and stat.S_IMODE(mine.stat().st_mode) == 0o700
        assert answering.exists() and not silent.exists()
        t.close()
    finally:
        listener.close()
