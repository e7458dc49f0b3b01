"""The `nfs` transport against real mounts: tmpfs shares, a bare mountpoint, full, read-only."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from livecam_plugins.nfs import DirectoryTransport, NfsTransport

from livecam.segment import file_digest
from livecam.transport import ConflictError, PermanentError, TransientError
from tests.core.node import Share, sh


@pytest.fixture
def share(tmp_path):
    s = Share(tmp_path / "nas", size="4M")
    yield s
    s.close()


@pytest.fixture
def segment(tmp_path) -> Path:
    path = tmp_path / "cam0-20261126T120000Z-000001.mp4"
    path.write_bytes(os.urandom(300_000))
    return path


def nfs(path: Path, fstypes=("tmpfs",), timeout: float = 10) -> NfsTransport:
    return NfsTransport({"path": path, "fstypes": list(fstypes)}, timeout=timeout)


def publish(transport, segment: Path, remote: str = "lab/node01/cam0/x.mp4") -> bool:
    return transport.publish(
        segment, remote, size=segment.stat().st_size, digest=file_digest(segment)
    )


def test_publishes_atomically_and_answers_already_there(share, segment):
    t = nfs(share.mnt)
    assert publish(t, segment) is True
    target = share.store / "lab/node01/cam0/x.mp4"
    assert target.read_bytes() == segment.read_bytes()
    assert not share.hidden(), "no temp file is left"
    # A retry after a crash between rename and local delete sends nothing.
    mtime = target.stat().st_mtime_ns
    assert publish(t, segment) is False
    assert target.stat().st_mtime_ns == mtime


def test_other_content_under_the_same_name_is_never_overwritten(share, segment, tmp_path):
    t = nfs(share.mnt)
    other = tmp_path / "other.mp4"
    other.write_bytes(b"x" * 1000)
    publish(t, other)
    with pytest.raises(ConflictError, match="already exists with other content") as err:
        publish(t, segment)
    assert err.value.remote == "lab/node01/cam0/x.mp4" and err.value.permanent
    assert (share.store / "lab/node01/cam0/x.mp4").read_bytes() == b"x" * 1000


def test_unmounted_share_is_refused_and_nothing_lands_on_local_disk(share, segment):
    share.unmount()
    with pytest.raises(TransientError, match="not on a mounted tmpfs share"):
        publish(nfs(share.mnt), segment)
    assert os.listdir(share.mnt) == []


def test_wrong_filesystem_type_is_refused(tmp_path, segment):
    target = tmp_path / "plain"
    target.mkdir()
    with pytest.raises(TransientError, match="not on a mounted nfs/nfs4 share"):
        publish(nfs(target, fstypes=("nfs", "nfs4")), segment)
    assert os.listdir(target) == []


def test_full_share_is_permanent_and_leaves_no_partial(share, segment, tmp_path):
    big = tmp_path / "big.mp4"
    big.write_bytes(os.urandom(5_000_000))  # larger than the 4M share
    with pytest.raises(PermanentError, match="No space left"):
        publish(nfs(share.mnt), big)
    assert not share.hidden() and not share.segments()
    assert publish(nfs(share.mnt), segment) is True  # room for a smaller one still


def test_read_only_share_is_permanent(share, segment):
    sh("mount", "-o", "remount,bind,ro", str(share.mnt))
    with pytest.raises(PermanentError, match="Read-only"):
        publish(nfs(share.mnt), segment)
    sh("mount", "-o", "remount,bind,rw", str(share.mnt))
    assert publish(nfs(share.mnt), segment) is True


def test_a_hung_copy_is_cut_off_by_the_timeout(share, segment, tmp_path):
    # A FIFO in place of the local file blocks the copy helper forever, as a hung
    # hard mount would; the transport must give up at its timeout, not hang.
    fifo = tmp_path / "blocked.mp4"
    os.mkfifo(fifo)
    t = nfs(share.mnt, timeout=1.5)
    with pytest.raises(TransientError, match=r"timed out after 1\.5s"):
        t.publish(fifo, "lab/x.mp4", size=10, digest="0" * 64)
    helpers = subprocess.run(["pgrep", "-f", str(fifo)], capture_output=True, text=True).stdout
    assert not helpers.strip(), "the stuck helper was killed"


def test_local_transport_creates_its_directory(tmp_path, segment):
    t = DirectoryTransport({"path": tmp_path / "new" / "target"}, timeout=10)
    assert publish(t, segment, "a/b.mp4") is True
    assert (tmp_path / "new/target/a/b.mp4").read_bytes() == segment.read_bytes()
