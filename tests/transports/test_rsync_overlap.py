"""rsync calls overlap: the next call of a batch starts while one ends, so its
start-up (rrsync's start and about ten round trips) never leaves the link idle
(docs/transports.md, rsync). Against a real sshd with the NAS role's rrsync
account, behind an 8 Mbit/s link in its own namespace:

- a batch runs two calls at once at times, never more, and every segment arrives
  whole, each handed back only once its own call has ended;
- a NAS whose key lacks ``-no-lock`` refuses the second call ("Another instance
  of rrsync"): the transport goes on one call at a time, says so once, and
  every segment still arrives with nothing raised.

How much this gives at 40 ms RTT is bench/transports.py's figure.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time

import pytest
from livecam_plugins.rsync import pacer
from livecam_plugins.rsync.calls import LANES
from livecam_plugins.rsync.master import Lane

from tests.conftest import sha256
from tests.transports import servers
from tests.transports.conftest import Nas, Span, backlog, most_at_once, record_rsync_spans

SIZE = 200_000  # 0.2 s each at 8 Mbit/s


@pytest.fixture(scope="module")
def slow_sshd(base):
    with servers.sshd_behind_a_slow_link(base, "lc-overlap", "10.77.24", 22, 8) as sshd:
        yield sshd


@pytest.fixture
def nas(slow_sshd):
    n = Nas("rsync", slow_sshd)
    yield n
    n.close()


def drain(nas, tmp_path, monkeypatch):
    """As the shipper drains a backlog: one segment first (no rate yet), then the
    rest in one batch of ``batch_limit``. Returns (spans, {name: when handed back})."""
    t = nas.transport()
    items = backlog(tmp_path, 25, size=SIZE)  # 5 MB: about 5 s of the link
    assert [sent for _, sent in t.publish_batch(items[:1])] == [True]
    assert t.batch_limit() >= 24 * SIZE  # the rest is one batch
    spans = record_rsync_spans(monkeypatch, t)
    seen = {item.local.name: time.monotonic() for item, sent in t.publish_batch(items[1:])}
    got = nas.segments()
    assert sorted(got) == sorted(i.local.name for i in items)
    for item in items:
        assert sha256(got[item.local.name]) == sha256(item.local)
    assert not nas.hidden()
    return t, spans, seen


def test_a_batch_runs_two_calls_at_once_and_never_more(nas, tmp_path, monkeypatch):
    t, spans, seen = drain(nas, tmp_path, monkeypatch)
    assert len(spans) >= 3, spans  # the batch went in several calls ...
    assert most_at_once(spans) == LANES == 2  # ... overlapping, two at most
    for span in spans:
        assert all(seen[name] >= span.end for name in span.names), span
    assert t._calls.at_once == 2


def test_a_nas_that_runs_one_call_at_a_time_gets_them_one_at_a_time(
    nas, slow_sshd, tmp_path, monkeypatch, caplog
):
    keys = slow_sshd.dir / "authorized_keys" / servers.RSYNC_USER
    before = keys.read_text()
    keys.write_text(before.replace(" -no-lock ", " "))  # the key as before issue 14
    assert keys.read_text() != before
    locked_out = hold_rrsyncs_lock_beside_a_running_call(monkeypatch, slow_sshd.rsync_root)
    try:
        with caplog.at_level(logging.INFO, logger="livecam.rsync"):
            t, spans, seen = drain(nas, tmp_path, monkeypatch)
    finally:
        keys.write_text(before)
    said = [r for r in caplog.records if "lacks -no-lock" in r.getMessage()]
    assert len(said) == 1 and said[0].levelno == logging.WARNING, said
    assert t._calls.at_once == 1 and len(seen) == 24
    # The refused call was sent again, and from then on one call at a time.
    assert len(locked_out) == 1, locked_out
    refused = locked_out[0]
    after = [s for s in spans if s.start >= refused.end]
    assert after and most_at_once(after) == 1, spans
    assert refused.names <= set().union(*(s.names for s in after))


def hold_rrsyncs_lock_beside_a_running_call(monkeypatch, root) -> list[Span]:
    """A run that starts while another runs waits until rrsync's lock on ``root`` is
    free, then holds it while the run goes, as the other call's rrsync would.
    Returns those runs (their rrsync found the lock taken).

    Why: over a shaped link the new call's start-up reaches the NAS behind the
    bytes the other call has queued, so whether that call's rrsync still holds
    the lock by then is a race. This makes it the case that matters."""
    fd = os.open(root, os.O_RDONLY)
    running: list[int] = []
    locked_out: list[Span] = []
    real = Lane.rsync

    def locked(self, *args, source, **kw):
        beside = bool(running) and "--dry-run" not in args
        running.append(1)
        if beside:
            fcntl.flock(fd, fcntl.LOCK_EX)
            span = Span.of(source)
            locked_out.append(span)
        try:
            return real(self, *args, source=source, **kw)
        finally:
            if beside:
                span.end = time.monotonic()
                fcntl.flock(fd, fcntl.LOCK_UN)
            running.pop()

    monkeypatch.setattr(Lane, "rsync", locked)
    return locked_out


def test_a_call_sized_for_a_faster_link_is_stopped_and_the_rest_goes_again(
    nas, tmp_path, monkeypatch, caplog
):
    """A rate measured when the link was nearly idle (the first nodes back after an
    outage) sizes a call the link then carries ten times slower: the call is
    stopped at OVERDUE times a call's seconds, what arrived is proven and handed
    back, and the rest goes in calls sized from what the stopped one managed."""
    t = nas.transport()
    items = backlog(tmp_path, 24, size=500_000)  # 12 MB: about 12 s at 8 Mbit/s
    assert [sent for _, sent in t.publish_batch(items[:1])] == [True]  # connected
    t._pacer.measured(50_000_000, 1.0)  # as if the link had given 50 MB/s a moment ago
    t._pacer.call_seconds = pacer.CALL_SECONDS  # as on a LAN (a loaded machine greets slower)
    deadline = pacer.OVERDUE * t._pacer.call_seconds
    assert t._pacer.call_limit() >= 23 * 500_000 > 1_000_000 * deadline  # one call, too big
    spans = record_rsync_spans(monkeypatch, t)
    with caplog.at_level(logging.INFO, logger="livecam.rsync"):
        handed = [item.local.name for item, sent in t.publish_batch(items[1:]) if sent]
    stopped = [r.getMessage() for r in caplog.records if "stopped after" in r.getMessage()]
    assert len(stopped) == 1, stopped
    first = spans[0]
    assert len(first.names) == 23 and first.end - first.start < deadline + 10, first
    rest = spans[1:]
    assert rest and all(len(s.names) < 23 for s in rest)  # smaller calls, from its rate
    assert len(handed) == len(set(handed)) == 23  # each once
    got = nas.segments()
    for item in items:
        assert sha256(got[item.local.name]) == sha256(item.local)
    assert not nas.hidden()  # the stopped call's temp file went with it
