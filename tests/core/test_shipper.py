"""The shipper's decisions, driven directly on real files (no cameras, no timing)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar

import pytest
from livecam_plugins.nfs import DirectoryTransport

from livecam import build, hookimpl
from livecam.shipper.process import Shipper
from livecam.shipper.publisher import remote_path
from livecam.shipper.retry import RetryPolicy
from livecam.storage.segment import Segment, segment_name
from livecam.transport import PermanentError, TransientError, conflict_path


@pytest.fixture
def setup(tmp_path):
    raw = {
        "node": "node01",
        "site": "lab",
        "segment_seconds": 1,
        "cameras": {"cam0": {"pattern": "testsrc2"}},
        "buffer": {"path": str(tmp_path / "buffer"), "max_bytes": "1M"},
        "spool": {"path": str(tmp_path / "spool"), "max_bytes": "250K", "min_free_bytes": 0},
        "transport": {"plugin": "local", "path": str(tmp_path / "nas")},
        "retry": {"initial": "1s", "max": "8s", "permanent": "5m"},
        "plugin_dirs": [],
    }
    cfg, plugins = build.from_document(raw)
    return cfg, plugins, tmp_path


def put(tier_path: Path, seq: int, size: int = 100_000, age: float = 0) -> Segment:
    start = datetime(2026, 11, 26, 12, 0, seq % 60, tzinfo=UTC)
    path = tier_path / "cam0" / segment_name("cam0", start, seq)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(size))
    if age:
        t = time.time() - age
        os.utime(path, (t, t))
    return Segment.from_path(path)


def loss_records(tier_path: Path, kind: str = "evicted") -> list[dict]:
    """The loss records of ``kind`` a tier holds (livecam/storage/losses.py)."""
    found = [json.loads(p.read_text()) for p in tier_path.glob("_losses/*.json")]
    return [r for r in found if r["kind"] == kind]


def test_a_segment_left_in_both_tiers_by_a_crashed_spill_ships_once(setup):
    cfg, plugins, tmp = setup
    seg = put(cfg.buffer.path, 1)
    shipper = Shipper(cfg, plugins)
    shipper.spool.accept(seg)  # the crash came before the buffer copy was deleted
    assert [s.name for s in shipper.publisher.ready()] == [seg.name]
    assert shipper.publisher.publish_next() is True
    assert not seg.path.exists() and not (cfg.spool.path / "cam0" / seg.name).exists()
    assert len(list((tmp / "nas").rglob("*.mp4"))) == 1
    assert shipper.publisher.publish_next() is False


def test_publish_after_a_lost_local_delete_is_already_there(setup):
    cfg, plugins, _tmp = setup
    seg = put(cfg.buffer.path, 1)
    data = seg.path.read_bytes()
    shipper = Shipper(cfg, plugins)
    shipper.publisher.publish_next()
    seg.path.write_bytes(data)  # as if the shipper died before deleting it
    shipper.publisher.publish_next()
    assert not seg.path.exists()
    assert shipper.state.already_there == 1 and shipper.state.published == 2


def test_spill_is_due_after_spill_after_and_keeps_the_oldest_first(setup):
    cfg, plugins, _ = setup
    old = put(cfg.buffer.path, 1, age=5)
    young = put(cfg.buffer.path, 2)
    shipper = Shipper(cfg, plugins)
    shipper.housekeeper.housekeep()
    assert (cfg.spool.path / "cam0" / old.name).exists() and not old.path.exists()
    assert young.path.exists(), "younger than spill_after: stays in RAM"
    assert shipper.state.spilled == 1


def test_full_spool_evicts_oldest_first_and_counts_each(setup, caplog):
    cfg, plugins, _ = setup
    evicted: list[tuple[str, str, str]] = []
    at_the_event: list[tuple[bool, list[dict]]] = []

    class Listener:
        @staticmethod
        @hookimpl
        def livecam_segment_evicted(segment, tier, reason):
            evicted.append((segment.name, tier.role, reason))
            # Fired just before the delete: the file is still there (aside), and its
            # loss record is already on disk (a power cut now leaves no bare hole).
            records = [r for r in loss_records(cfg.spool.path)
                       if r["detail"]["segment"] == segment.name]  # fmt: skip
            at_the_event.append((segment.path.exists(), records))

    segs = [put(cfg.buffer.path, i, age=10 - i) for i in range(1, 5)]  # 4 x 100K, spool 250K
    plugins.pm.register(Listener, name="listener")
    try:
        shipper = Shipper(cfg, plugins)
        shipper.housekeeper.housekeep()
    finally:
        plugins.pm.unregister(name="listener")
    # Each eviction fired livecam_segment_evicted once and was logged by name.
    assert evicted == [(segs[0].name, "spool", "max_bytes"), (segs[1].name, "spool", "max_bytes")]
    for seg in segs[:2]:
        assert any(r.getMessage().startswith(f"EVICTED {seg.name}") for r in caplog.records)
    spooled = sorted(p.name for p in (cfg.spool.path / "cam0").glob("*.mp4"))
    assert spooled == [segs[2].name, segs[3].name]
    status = (cfg.spool.path / ".livecam" / "evictions.json").read_text()
    assert '"count": 2' in status and segs[1].name in status
    # A loss record per eviction, in the spool, written before the delete.
    assert [there for there, _ in at_the_event] == [True, True]
    for seg, (_, records) in zip(segs[:2], at_the_event, strict=True):
        [record] = records
        assert record["sequences"] == [seg.seq] and record["camera"] == "cam0"
        assert (record["site"], record["node"]) == ("lab", "node01")
        assert record["detail"] == {
            "segment": seg.name, "tier": "spool", "limit": "max_bytes", "bytes": 100_000
        }  # fmt: skip
    assert len(loss_records(cfg.spool.path)) == 2 and not loss_records(cfg.buffer.path)


def test_loss_records_are_never_evicted(setup):
    """A spool over its quota loses segments, never the records of earlier losses:
    with only records left, eviction frees nothing and says so."""
    cfg, plugins, _ = setup
    shipper = Shipper(cfg, plugins)
    for n in range(3):  # the records of three earlier losses
        record = shipper.evictor.losses.record("camera_down", "cam0", [], f"down {n}")
        assert record is not None and record.parent == cfg.spool.path / "_losses"
    records = sorted(cfg.spool.path.glob("_losses/*.json"))
    filler = b"x" * 40_000  # the records weigh like segments: 120K of the 250K
    for record in records:
        record.write_bytes(filler)
    segs = [put(cfg.spool.path, i) for i in range(1, 3)]  # 200K: 320K in a 250K spool
    need, reason = shipper.spool.bytes_to_free()
    assert need > 0
    assert shipper.evictor.evict(shipper.spool, need, reason) is True
    assert [s.path.exists() for s in segs] == [False, True], "the oldest segment went"
    # Asked for more than the segments hold: they go, the records stay.
    assert shipper.evictor.evict(shipper.spool, 250_000, "max_bytes") is False
    assert not segs[1].path.exists()
    assert sorted(cfg.spool.path.glob("_losses/*.json"))[: len(records)] == records
    assert all(r.read_bytes() == filler for r in records)


def test_a_crash_mid_eviction_is_finished_and_counted_once(setup):
    """What a crash leaves aside is deleted at the next start and counted once:
    again if the crash came before the count, not again if it came after."""
    cfg, plugins, _ = setup
    segs = [put(cfg.spool.path, i) for i in range(1, 4)]  # 300K in a 250K spool
    shipper = Shipper(cfg, plugins)
    assert shipper.evictor.evict(shipper.spool, 50_000, "max_bytes") is True
    ledger = cfg.spool.path / ".livecam" / "evictions.json"
    assert json.loads(ledger.read_text())["count"] == 1
    # A crash after the count, before the delete: the counted segment is still aside.
    counted = segs[0].path.with_name(f".{segs[0].name}.evicting")
    counted.write_bytes(b"x" * 100_000)
    # A crash after the rename aside, before the count.
    uncounted = segs[1].path.with_name(f".{segs[1].name}.evicting")
    segs[1].path.rename(uncounted)
    Shipper(cfg, plugins).evictor.finish_interrupted(shipper.spool)
    assert not counted.exists() and not uncounted.exists()
    record = json.loads(ledger.read_text())
    assert record["count"] == 2, record  # segs[0] once, segs[1] once
    assert record["last"]["segment"] == segs[1].name
    # Each has its loss record: segs[0]'s from before the crash, segs[1]'s (the
    # crash came before its record was written) from the start that finished it.
    assert sorted(r["sequences"][0] for r in loss_records(cfg.spool.path)) == [1, 2]


def test_an_eviction_plugin_chooses_and_the_rest_is_oldest_first(setup):
    cfg, plugins, _ = setup

    class KeepOldest:
        @staticmethod
        @hookimpl
        def livecam_choose_evictions(tier, segments, bytes_needed):
            return [segments[-1]]  # this site would rather lose the newest

    plugins.pm.register(KeepOldest, name="keep-oldest")
    try:
        segs = [put(cfg.spool.path, i) for i in range(1, 4)]  # 300K in a 250K spool
        shipper = Shipper(cfg, plugins)
        assert shipper.evictor.evict(shipper.spool, 150_000, "max_bytes") is True
    finally:
        plugins.pm.unregister(name="keep-oldest")
    assert [s.path.exists() for s in segs] == [False, True, False]


def test_a_bad_remote_path_from_a_plugin_keeps_the_segment(setup):
    cfg, plugins, _ = setup

    class Escape:
        @staticmethod
        @hookimpl
        def livecam_remote_path(segment, node):
            return f"../{segment.name}"

    plugins.pm.register(Escape, name="escape")
    try:
        seg = put(cfg.buffer.path, 1)
        with pytest.raises(PermanentError, match="not a clean relative path"):
            Shipper(cfg, plugins).publisher.publish_next()
    finally:
        plugins.pm.unregister(name="escape")
    assert seg.path.exists()


class RecordedWaits:
    """The stop event the retry policy sleeps on: records each wait, never stops."""

    def __init__(self) -> None:
        self.seen: list[float] = []

    def wait(self, seconds: float) -> bool:
        self.seen.append(seconds)
        return False


def failing(times: int, error: Exception):
    """A publish that fails ``times`` times, then succeeds."""
    left = [times]

    def publish() -> str:
        if left[0]:
            left[0] -= 1
            raise error
        return "published"

    return publish


def test_backoff_is_jittered_exponential_and_permanent_errors_wait_long(setup, caplog):
    # Through the real tenacity loop (RetryPolicy.call), not a hand-made state.
    cfg, _, _ = setup
    initial, maximum = cfg.retry_initial, cfg.retry_max
    by_attempt: dict[int, list[float]] = {}
    after_success: list[float] = []
    for _ in range(200):
        waits = RecordedWaits()
        policy = RetryPolicy(
            initial=initial, maximum=maximum, permanent=cfg.retry_permanent, stopping=waits
        )
        assert policy.call(failing(7, TransientError("x"))) == "published"
        assert len(waits.seen) == 7, "one wait per failed attempt"
        for n, w in enumerate(waits.seen, 1):
            by_attempt.setdefault(n, []).append(w)
        # A success resets the backoff: the next failure waits from retry.initial.
        assert policy.call(failing(1, TransientError("x"))) == "published"
        after_success.append(waits.seen[-1])
    for n, seen in by_attempt.items():
        bound = min(maximum, initial * 2 ** (n - 1))
        # The upper end doubles per attempt up to retry.max: a flat random wait
        # (which reaches retry.max at once) or a fixed ladder both fail here.
        assert min(seen) >= 0 and max(seen) <= bound, (n, max(seen), bound)
        assert max(seen) >= 0.8 * bound, f"attempt {n} never came near {bound}s"
        assert len({round(w, 4) for w in seen}) > 150, "full jitter, not a fixed ladder"
    assert by_attempt[7] and max(by_attempt[1]) <= initial < maximum <= max(by_attempt[7]) * 1.25
    assert max(after_success) <= initial, "a success resets the backoff"
    waits = RecordedWaits()
    policy = RetryPolicy(
        initial=initial, maximum=maximum, permanent=cfg.retry_permanent, stopping=waits
    )
    assert policy.call(failing(2, PermanentError("auth"))) == "published"
    assert waits.seen == [300, 300], "a permanent error waits retry.permanent"
    # Errors that need a person carry the grep-able token PERMANENT in the log.
    permanent = [r for r in caplog.records if "(PERMANENT)" in r.getMessage()]
    assert len(permanent) == 2 and all("auth" in r.getMessage() for r in permanent)


def test_when_the_spool_cannot_take_more_the_buffer_evicts_oldest_first(setup):
    cfg, plugins, _ = setup
    # A spool whose floor can never be met (a full SD card): nothing can spill.
    spool = cfg.spool.__class__(**{**cfg.spool.__dict__, "min_free_bytes": 1 << 60})
    cfg = cfg.__class__(**{**cfg.__dict__, "spool": spool})
    segs = [put(cfg.buffer.path, i, size=300_000, age=10 - i) for i in range(1, 6)]  # 1.5M > 1M
    shipper = Shipper(cfg, plugins)
    shipper.housekeeper.housekeep()
    assert [s.path.exists() for s in segs] == [False, False, True, True, True]
    assert not list(cfg.spool.path.glob("cam0/*.mp4"))
    # Each eviction left a loss record in the spool, for the NAS audit (livecam/storage/losses.py).
    losses = [json.loads(p.read_text()) for p in cfg.spool.path.glob("_losses/*.json")]
    assert sorted(r["sequences"][0] for r in losses if r["kind"] == "evicted") == [1, 2]
    record = (cfg.spool.path / ".livecam" / "evictions.json").read_text()
    assert '"count": 2' in record and '"tier": "buffer"' in record


class Batching(DirectoryTransport):
    """The local copy, in batches, failing on demand after ``fail_after`` items."""

    batch_size = 4
    calls: ClassVar[list[list[str]]] = []
    fail_after: int | None = None

    def publish_batch(self, items):
        Batching.calls.append([Path(i.remote).name for i in items])
        for n, item in enumerate(items):
            if self.fail_after is not None and n == self.fail_after:
                raise TransientError("link dropped mid-batch")
            yield item, self.publish(item.local, item.remote, size=item.size, digest=item.digest)


def test_batches_come_from_the_spool_and_a_failed_batch_keeps_the_rest(setup):
    cfg, plugins, tmp = setup
    Batching.calls = []
    transport = Batching({"path": tmp / "nas"}, timeout=10)
    spooled = [put(cfg.spool.path, i, size=10_000) for i in range(1, 7)]
    in_ram = [put(cfg.buffer.path, i, size=10_000) for i in range(7, 9)]
    shipper = Shipper(cfg, plugins, transport)
    Batching.fail_after = 2
    with pytest.raises(TransientError):
        shipper.publisher.publish_next()
    assert [s.path.exists() for s in spooled[:4]] == [False, False, True, True]
    assert shipper.state.last_error is not None
    assert shipper.state.last_error.segment == spooled[2].name
    Batching.fail_after = None
    while shipper.publisher.publish_next():
        pass
    sizes = [len(c) for c in Batching.calls]
    assert sizes == [4, 4, 1, 1], "spool segments in batches, RAM segments one at a time"
    assert not any(s.path.exists() for s in spooled + in_ram)
    assert len(list((tmp / "nas").rglob("*.mp4"))) == 8


def test_other_content_on_the_nas_sets_one_segment_aside_and_the_rest_ships(setup, caplog):
    cfg, plugins, tmp = setup
    segs = [put(cfg.spool.path, i, size=10_000) for i in range(1, 4)]
    data = segs[0].path.read_bytes()
    shipper = Shipper(cfg, plugins)
    first_remote = remote_path(cfg, plugins, segs[0])
    squatter = tmp / "nas" / first_remote
    squatter.parent.mkdir(parents=True)
    # Other content of the same size: only the digest tells it apart.
    theirs = bytes(b ^ 0xFF for b in data)
    squatter.write_bytes(theirs)
    for _ in range(4):  # no backoff wait: every call makes progress
        shipper.publisher.publish_next()
    assert squatter.read_bytes() == theirs, "never overwritten"
    aside = tmp / "nas" / conflict_path(first_remote, hashlib.sha256(data).hexdigest())
    assert aside.read_bytes() == data
    assert all((squatter.parent / s.name).exists() for s in segs[1:])
    assert not any(s.path.exists() for s in segs)
    assert shipper.state.last_error is not None
    assert "already exists with other content" in shipper.state.last_error.message
    assert any(r.getMessage().startswith(f"CONFLICT {segs[0].name}") for r in caplog.records)
    # A crash after the aside was published but before the local delete: the
    # retry lands on the same conflict name, so still no duplicate.
    segs[0].path.write_bytes(data)
    retry = Shipper(cfg, plugins)
    for _ in range(2):  # the conflict, then the aside (already there)
        retry.publisher.publish_next()
    assert not segs[0].path.exists(), "the retry proved the aside copy and deleted the local"
    conflicts = sorted(p.name for p in squatter.parent.iterdir() if ".conflict-" in p.name)
    assert conflicts == [aside.name]


def test_the_lag_of_a_segment_published_early_is_zero_not_negative(setup):
    cfg, plugins, _ = setup
    # A segment whose start lies ahead of the shipper's clock (the camera's clock
    # stepped, or the segment closed before its nominal length).
    start = datetime.fromtimestamp(time.time() + 3600, UTC)
    path = cfg.buffer.path / "cam0" / segment_name("cam0", start, 1)
    path.parent.mkdir(parents=True)
    path.write_bytes(os.urandom(1000))
    shipper = Shipper(cfg, plugins)
    assert shipper.publisher.publish_next() is True
    assert shipper.state.last_success is not None
    assert shipper.state.last_success.segment == path.name
    assert shipper.state.last_success.lag == 0.0


class OneCall(DirectoryTransport):
    """One call per batch, like rsync: every item starts at once, ``during`` runs
    while they are in flight, then the items whose source is still there (or was
    ``opened`` before, as an rsync that already read it) are sent."""

    batch_size = 4
    takes_started = True

    def __init__(self, *args, during, opened=(), **kw):
        super().__init__(*args, **kw)
        self.during, self.opened = during, opened

    def publish_batch(self, items):
        started = [i for i in items if i.hold.start()]
        read = {i.local: i.local.read_bytes() for i in started if i.local.name in self.opened}
        self.during()
        for item in started:
            if item.local in read:  # sent from the open file, as rsync would
                dest = Path(self.opts["path"]) / item.remote
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.write_bytes(read[item.local])
                yield item, True
            elif item.local.exists():
                yield (
                    item,
                    self.publish(item.local, item.remote, size=item.size, digest=item.digest),
                )


@pytest.mark.parametrize("opened", [False, True])
def test_eviction_takes_the_oldest_from_a_call_in_flight_and_counts_it_once(setup, caplog, opened):
    cfg, plugins, tmp = setup
    segs = [put(cfg.spool.path, i) for i in range(1, 3)]
    shipper: Shipper | None = None

    def evict_during_the_call():
        assert shipper is not None
        assert shipper.evictor.evict(shipper.spool, 100_000, "max_bytes")
        # Gone at once; noted durably, not counted until the call reports.
        assert not segs[0].path.exists() and segs[1].path.exists()
        ledger = json.loads((cfg.spool.path / ".livecam" / "evictions.json").read_text())
        assert list(ledger["taken"]) == [segs[0].name] and "count" not in ledger

    opens = [segs[0].name] if opened else []
    transport = OneCall(
        {"path": tmp / "nas"}, timeout=10, during=evict_during_the_call, opened=opens
    )
    shipper = Shipper(cfg, plugins, transport)
    caplog.set_level("INFO", logger="livecam")
    assert shipper.publisher.publish_next() is True
    assert f"took {segs[0].name} from the publish in flight" in caplog.text
    on_nas = sorted(p.name for p in (tmp / "nas").rglob("*.mp4"))
    ledger = json.loads((cfg.spool.path / ".livecam" / "evictions.json").read_text())
    losses = [json.loads(p.read_text()) for p in cfg.spool.path.glob("_losses/*.json")]
    assert not ledger["taken"]
    if opened:  # rsync had it open: it arrived, and counts as published only
        assert on_nas == sorted(s.name for s in segs)
        assert shipper.state.published == 2 and ledger.get("count", 0) == 0
        assert "EVICTED" not in caplog.text and not losses
    else:  # not sent: evicted, once, with its log line and loss record
        assert on_nas == [segs[1].name]
        assert shipper.state.published == 1 and ledger["count"] == 1
        assert caplog.text.count(f"EVICTED {segs[0].name} from spool") == 1
        assert [r["sequences"] for r in losses if r["kind"] == "evicted"] == [[1]]
    assert not any(s.path.exists() for s in segs)


def test_a_segment_taken_from_a_call_that_never_reported_counts_as_evicted(setup):
    cfg, plugins, _tmp = setup
    gone, kept = put(cfg.spool.path, 1), put(cfg.spool.path, 2)
    shipper = Shipper(cfg, plugins)
    # A crash after eviction took both from a call and deleted one.
    shipper.evictor.ledger.note_taken(gone, shipper.spool, "max_bytes", gone.size)
    shipper.evictor.ledger.note_taken(kept, shipper.spool, "max_bytes", kept.size)
    gone.path.unlink()
    again = Shipper(cfg, plugins)
    again.evictor.finish_interrupted(again.spool)
    ledger = json.loads((cfg.spool.path / ".livecam" / "evictions.json").read_text())
    assert ledger["count"] == 1 and ledger["last"]["segment"] == gone.name and not ledger["taken"]
    losses = [json.loads(p.read_text()) for p in cfg.spool.path.glob("_losses/*.json")]
    assert [r["sequences"] for r in losses] == [[1]]
    assert kept.path.exists()


class OneAtATime(DirectoryTransport):
    """Like a store transport's worker: starts items one by one; ``during`` runs
    while the first is being written and the rest wait."""

    batch_size = 4

    def __init__(self, *args, during, **kw):
        super().__init__(*args, **kw)
        self.during = during

    def publish_batch(self, items):
        for n, item in enumerate(items):
            if not item.hold.start():
                continue
            if n == 0:
                self.during()
            yield item, self.publish(item.local, item.remote, size=item.size, digest=item.digest)


def test_eviction_withdraws_a_queued_segment_from_a_batch(setup, caplog):
    cfg, plugins, tmp = setup
    segs = [put(cfg.spool.path, i) for i in range(1, 3)]
    shipper: Shipper | None = None

    def evict_while_the_first_is_written():
        assert shipper is not None
        assert shipper.evictor.evict(shipper.spool, 100_000, "max_bytes")
        # The one being written is skipped; the queued one is evicted at once.
        assert segs[0].path.exists() and not segs[1].path.exists()
        assert caplog.text.count(f"EVICTED {segs[1].name} from spool") == 1

    transport = OneAtATime(
        {"path": tmp / "nas"}, timeout=10, during=evict_while_the_first_is_written
    )
    shipper = Shipper(cfg, plugins, transport)
    assert shipper.publisher.publish_next() is True
    assert [p.name for p in (tmp / "nas").rglob("*.mp4")] == [segs[0].name]
    assert shipper.state.published == 1 and shipper.state.last_error is None
    ledger = json.loads((cfg.spool.path / ".livecam" / "evictions.json").read_text())
    assert ledger["count"] == 1 and ledger["last"]["segment"] == segs[1].name


class SlowBatches(DirectoryTransport):
    """The local copy in batches of 8, a segment every 0.3 s: a long batch that progresses."""

    batch_size = 8

    def publish(self, local, remote, *, size, digest):
        time.sleep(0.3)
        return super().publish(local, remote, size=size, digest=digest)


def test_a_long_batch_that_keeps_publishing_keeps_the_watchdog_fed(setup, monkeypatch):
    """systemd's watchdog is fed while the publisher progresses: a batch longer
    than the publisher's limit pings on as long as its segments arrive."""
    cfg, plugins, tmp = setup
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(str(tmp / "notify.sock"))
    systemd.settimeout(0.05)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", "400000")  # a ping at most every 0.1 s
    spooled = [put(cfg.spool.path, i, size=10_000) for i in range(1, 9)]
    shipper = Shipper(cfg, plugins, SlowBatches({"path": tmp / "nas"}, timeout=10))
    shipper.heartbeat.publisher_limit = 0.5  # a batch of 8 takes about 2.4 s
    batch = threading.Thread(target=shipper._attempt)
    batch.start()
    t0 = time.monotonic()
    late_pings = 0
    while batch.is_alive():
        shipper.heartbeat.beat(shipper.state_file.as_dict())
        with contextlib.suppress(TimeoutError):
            while True:
                ping = b"WATCHDOG=1" in systemd.recv(4096)
                late_pings += ping and time.monotonic() - t0 > 1.0
        time.sleep(0.1)
    systemd.close()
    assert shipper.state.published == 8 and not any(s.path.exists() for s in spooled)
    assert late_pings >= 5, late_pings  # past the limit, still fed: segments kept arriving
