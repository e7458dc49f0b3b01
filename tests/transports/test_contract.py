"""The transport contract, for rsync, sftp and smb, against real servers on loopback.

Each test calls ``publish`` the way the shipper does and then looks at the
server's own disk: what arrived, byte for byte, and that no partial file was
ever left under a final name. Failures are made for real: the server killed,
its host key replaced, the key or password refused, the target read-only or full.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from livecam.storage.files import file_digest
from livecam.transport import ConflictError, PermanentError, TransientError
from tests.conftest import sha256
from tests.transports import servers
from tests.transports.conftest import Attempt

NAME = "cam0-20261126T121530Z-{:06d}.mp4"


def segment(tmp_path: Path, seq: int = 1, size: int = 300_000) -> Path:
    path = tmp_path / NAME.format(seq)
    path.write_bytes(os.urandom(size))
    return path


def publish(t, local: Path, remote: str | None = None) -> bool:
    remote = remote or f"lab/node01/cam0/2026-11-26/{local.name}"
    return t.publish(local, remote, size=local.stat().st_size, digest=file_digest(local))


def test_publishes_once_and_answers_already_there(nas, tmp_path):
    t = nas.transport()
    seg = segment(tmp_path)
    assert publish(t, seg) is True
    arrived = nas.segments()
    assert list(arrived) == [seg.name]
    assert sha256(arrived[seg.name]) == sha256(seg)
    assert arrived[seg.name].parent == nas.store / "lab/node01/cam0/2026-11-26"
    # A retry after a crash between the remote rename and the local delete.
    assert publish(t, seg) is False
    # A new connection (a restarted shipper) gives the same answer.
    assert publish(nas.transport(), seg) is False
    assert not nas.hidden()


def test_never_overwrites_other_content(nas, tmp_path):
    t = nas.transport()
    seg = segment(tmp_path)
    publish(t, seg)
    first = sha256(nas.segments()[seg.name])
    seg.write_bytes(os.urandom(300_000))
    with pytest.raises(ConflictError, match="other content") as err:
        publish(t, seg)
    assert err.value.remote == f"lab/node01/cam0/2026-11-26/{seg.name}"
    assert sha256(nas.segments()[seg.name]) == first


def logins(nas) -> Callable[[], int]:
    """A function counting the logons the server accepted from the node so far, from
    the server's own log: sshd's "Accepted publickey" lines, smbd's auth audit lines."""
    mark = f"Accepted publickey for {nas.user}" if nas.kind != "smb" else "Auth: [SMB2"
    log = nas.server.log
    before = log.read_text(errors="replace").count(mark)
    return lambda: log.read_text(errors="replace").count(mark) - before


def test_backlog_over_one_connection(nas, tmp_path):
    t = nas.transport()
    segs = [segment(tmp_path, i, 50_000) for i in range(30)]
    connections = logins(nas)
    assert all(publish(t, s) for s in segs)
    got = nas.segments()
    assert sorted(got) == sorted(s.name for s in segs)
    assert all(sha256(got[s.name]) == sha256(s) for s in segs)
    # One connection for the backlog, not one (and a handshake) per file; what a
    # file costs over it is measured by bench/transports.py.
    assert connections() == 1


def test_server_down_is_transient_and_heals(nas, tmp_path):
    t = nas.transport(timeout=20)
    publish(t, segment(tmp_path, 1))
    nas.server.stop()  # the NAS crashes: established connections die with it
    seg = segment(tmp_path, 2)
    t0 = time.monotonic()
    with pytest.raises(TransientError):
        publish(t, seg)
    assert time.monotonic() - t0 < 15
    nas.server.start()
    assert publish(t, seg) is True
    assert sha256(nas.segments()[seg.name]) == sha256(seg)
    assert not nas.hidden()


@pytest.mark.parametrize("nas", ["rsync", "sftp"], indirect=True)
def test_changed_host_key_is_permanent_until_pinned_again(nas, tmp_path):
    seg = segment(tmp_path)
    nas.server.change_host_key()
    try:
        with pytest.raises(PermanentError, match=r"(?i)host key"):
            publish(nas.transport(), seg)
        assert not nas.segments()
    finally:
        nas.server.pin_host_key()  # the admin checked the new fingerprint
    assert publish(nas.transport(), seg) is True


def refuse_login(nas) -> tuple[Path, str]:
    """Make the server refuse this node; returns what to restore."""
    if nas.kind == "smb":
        path = nas.server.password_file
        old = path.read_text()
        path.write_text("not-the-password\n")
    else:
        path = nas.server.dir / "authorized_keys" / nas.user
        old = path.read_text()
        path.write_text("")
    return path, old


def test_refused_login_is_permanent_and_secret_free(nas, tmp_path):
    seg = segment(tmp_path)
    path, old = refuse_login(nas)
    try:
        with pytest.raises(PermanentError) as err:
            publish(nas.transport(), seg)
        assert servers.SMB_PASSWORD not in str(err.value)
        assert "not-the-password" not in str(err.value)
        assert not nas.segments()
    finally:
        path.write_text(old)
    assert publish(nas.transport(), seg) is True


def test_read_only_target_is_permanent_and_heals(nas, tmp_path):
    seg = segment(tmp_path)
    with servers.tmpfs(nas.store, "16M", user=nas.user, read_only=True):
        t = nas.transport()
        with pytest.raises(PermanentError, match=r"(?i)read-only|permission|denied"):
            publish(t, seg)
        servers.remount(nas.store, "rw")
        assert publish(t, seg) is True
        assert sha256(nas.segments()[seg.name]) == sha256(seg)


def test_full_target_is_permanent_leaves_no_partial_and_heals(nas, tmp_path):
    seg = segment(tmp_path, size=3_000_000)
    with servers.tmpfs(nas.store, "1M", user=nas.user):
        t = nas.transport()
        with pytest.raises(PermanentError, match=r"(?i)space|full"):
            publish(t, seg)
        assert not nas.segments()
        servers.remount(nas.store, "size=16M")
        assert publish(t, seg) is True
        assert sha256(nas.segments()[seg.name]) == sha256(seg)
        assert not nas.hidden()


@pytest.mark.parametrize("nas", ["sftp", "smb"], indirect=True)
def test_a_hung_server_fails_the_attempt_instead_of_hanging(nas, tmp_path):
    # A server that stops answering (SIGSTOP: the TCP connection stays up, as with
    # a NAS frozen on a dead disk) must fail the attempt as transient in bounded
    # time: smb at its timeout (the watchdog), sftp at its channel read timeout.
    t = nas.transport(timeout=3)
    assert publish(t, segment(tmp_path, 1)) is True  # the connection is up and reused
    frozen = [nas.server.proc.pid, *servers.descendants(nas.server.proc.pid)]
    seg = segment(tmp_path, 2)
    try:
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        attempt = Attempt(lambda: publish(t, seg))
        attempt.failed_transient(timeout=60)
        if nas.kind == "smb":
            assert "within the timeout" in str(attempt.error), attempt.error
    finally:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert publish(t, seg) is True  # heals once the server answers again
    assert sha256(nas.segments()[seg.name]) == sha256(seg)
