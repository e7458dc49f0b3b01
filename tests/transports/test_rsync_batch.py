"""rsync batches against the real rrsync -wo account: one rsync call per batch.

A backlog goes out in batches across many remote directories; a batch mixing
new files, files already there and one with other content under its name
publishes what it can and refuses only the conflict; a server killed mid-batch
leaves no partial file visible and the retry proves what had arrived. Also the
control directory of a killed shipper is cleaned up by the next one.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pytest
from livecam_plugins.rsync import RsyncTransport, pacer
from livecam_plugins.rsync.calls import LANES
from livecam_plugins.rsync.master import Lane

from livecam.transport import ConflictError, Item, PermanentError
from tests.conftest import sha256
from tests.core.node import Watcher, wait_for
from tests.transports.conftest import (
    Attempt,
    backlog,
    most_at_once,
    record_calls,
    record_rsync_spans,
    retry_proves_what_arrived,
)

RSYNC = pytest.mark.parametrize("nas", ["rsync"], indirect=True)


def count_calls(monkeypatch) -> list[tuple]:
    """Each rsync run, on any lane (each test runs one transport)."""
    return record_calls(monkeypatch, Lane, "rsync")


@RSYNC
def test_backlog_goes_in_one_call_per_batch(nas, tmp_path, monkeypatch):
    t = nas.transport()
    items = backlog(tmp_path, 30)
    calls = count_calls(monkeypatch)
    done = list(t.publish_batch(items))
    assert sorted(i.local for i, _ in done) == sorted(i.local for i in items)
    assert all(sent for _, sent in done)
    assert len(calls) == 1, calls  # no dry run: nothing was there
    got = nas.segments()
    for item in items:
        assert sha256(got[item.local.name]) == sha256(item.local)
        assert got[item.local.name] == nas.store / item.remote
    assert len({p.parent for p in got.values()}) == 6
    assert not nas.hidden()
    # What one rsync start-up for 30 files costs is measured by bench/transports.py.
    # Published again (a shipper that died before deleting): all already there.
    assert sorted((i.local, sent) for i, sent in t.publish_batch(items)) == sorted(
        (i.local, False) for i in items
    )


@RSYNC
def test_a_batch_is_split_into_calls_by_bytes(nas, tmp_path, monkeypatch):
    t = nas.transport()
    items = backlog(tmp_path, 10, size=40_000)
    monkeypatch.setattr(pacer, "CALL_BYTES", 100_000)  # two and a half segments
    spans = record_rsync_spans(monkeypatch, t)
    seen = {item.local.name: time.monotonic() for item, sent in t.publish_batch(items) if sent}
    assert len(seen) == 10 and len(nas.segments()) == 10
    assert sorted(len(s.names) for s in spans) == [2] * 5  # 2 segments per call
    # Each call's items are handed back once that call has ended, and no sooner.
    for span in spans:
        assert all(seen[name] >= span.end for name in span.names), span
    assert most_at_once(spans) <= LANES


@RSYNC
def test_batch_with_files_already_there_and_one_conflict(nas, tmp_path):
    t = nas.transport()
    items = backlog(tmp_path, 10)
    first = list(t.publish_batch(items[:4]))  # a batch that arrived, then the node died
    assert len(first) == 4
    conflict = items[3]
    on_nas = sha256(nas.segments()[conflict.local.name])
    conflict.local.write_bytes(os.urandom(conflict.size))  # other content, same name
    done: dict[Path, bool] = {}
    # A ConflictError, not only a PermanentError: only that makes the shipper set
    # the segment aside and go on.
    with pytest.raises(ConflictError, match="other content") as err:
        for item, sent in t.publish_batch(items):
            done[item.local] = sent
    assert err.value.remote == conflict.remote
    assert conflict.remote in str(err.value)
    assert done == {
        **{i.local: False for i in items[:3]},
        **{i.local: True for i in items[4:]},
    }
    assert sha256(nas.segments()[conflict.local.name]) == on_nas  # not overwritten
    for item in items[:3] + items[4:]:
        assert sha256(nas.segments()[item.local.name]) == sha256(item.local)
    assert not nas.hidden()


@RSYNC
def test_unsafe_remote_path_is_refused_and_the_rest_goes(nas, tmp_path):
    t = nas.transport()
    good, bad = backlog(tmp_path, 2)
    bad = Item(bad.local, "../escape/" + bad.local.name, bad.size, bad.digest)
    done = []
    with pytest.raises(PermanentError, match="unsafe remote path"):
        for item, sent in t.publish_batch([good, bad]):
            done.append((item, sent))
    assert done == [(good, True)]
    assert list(nas.segments()) == [good.local.name]


@RSYNC
def test_server_killed_mid_batch_leaves_nothing_partial_and_heals(nas, tmp_path):
    nas.raw["bwlimit"] = 4000  # KiB/s: 12 x 1 MB take about 3 s
    t = nas.transport(timeout=30)
    items = backlog(tmp_path, 12, size=1_000_000)
    done: list = []
    with Watcher(nas) as watcher:
        attempt = Attempt(lambda: done.extend(t.publish_batch(items)))
        # Stopped as soon as some files are renamed into place, the rest to come.
        wait_for(nas.segments, 30, "a first segment renamed into place", interval=0.05)
        nas.server.stop()
        at_stop = len(nas.segments())
        attempt.failed_transient(timeout=30)
        assert not done, "an item was handed back before its call succeeded"
        assert 0 < at_stop < len(items), "the server was stopped mid-batch"
        assert len(nas.segments()) == at_stop
        nas.server.start()
        retry_proves_what_arrived(t, items, nas, watcher)
    # A receiver killed hard may leave its temp (.<name>.XXXXXX beside the target);
    # the retry put every item under its final name and nothing else is there.
    names = {i.local.name for i in items}
    assert set(nas.segments()) == names
    for p in nas.hidden():
        assert re.fullmatch(r"\.(.+)\.\w{6}", p.name) and p.name[1:-7] in names, p


def test_stale_control_dirs_of_dead_shippers_are_removed(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNTIME_DIRECTORY", str(tmp_path))
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = tmp_path / f"livecam-ssh-{dead.pid}-abc123"
    live = tmp_path / f"livecam-ssh-{os.getppid()}-def456"
    other = tmp_path / "livecam-ssh-oldname"  # pid-less and fresh: could be in use
    for d in (stale, live, other):
        d.mkdir()
        (d / "master.err").write_text("")
    opts = {
        "host": "h",
        "port": 22,
        "user": "u",
        "path": ".",
        "identity_file": "k",
        "known_hosts_file": "kh",
        "bwlimit": 0,
        "compress": False,
        "control_persist": 300,
    }
    t = RsyncTransport(opts, timeout=5)
    mine = t._control.path()
    assert mine.parent == tmp_path and mine.name.startswith(f"livecam-ssh-{os.getpid()}-")
    assert not stale.exists() and live.exists() and other.exists()
    t.close()
    assert not mine.exists()
