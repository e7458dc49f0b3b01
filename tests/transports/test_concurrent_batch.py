"""sftp and smb batches against the real servers: a few segments in flight at once.

A backlog across many directories arrives intact with each directory made once
per connection; a server killed mid-batch hands back only what was verified and
leaves nothing partial visible; one conflict refuses only its own item; the
remembered directories are made again when the NAS lost them, whether the
connection survived or not.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Callable

import pytest

from livecam.transport import ConflictError, TransientError
from tests.conftest import sha256
from tests.core.node import Watcher
from tests.transports.conftest import backlog, record_calls, retry_proves_what_arrived

BOTH = pytest.mark.parametrize("nas", ["sftp", "smb"], indirect=True)


def mkdir_paths(t, monkeypatch) -> Callable[[], list[str]]:
    """A function listing each directory the transport asked the server to make so far."""
    if type(t).__name__ == "SftpTransport":
        import paramiko

        calls, arg = record_calls(monkeypatch, paramiko.SFTPClient, "mkdir"), 1  # after self
    else:
        import smbclient

        calls, arg = record_calls(monkeypatch, smbclient, "mkdir"), 0
    return lambda: [c[arg] for c in calls]


@BOTH
def test_backlog_across_directories_makes_each_once(nas, tmp_path, monkeypatch):
    t = nas.transport()
    items = backlog(tmp_path, 30)
    made = mkdir_paths(t, monkeypatch)
    done = dict(t.publish_batch(items))
    assert sorted(i.local for i in done) == sorted(i.local for i in items)
    assert all(done.values())
    got = nas.segments()
    for item in items:
        assert got[item.local.name] == nas.store / item.remote
        assert sha256(got[item.local.name]) == sha256(item.local)
    assert len({p.parent for p in got.values()}) == 6
    leaves = [m for m in made() if "2026-11-2" in m.rsplit("/", 1)[-1].rsplit("\\", 1)[-1]]
    # Per new directory, not per segment (sftp tries the leaf first, then
    # again once its missing parents are made).
    assert len(set(leaves)) == 6 and len(made()) < len(items), made()
    assert not nas.hidden()
    # Published again (a shipper that died before deleting): all already there.
    before = len(made())
    assert sorted((i.local, s) for i, s in t.publish_batch(items)) == sorted(
        (i.local, False) for i in items
    )
    assert len(made()) == before  # remembered: no directory request at all


@BOTH
def test_server_killed_mid_batch_keeps_the_unverified_local(nas, tmp_path, monkeypatch):
    t = nas.transport(timeout=20)
    # Twice the items the workers can start while a slow stop of the server is under
    # way (other workers go on until it is dead), so "the batch stopped" can be seen.
    workers = t.in_flight()
    items = backlog(tmp_path, 4 * workers, size=500_000)
    real = t.publish_item
    down = threading.Event()
    after_down: list[int] = []  # calls that started once the server was dead

    def crash(n: int) -> None:
        if down.is_set():
            after_down.append(n)
        elif n == workers + 4:  # some started before it verified, some in flight
            nas.server.stop()
            down.set()

    calls = record_calls(monkeypatch, t, "publish_item", before=crash)
    done = []
    with Watcher(nas) as watcher:
        with pytest.raises(TransientError):
            for item, sent in t.publish_batch(items):
                done.append(item)
                # Handed back only once verified on the NAS, byte for byte.
                assert sha256(nas.store / item.remote) == sha256(item.local) and sent
        assert 0 < len(done) < len(items)
        assert down.is_set() and len(calls) < len(items)
        # Nothing new started after the failure: once the server is dead, each other
        # worker may start at most one more item (its own failure stops the batch).
        assert len(after_down) <= workers - 1, after_down
        monkeypatch.setattr(t, "publish_item", real)
        nas.server.start()
        retry_proves_what_arrived(t, items, nas, watcher)
    assert not nas.hidden()


@BOTH
def test_a_conflict_refuses_only_its_item(nas, tmp_path):
    t = nas.transport()
    items = backlog(tmp_path, 9)
    conflict = items[4]
    t.publish(conflict.local, conflict.remote, size=conflict.size, digest=conflict.digest)
    on_nas = sha256(nas.store / conflict.remote)
    conflict.local.write_bytes(os.urandom(conflict.size))
    object.__setattr__(conflict, "known_digest", None)
    conflict.__dict__.pop("digest", None)  # the new content's digest, read again
    done = []
    with pytest.raises(ConflictError, match="other content") as err:
        done.extend(t.publish_batch(items))
    assert err.value.remote == conflict.remote  # the shipper sets that one aside
    assert sorted(i.local for i, _ in done) == sorted(i.local for i in items if i is not conflict)
    assert sha256(nas.store / conflict.remote) == on_nas
    assert not nas.hidden()


@BOTH
def test_remembered_directories_are_made_again_when_the_nas_lost_them(nas, tmp_path):
    t = nas.transport(timeout=20)
    a, b, c = backlog(tmp_path, 13)[::6]  # one directory (cam0, 2026-11-24)
    assert t.publish(a.local, a.remote, size=a.size, digest=a.digest)
    # Removed on the NAS while the connection lives: the create fails, the
    # directory is made again, once.
    shutil.rmtree(nas.store / "lab")
    assert t.publish(b.local, b.remote, size=b.size, digest=b.digest)
    # The NAS restarts and lost the tree meanwhile: the new connection
    # remembers nothing.
    nas.server.stop()
    with pytest.raises(TransientError):
        t.publish(c.local, c.remote, size=c.size, digest=c.digest)
    shutil.rmtree(nas.store / "lab")
    nas.server.start()
    assert t.publish(c.local, c.remote, size=c.size, digest=c.digest)
    assert list(nas.segments()) == [c.local.name]
    assert sha256(nas.store / c.remote) == sha256(c.local)
    assert not nas.hidden()


@BOTH
def test_bytes_in_flight_stay_within_the_window(nas, tmp_path, monkeypatch):
    from livecam.transport.pipeline import Window

    nas.raw.update(workers=4, window="128K")
    t = nas.transport()
    assert t.in_flight() == 4
    items = backlog(tmp_path, 8, size=700_000)
    seen: list[tuple[int, int]] = []  # (bytes in flight after a write was counted, limit)
    real_take, real_wait = Window.take, Window.wait

    def take(self, n: int) -> bool:
        ok = real_take(self, n)
        if ok:
            seen.append((self.used, n))
        return ok

    def wait(self, n: int) -> None:
        real_wait(self, n)
        seen.append((self.used, n))

    monkeypatch.setattr(Window, "take", take)
    monkeypatch.setattr(Window, "wait", wait)
    done = {item.local: sent for item, sent in t.publish_batch(items)}
    assert sum(n for _, n in seen) >= 8 * 700_000, "every byte went through the window"
    assert max(used for used, _ in seen) > max(n for _, n in seen), "requests overlapped"
    assert max(used for used, _ in seen) <= 128 << 10, "never more than the window"
    assert sorted(done) == sorted(i.local for i in items) and all(done.values())
    for item in items:
        assert sha256(nas.store / item.remote) == sha256(item.local)
    assert not nas.hidden()
