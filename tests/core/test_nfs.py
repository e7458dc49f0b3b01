"""The `nfs` transport against real mounts: tmpfs shares, a bare mountpoint, full, read-only."""

from __future__ import annotations

import errno
import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
from livecam_plugins.nfs import DirectoryTransport, NfsTransport

from livecam.storage.files import file_digest
from livecam.storage.state import pid_alive
from livecam.transport import ConflictError, Item, PermanentError, TransientError, dirstore
from livecam.transport.dirstore import DirStore, DirTemp, open_root
from livecam.transport.protocol import publish as run_protocol
from tests.core.node import Share, sh, wait_for


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


def helpers() -> set[int]:
    """Live child processes of this test process running the nfs copy helper."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == os.getpid() and any(a.endswith(b"_nfs_child.py") for a in argv):
            found.add(int(entry))
    return found


def test_a_hung_copy_is_cut_off_by_the_timeout(share, segment, tmp_path):
    # A FIFO in place of the local file blocks the copy helper forever, as a hung
    # hard mount would; the transport must give up at its timeout, not hang.
    fifo = tmp_path / "blocked.mp4"
    os.mkfifo(fifo)
    t = nfs(share.mnt, timeout=1.5)
    seen: set[int] = set()
    publishing = threading.Event()
    publishing.set()

    def watch() -> None:
        while publishing.is_set():
            seen.update(helpers())
            time.sleep(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with pytest.raises(TransientError, match=r"timed out after 1\.5s"):
            t.publish(fifo, "lab/x.mp4", size=10, digest="0" * 64)
    finally:
        publishing.clear()
        watcher.join()
    assert seen, "the helper was seen running while the copy hung"
    assert not [pid for pid in seen if pid_alive(pid)], "the stuck helper was killed"
    assert not share.hidden(), "the temp of the cut-off copy was removed"


def plant_before_rename(monkeypatch, target: Path, content: bytes) -> list[Path]:
    """Wrap DirTemp.rename: write ``content`` at ``target`` just before the real one."""
    planted: list[Path] = []
    real = DirTemp.rename

    def rename(self, remote: str) -> None:
        target.write_bytes(content)
        planted.append(target)
        real(self, remote)

    monkeypatch.setattr(DirTemp, "rename", rename)
    return planted


def publish_in_process(share: Share, segment: Path, remote: str) -> bool:
    """The protocol with the directory store, as the helper process runs it."""
    fd = open_root(str(share.mnt), ["tmpfs"])
    try:
        store = DirStore(fd, str(share.mnt))
        item = Item(segment, remote, segment.stat().st_size, file_digest(segment))
        return run_protocol(store, item)
    finally:
        os.close(fd)


@pytest.mark.parametrize("links", [True, False], ids=["link", "renameat2"])
def test_a_file_planted_before_the_final_step_is_never_replaced(share, segment, monkeypatch, links):
    if not links:  # a filesystem without hard links (FAT): RENAME_NOREPLACE instead

        def no_link(*args, **kw):
            raise OSError(errno.EPERM, "Operation not permitted")

        monkeypatch.setattr(dirstore.os, "link", no_link)
    target = share.store / "lab/x.mp4"
    planted = plant_before_rename(monkeypatch, target, b"theirs")
    with pytest.raises(ConflictError, match="other content") as err:
        publish_in_process(share, segment, "lab/x.mp4")
    assert planted == [target], "the file was planted in the window"
    assert err.value.remote == "lab/x.mp4"
    assert target.read_bytes() == b"theirs", "the planted file was replaced"
    assert not share.hidden(), "the temp was left behind"
    # The same content planted: proven there, not sent again.
    planted.clear()
    target2 = share.store / "lab/y.mp4"
    monkeypatch.undo()
    if not links:
        monkeypatch.setattr(dirstore.os, "link", no_link)
    planted = plant_before_rename(monkeypatch, target2, segment.read_bytes())
    assert publish_in_process(share, segment, "lab/y.mp4") is False
    assert planted and target2.read_bytes() == segment.read_bytes()
    assert not share.hidden()


def test_a_filesystem_that_cannot_refuse_to_replace_is_refused(share, segment, monkeypatch):
    def refuse(*args, **kw):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(dirstore.os, "link", refuse)
    monkeypatch.setattr(dirstore, "RENAME_NOREPLACE", 1 << 30)  # a flag no kernel takes
    with pytest.raises(PermanentError, match="neither hard links nor a rename"):
        publish_in_process(share, segment, "lab/x.mp4")
    assert not share.segments() and not share.hidden()


@pytest.mark.parametrize("remote", ["/abs/x.mp4", "../up/x.mp4", "a/\x07/x.mp4", "a\\b.mp4"])
def test_an_unsafe_remote_path_is_refused(share, segment, remote):
    with pytest.raises(PermanentError, match="unsafe remote path"):
        publish(nfs(share.mnt), segment, remote)
    assert not os.listdir(share.store)


def test_local_transport_creates_its_directory(tmp_path, segment):
    t = DirectoryTransport({"path": tmp_path / "new" / "target"}, timeout=10)
    assert publish(t, segment, "a/b.mp4") is True
    assert (tmp_path / "new/target/a/b.mp4").read_bytes() == segment.read_bytes()


def test_a_short_copy_is_never_renamed_to_the_final_name(share, segment):
    # The local file shrank after its size was taken (a truncated segment, a
    # failing SD card): the size check before the rename must catch it.
    t = nfs(share.mnt)
    size, digest = segment.stat().st_size, file_digest(segment)
    with open(segment, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(TransientError, match="size check failed"):
        t.publish(segment, "lab/node01/cam0/x.mp4", size=size, digest=digest)
    assert not (share.store / "lab/node01/cam0/x.mp4").exists(), "never under the final name"
    assert not share.hidden(), "the short temp is removed"


def helper_waiting_on(fifo: Path) -> int | None:
    """The pid of this process's nfs helper blocked opening ``fifo`` (its local file:
    a FIFO's open waits for a writer), if there is one yet."""
    for proc in Path("/proc").iterdir():
        try:
            if (
                proc.name.isdigit()
                and b"_nfs_child.py" in (proc / "cmdline").read_bytes()
                and int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid()
                and (proc / "wchan").read_text() == "wait_for_partner"
            ):
                return int(proc.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def test_an_unmount_between_the_check_and_the_write_never_writes_to_local_disk(share, tmp_path):
    """The share is unmounted after the helper's mount check and before it opens its
    temp file or writes (its local file is a FIFO: the helper waits on it past the
    check). The temp is made and written through the directory the check approved,
    on the share, never in the bare directory."""
    data = os.urandom(200_000)
    fifo = tmp_path / "cam0-20261126T120000Z-000009.mp4"
    os.mkfifo(fifo)
    remote = "lab/node01/cam0/y.mp4"
    t = nfs(share.mnt, timeout=60)
    result: dict[str, object] = {}

    def run() -> None:
        try:
            result["sent"] = t.publish(
                fifo, remote, size=len(data), digest=hashlib.sha256(data).hexdigest()
            )
        except Exception as exc:
            result["error"] = exc

    publisher = threading.Thread(target=run)
    publisher.start()
    try:
        # Past its mount check, the helper waits for the FIFO's writer: the share goes
        # away before it takes another step (the temp is opened after the local file).
        wait_for(lambda: helper_waiting_on(fifo), 30, "the helper waiting on its local file")
        share.unmount()
        assert not os.path.ismount(share.mnt), "the share is gone before the temp is made"
        with open(fifo, "wb") as f:
            f.write(data)
    finally:
        publisher.join(60)
    assert result == {"sent": True}, result
    assert os.listdir(share.mnt) == [], "nothing landed on the local disk"
    assert (share.store / remote).read_bytes() == data  # it went to the share
    assert not share.hidden()
