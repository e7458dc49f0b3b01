"""A drain frees the spool as it goes, and spool pressure during it evicts oldest first.

A real ``livecam ship`` drains a spool backlog to a real sshd (rrsync and a
chrooted sftp account, ``servers.Sshd``) in a network namespace behind a
tbf-shaped veth, so the drain lasts many seconds and an rsync call is in flight
long enough for eviction to meet it. A poller records when each segment got its
final name on the NAS and when its last local copy was gone.

Bounds are hang guards; how long a spool copy outlives its arrival at fleet
scale is measured by bench/fleet.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from livecam_plugins.rsync import pacer

from livecam.shipper.handoff import Lent, Taken
from livecam.storage.losses import LOSS_CAMERA
from livecam.storage.segment import Segment, segment_name
from livecam.transport import Item, TransientError
from tests.core.node import Node, wait_for
from tests.transports import servers
from tests.transports.conftest import Nas, backlog

pytestmark = pytest.mark.slow

# s a local copy may outlive its arrival on the NAS, hang guards for "a few seconds":
# sftp frees each item as it is verified; rsync each call, at most CALL_MAX_SECONDS long.
GUARD = {"sftp": 8.0, "rsync": pacer.CALL_MAX_SECONDS + 2}
SIZE = 200_000
CAM = "cam0"
TOOK = re.compile(r"took (\S+) from the publish in flight")


@pytest.fixture(scope="module")
def slow_sshd(base):
    # 2 Mbit/s: a segment takes about a second, a backlog many.
    with servers.sshd_behind_a_slow_link(base, "lc-freed", "10.77.23", 22, 2) as sshd:
        yield sshd


def make(folder: Path, seqs: range, start: datetime) -> dict[str, str]:
    """Closed segments ``seqs`` of CAM in ``folder`` (a tier); {name: sha256}."""
    (folder / CAM).mkdir(parents=True, exist_ok=True)
    made = {}
    for seq in seqs:
        name = segment_name(CAM, start + timedelta(seconds=30 * seq), seq)
        data = os.urandom(SIZE)
        tmp = folder / CAM / f".{name}.tmp"
        tmp.write_bytes(data)
        tmp.rename(folder / CAM / name)  # ready only when whole, as the recorder does
        made[name] = hashlib.sha256(data).hexdigest()
    return made


class Poller:
    """When each CAM segment first had its final name on the NAS, and when it was
    gone from both of the node's tiers."""

    def __init__(self, node: Node, store: Path):
        self.node, self.store = node, store
        self.arrived: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Poller:
        self._look()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def expect(self, names: set[str]) -> None:
        """Segments made locally just now (gone when not seen any more)."""
        self._seen |= names

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self._look()

    def _look(self) -> None:
        now = time.time()
        for p in self.store.rglob(f"{CAM}-*.mp4"):
            self.arrived.setdefault(p.name, now)
        local = {
            p.name for t in (self.node.buffer, self.node.spool) for p in t.glob(f"{CAM}/*.mp4")
        }
        local = {n for n in local if not n.startswith(".")}
        self._seen |= local
        for name in self._seen - local:
            self.gone.setdefault(name, now)


def on_nas(store: Path) -> dict[str, Path]:
    """CAM's segments on the NAS; asserts there is no temp and no name twice."""
    files = [p for p in store.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name.startswith(".")], "a temp file left on the NAS"
    cam = [p for p in files if p.name.startswith(f"{CAM}-")]
    assert len({p.name for p in cam}) == len(cam), "a segment on the NAS twice"
    return {p.name: p for p in cam}


def node_for(kind: str, sshd: servers.Sshd, root: Path, **overrides) -> tuple[Node, Path]:
    """A node shipping over ``kind`` to ``sshd`` and where its files land on the NAS."""
    if kind == "rsync":
        opts, store = sshd.rsync_options(), sshd.rsync_root
    else:
        opts, store = sshd.sftp_options(), sshd.sftp_root
    root.mkdir()
    node = Node(root / "node", opts, node=root.name, **overrides)
    return node, store / "lab" / root.name


@pytest.mark.parametrize("kind", ["rsync", "sftp"])
def test_each_local_copy_goes_within_seconds_of_its_arrival(slow_sshd, tmp_path, kind):
    node, store = node_for(kind, slow_sshd, tmp_path / f"freed-{kind}")
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    made = make(node.spool, range(24), start)  # 4.8 MB: about 19 s at 2 Mbit/s
    try:
        with Poller(node, store) as poll:
            node.start("ship")
            wait_for(lambda: len(poll.gone) == len(made), 120, "the node drained")
    finally:
        node.cleanup()
    # The drain outlasted the guard, so copies kept to a batch's end would fail below.
    span = max(poll.arrived.values()) - min(poll.arrived.values())
    assert span > GUARD[kind], f"the drain took {span:.1f}s: too short to tell"
    late = {n: round(poll.gone[n] - poll.arrived[n], 1) for n in made}
    assert all(s <= GUARD[kind] for s in late.values()), late
    got = on_nas(store)
    assert sorted(got) == sorted(made)
    assert all(hashlib.sha256(got[n].read_bytes()).hexdigest() == h for n, h in made.items())


def test_spool_pressure_during_a_call_evicts_the_oldest_and_counts_each(slow_sshd, tmp_path):
    # A spool that holds 8 segments, full with a backlog; new ones arrive in RAM
    # four times faster than the link drains, so each spill must evict.
    node, store = node_for(
        "rsync",
        slow_sshd,
        tmp_path / "freed-evict",
        spool={"max_bytes": str(8 * SIZE)},
        spill_after="100ms",
    )
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    made = make(node.spool, range(8), start)
    try:
        with Poller(node, store) as poll:
            node.start("ship")
            wait_for(lambda: poll.arrived, 60, "the first segment arrived")
            for seq in range(8, 20):
                new = make(node.buffer, range(seq, seq + 1), start)
                poll.expect(set(new))
                made |= new
                time.sleep(0.25)
            wait_for(lambda: len(poll.gone) == len(made), 120, "the node drained")
            wait_for(lambda: not node.local_segments("spool"), 60, "loss records shipped")
        status = node.status()["shipper"]
    finally:
        node.cleanup()
    log = node.log_text()
    # What happened: eviction took segments from the rsync call in flight.
    took = TOOK.findall(log)
    assert took, log[-3000:]
    # No newer segment was evicted while an older one waited in a call: every older
    # local copy was gone by the time (one poll) an evicted one went. (Published ones
    # may leave out of order: two calls run at once, and either can end first.)
    order = sorted(made, key=lambda n: Segment.from_path(Path(n)).seq)  # type: ignore[union-attr]
    for i, name in enumerate(order):
        if f"EVICTED {name} " in log:
            late = [o for o in order[:i] if poll.gone[o] > poll.gone[name] + 0.06]
            assert not late, (
                name,
                late,
                [(n[-10:-4], round(poll.gone[n] % 1000, 2)) for n in order],
            )
    # Counted exactly: what is missing on the NAS is what the log, the status
    # and the loss records say was evicted, each once; the rest arrived whole.
    got = on_nas(store)
    missing = set(made) - set(got)
    evicted = re.findall(r"EVICTED (\S+) from spool", log)
    assert len(evicted) == len(set(evicted)) and set(evicted) == missing, (evicted, missing)
    assert missing and set(got) <= set(made)
    assert status["evictions"] == len(missing)
    records = [json.loads(p.read_text()) for p in store.glob(f"{LOSS_CAMERA}/*/*.json")]
    lost = sorted(s for r in records if r["kind"] == "evicted" for s in r["sequences"])
    assert lost == sorted(Segment.from_path(Path(n)).seq for n in missing)  # type: ignore[union-attr]
    for name, path in got.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == made[name]


class EvictedAtStart(Lent):
    """A hold whose file goes the moment its publish starts: taken by eviction
    (``taken``) or, as a control, by something else."""

    def __init__(self, local: Path, *, taken: bool):
        super().__init__()
        self.local, self.by_eviction = local, taken

    def start(self) -> bool:
        started = super().start()
        if self.by_eviction:
            assert self.take(True) is Taken.STARTED
        self.local.unlink()
        return started


def evicted_at_start(item: Item, *, taken: bool) -> Item:
    return Item(item.local, item.remote, item.size, hold=EvictedAtStart(item.local, taken=taken))


def test_rsync_sends_the_rest_of_a_call_a_taken_segment_vanished_from(sshd, tmp_path):
    nas = Nas("rsync", sshd)
    try:
        t = nas.transport()
        items = backlog(tmp_path, 4)
        items[1] = evicted_at_start(items[1], taken=True)
        done = list(t.publish_batch(items))  # no error: eviction took it
        assert sorted(i.local.name for i, _ in done) == sorted(
            i.local.name for i in items if i is not items[1]
        )
        assert items[1].local.name not in nas.segments()
    finally:
        nas.close()
    assert not nas.hidden()
    # A source gone for any other reason is an error, as it always was.
    nas = Nas("rsync", sshd)
    try:
        (tmp_path / "more").mkdir()
        more = backlog(tmp_path / "more", 3)
        more[0] = evicted_at_start(more[0], taken=False)
        proven = []
        with pytest.raises(TransientError, match="has no referent"):
            for item, _ in nas.transport().publish_batch(more):
                proven.append(item.local.name)
        assert sorted(proven) == sorted(i.local.name for i in more[1:])
    finally:
        nas.close()


def test_a_store_batch_never_starts_an_item_eviction_took(sshd, tmp_path):
    nas = Nas("sftp", sshd)
    try:
        t = nas.transport()
        # Lent to eviction, as the publisher lends a batch's segments.
        items = [dataclasses.replace(i, hold=Lent()) for i in backlog(tmp_path, 8)]
        taken = items[5:]
        assert [i.hold.take(t.takes_started) for i in taken] == [Taken.QUEUED] * 3
        done = []
        for item, _ in t.publish_batch(items):
            # Being written or written: an sftp item is no longer eviction's.
            assert item.hold.take(t.takes_started) is None
            done.append(item.local.name)
    finally:
        nas.close()
    assert sorted(done) == sorted(i.local.name for i in items[:5])
    assert sorted(nas.segments()) == sorted(done)
