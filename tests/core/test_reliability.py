"""The node's own reliability (issue 8): stepped clocks and a failing spool.

Real processes, real faults: ffmpeg cameras, a tmpfs 'NAS share', the spool on
its own tmpfs that is remounted read-only, filled by another file, or unmounted
under the running node. Nothing is mocked; the only test hook is
``LIVECAM_CLOCK_OFFSET``, which shifts the clock that names segments.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from livecam import build, hookimpl
from livecam.recorder.sequence import SequenceCounter
from livecam.shipper.process import Shipper
from livecam.storage.layout import NodeDisk
from livecam.storage.segment import Segment, oldest_first, segment_name
from livecam.storage.tiers import Tier
from tests.conftest import livecam_cmd
from tests.core.node import (
    Node,
    Share,
    assert_all_arrived,
    assert_evicted_oldest_first,
    sh,
    wait_for,
)


@pytest.fixture
def share(tmp_path):
    s = Share(tmp_path / "nas")
    yield s
    s.close()


def nfs(share: Share) -> dict:
    return {"plugin": "nfs", "path": str(share.mnt), "fstypes": ["tmpfs"]}


def evicted_in_log(node: Node) -> list[str]:
    return [
        line.split("EVICTED ")[1].split()[0]
        for line in node.log_text().splitlines()
        if "EVICTED " in line
    ]


def published_in_log(node: Node) -> list[str]:
    """Segment names in the order the shipper logged their publish (first time each)."""
    seen: dict[str, None] = {}
    for line in node.log_text().splitlines():
        if " published " in line:
            seen.setdefault(line.split(" published ")[1].split()[0], None)
    return list(seen)


def seq_of(name: str) -> int:
    return int(name.rsplit("-", 1)[1].split(".")[0])


def named_time(name: str) -> datetime:
    segment = Segment.from_path(Path(name))
    assert segment is not None
    return segment.start


# --- the clock ------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_stepped_clock_reorders_nothing_and_status_reports_it(tmp_path, share, monkeypatch):
    offset = tmp_path / "clock-offset"
    offset.write_text("0\n")
    monkeypatch.setenv("LIVECAM_CLOCK_OFFSET", str(offset))
    n = Node(tmp_path / "node", nfs(share), spool={"max_bytes": "300K"}, spill_after="1s")
    try:
        proc = n.start()
        wait_for(lambda: len(share.segments()) >= 4, 30, "publishing")
        share.unmount()
        outage_at = time.time()
        mark = len(n.closed())
        wait_for(lambda: len(n.closed()) >= mark + 6, 30, "recording during the outage")
        offset.write_text("-3600\n")  # NTP corrects a clock that ran an hour fast
        mark = len(n.closed())
        wait_for(lambda: len(n.closed()) >= mark + 6, 30, "recording after the step back")
        wait_for(lambda: n.status()["shipper"]["evictions"] >= 6, 90, "evictions under the quota")
        offset.write_text("3600\n")  # and now an hour ahead
        mark = len(n.closed())
        wait_for(lambda: len(n.closed()) >= mark + 4, 30, "recording after the step forward")
        assert n.stop(proc) == 0
        # Everything is still on the node (the NAS is away): status's newest is the
        # highest sequence, whatever its name says about the time.
        status = n.status()
        for cam in ("cam0", "cam1"):
            local = [p.name for t in ("buffer", "spool") for p in n.local_segments(t)]
            mine = [name for name in local if name.startswith(cam + "-")]
            newest = max(mine, key=seq_of)
            assert status["cameras"][cam]["newest_segment"] == newest
            assert status["cameras"][cam]["clock_steps"] >= 2, status["cameras"][cam]
            assert status["cameras"][cam]["last_clock_step"]["seconds"] > 7000
        for cam in ("cam0", "cam1"):
            assert re.search(
                rf"camera {cam}: the clock stepped -3[56]\d\d\.\ds before", n.log_text()
            )
        share.mount()
        n.drain(timeout=60)
    finally:
        n.cleanup()
    closed = n.closed()
    # The steps happened: within one camera, names now sort against the sequence.
    cam0 = sorted((c for c in closed if c["camera"] == "cam0"), key=lambda c: c["seq"])
    times = [named_time(c["name"]) for c in cam0]
    assert any(a > b for a, b in itertools.pairwise(times)), "no step back was named"
    evicted = evicted_in_log(n)
    assert n.status()["shipper"]["evictions"] == len(evicted) >= 6
    assert_all_arrived(n, share, lost_ok=set(evicted))
    assert {c["name"] for c in closed} - set(share.segments()) == set(evicted)
    for cam in ("cam0", "cam1"):
        # Published strictly in sequence order, across the steps and the restart.
        order = [seq_of(name) for name in published_in_log(n) if name.startswith(cam + "-")]
        assert order == sorted(order), (cam, order)
    # Evicted oldest first by sequence (but the one a failing publish held).
    assert_evicted_oldest_first(closed, set(evicted), outage_at + 1)


# --- the spool ------------------------------------------------------------------------------


class SpoolDisk:
    """The spool on its own small tmpfs (``mnt``), which a test can break three ways."""

    def __init__(self, root, size: str = "8M"):
        self.mnt = root / "spooldisk"
        self.mnt.mkdir(parents=True)
        sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.mnt))
        self.path = self.mnt / "spool"
        self.path.mkdir()

    def break_(self, how: str) -> None:
        if how == "readonly":  # an SD card that failed read-only
            sh("mount", "-o", "remount,ro", str(self.mnt))
        elif how == "full":  # something else filled the disk
            with open(self.mnt / "filler", "wb") as f, contextlib.suppress(OSError):
                while True:
                    f.write(b"\0" * (1 << 20))
                    f.flush()
        elif how == "removed":  # the disk is gone, and where it was mounted
            sh("umount", "-l", str(self.mnt))
            self.mnt.rmdir()
        else:
            raise ValueError(how)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.mnt)], capture_output=True)


@pytest.fixture
def spooldisk(tmp_path):
    disk = SpoolDisk(tmp_path)
    yield disk
    disk.close()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["readonly", "full", "removed"])
def test_a_failed_spool_degrades_to_ram_only_and_counts_every_loss(tmp_path, share, spooldisk, how):
    n = Node(
        tmp_path / "node",
        nfs(share),
        spool={"path": str(spooldisk.path)},
        buffer={"max_bytes": "700K"},
        spill_after="1s",
    )
    try:
        proc = n.start()
        wait_for(lambda: len(share.segments()) >= 4, 30, "publishing")
        wait_for(lambda: not n.local_segments("spool"), 10, "nothing waits in the spool")
        spooldisk.break_(how)
        # The NAS is up: the shipper notices the spool without needing it, and ships on.
        wait_for(lambda: n.status()["spool_failed"], 20, "status says the spool failed")
        assert "SPOOL FAILED" in n.log_text()
        shipped = len(share.segments())
        wait_for(lambda: len(share.segments()) >= shipped + 6, 30, "shipping from RAM")
        shown = subprocess.run(
            livecam_cmd("-c", str(n.config_file), "status"),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 1, "a failed spool is a problem status exits 1 for"
        assert "SPOOL FAILED" in shown.stdout and "spool failed" in shown.stdout, shown.stdout
        # The NAS goes away too: RAM fills, and the buffer evicts, counted.
        share.unmount()
        wait_for(lambda: n.status()["shipper"]["evictions"] >= 4, 60, "buffer evictions")
        # A restart in that state records as well as before.
        assert n.stop(proc) == 0
        before = {c["pid"] for c in n.closed()}
        proc = n.start()
        wait_for(
            lambda: sum(c["pid"] not in before for c in n.closed()) >= 2 * 8,
            30,
            "both cameras record after the restart",
        )
        wait_for(lambda: n.status()["spool_failed"], 20, "status says so after the restart")
        count = n.status()["shipper"]["evictions"]
        wait_for(lambda: n.status()["shipper"]["evictions"] > count, 60, "evicting on, counted")
        share.mount()  # the NAS is back; the spool is not
        wait_for(lambda: len(n.local_segments("buffer")) <= 4, 60, "caught up from RAM")
        assert n.stop(proc) == 0
        assert n.status()["spool_failed"]  # the recorders' reservations are still in RAM
        n.drain()
    finally:
        n.cleanup()
    evicted = evicted_in_log(n)
    assert len(evicted) == len(set(evicted))
    # A segment published from RAM has no copy in the failed spool to complain about
    # (and the drain above found none left there): not one "cannot delete" line.
    assert "cannot delete" not in n.log_text()
    closed = assert_all_arrived(n, share, lost_ok=set(evicted))
    # Every missing segment is counted, and nothing counted arrived.
    assert {c["name"] for c in closed} - set(share.segments()) == set(evicted)
    assert n.status()["shipper"]["evictions"] == len(evicted) >= 5
    # No sequence number was handed out twice, across the restart on RAM reservations.
    keys = [(c["camera"], c["seq"]) for c in closed]
    assert len(keys) == len(set(keys))


def test_sequence_numbers_never_repeat_across_a_read_only_spool_and_a_reboot(spooldisk, tmp_path):
    buffer_state = tmp_path / "buffer" / ".livecam"
    buffer_state.mkdir(parents=True)
    disk = NodeDisk(
        Tier("buffer", tmp_path / "buffer", max_bytes=1 << 20),
        Tier("spool", spooldisk.path, max_bytes=1 << 20),
    )
    taken = []
    counter = SequenceCounter(disk, "cam0", block=10)
    taken += [counter.take() for _ in range(15)]
    assert counter.spool_error is None
    sh("mount", "-o", "remount,ro", str(spooldisk.mnt))
    for _ in range(2):  # restarts while the SD card is read-only: RAM reservations
        counter = SequenceCounter(disk, "cam0", block=10)
        assert counter.spool_error and "Read-only" in counter.spool_error
        taken += [counter.take() for _ in range(7)]
    # A reboot: RAM is wiped, the card comes back writable (fsck), only the spool's
    # stale reservation is left.
    for p in buffer_state.iterdir():
        p.unlink()
    sh("mount", "-o", "remount,rw", str(spooldisk.mnt))
    counter = SequenceCounter(disk, "cam0", block=10)
    assert counter.spool_error is None
    after = [counter.take() for _ in range(5)]
    assert min(after) > max(taken), (taken, after)
    assert taken == sorted(set(taken)), "numbers repeat within the read-only runs"


# --- the shipper's two threads, driven directly on real files -------------------------------


@pytest.fixture
def shipper_setup(tmp_path):
    raw = {
        "node": "node01",
        "site": "lab",
        "segment_seconds": 1,
        "cameras": {"cam0": {"pattern": "testsrc2"}},
        "buffer": {"path": str(tmp_path / "buffer"), "max_bytes": "1M"},
        "spool": {"path": str(tmp_path / "spool"), "max_bytes": "250K", "min_free_bytes": 0},
        "transport": {"plugin": "local", "path": str(tmp_path / "nas")},
        "spill_after": "1s",
        "plugin_dirs": [],
    }
    cfg, plugins = build.from_document(raw)
    return cfg, Shipper(cfg, plugins)


def put(tier_path: Path, seq: int, *, start_minute: int = 0, age: float = 0) -> Segment:
    start = datetime(2026, 11, 26, 12, start_minute, seq % 60, tzinfo=UTC)
    path = tier_path / "cam0" / segment_name("cam0", start, seq)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(os.urandom(100_000))
    if age:
        os.utime(path, (time.time() - age, time.time() - age))
    segment = Segment.from_path(path)
    assert segment is not None
    return segment


def test_a_segment_being_published_is_spilled_all_the_same(shipper_setup):
    cfg, shipper = shipper_setup
    seg = put(cfg.buffer.path, 1, age=5)
    in_spool = cfg.spool.path / "cam0" / seg.name
    with shipper.handoff.claim(seg.name) as mine:  # the publisher holds it
        assert mine
        shipper.housekeeper.housekeep()
        assert in_spool.exists(), "due, so on disk although its publish is in flight"
        assert seg.path.exists(), "the publisher still reads the RAM copy"
    assert shipper.state.spilled == 1
    shipper.housekeeper.housekeep()  # the attempt failed: the next pass drops the RAM copy
    assert not seg.path.exists() and in_spool.exists()
    assert shipper.state.spilled == 1, "spilled once"
    assert shipper.publisher.publish_next() is True
    assert not in_spool.exists()
    assert [p.name for p in (cfg.spool.path.parent / "nas").rglob("*.mp4")] == [seg.name]


def test_eviction_skips_a_segment_in_flight_without_waiting_and_counts_before_deleting(
    shipper_setup,
):
    cfg, shipper = shipper_setup
    segs = [put(cfg.spool.path, i) for i in range(1, 5)]  # 400K in a 250K spool
    seen_at_event = []

    class Witness:
        @hookimpl
        def livecam_segment_evicted(self, segment, tier, reason):
            seen_at_event.append((segment.name, segment.path.exists()))

    shipper.evictor.plugins.pm.register(Witness(), name="evict-witness")
    released = threading.Event()
    holding = threading.Event()

    def publisher():  # holds the oldest for as long as a hanging batch would
        with shipper.handoff.claim(segs[0].name):
            holding.set()
            released.wait(30)

    t = threading.Thread(target=publisher)
    t.start()
    holding.wait(5)
    try:
        need, reason = shipper.spool.bytes_to_free()
        assert shipper.evictor.evict(shipper.spool, need, reason) is True
        assert not released.is_set(), "eviction returned while the claim was still held"
    finally:
        released.set()
        t.join()
        shipper.evictor.plugins.pm.unregister(name="evict-witness")
    kept = sorted(p.name for p in (cfg.spool.path / "cam0").glob("*.mp4"))
    assert kept == [segs[0].name, segs[3].name], "the one in flight is skipped, then oldest first"
    assert [name for name, _ in seen_at_event] == [segs[1].name, segs[2].name]
    assert all(there for _, there in seen_at_event), "announced before it was deleted"
    ledger = json.loads((cfg.buffer.path / ".livecam" / "evictions.json").read_text())
    assert ledger["count"] == 2, "counted in RAM too"


def test_order_follows_the_sequence_not_the_clock(shipper_setup):
    cfg, shipper = shipper_setup
    # Sequence 1..3 named an hour late, then NTP stepped back: 4..5 look older.
    segs = [put(cfg.buffer.path, i, start_minute=59) for i in range(1, 4)]
    segs += [put(cfg.buffer.path, i, start_minute=0) for i in range(4, 6)]
    assert [s.seq for s in shipper.publisher.ready()] == [1, 2, 3, 4, 5]
    assert [s.seq for s in shipper.buffer.segments()] == [1, 2, 3, 4, 5]
    assert oldest_first(reversed(segs)) == segs
