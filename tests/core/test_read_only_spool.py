"""A spool that turns read-only while segments wait in it (docs/architecture.md,
"A failed SD card").

SD cards fail by going read-only, and the likeliest moment is a long outage, with
the spool full. Then: what waits there is published once and never again
(it cannot be deleted: ``Publisher._undeletable``), nothing is evicted from it
(eviction renames first, so a read-only spool evicts nothing, records no loss
and loses nothing), and the node records and ships on, RAM-only. The spool is
a tmpfs of its own remounted read-only (tests/core/test_reliability.py's
``SpoolDisk``); the node is real (``livecam run``, ffmpeg cameras, the nfs
transport into a tmpfs share).
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from livecam import build
from livecam.shipper.process import Shipper
from livecam.storage.segment import Segment, segment_name
from tests.core.node import Node, Share, assert_all_arrived, wait_for
from tests.core.test_reliability import SpoolDisk, evicted_in_log, nfs


@pytest.fixture
def share(tmp_path):
    s = Share(tmp_path / "nas")
    yield s
    s.close()


@pytest.fixture
def spooldisk(tmp_path):
    disk = SpoolDisk(tmp_path)
    yield disk
    disk.close()


def loss_records(root: Path) -> list[dict]:
    """Every loss record below ``root`` (a tier, or the NAS share)."""
    return [json.loads(p.read_text()) for p in root.rglob("loss-*.json")]


def test_a_read_only_spool_evicts_nothing_and_records_no_loss(tmp_path, spooldisk, caplog):
    """A full spool gone read-only: eviction fails on its first rename, so every
    segment stays, nothing is counted, logged as EVICTED or recorded as lost (a
    record of a loss that did not happen would explain a hole that is not there,
    and count a loss twice once the segment arrives)."""
    raw = {
        "node": "node01",
        "site": "lab",
        "segment_seconds": 1,
        "cameras": {"cam0": {"pattern": "testsrc2"}},
        "buffer": {"path": str(tmp_path / "buffer"), "max_bytes": "1M"},
        "spool": {"path": str(spooldisk.path), "max_bytes": "250K", "min_free_bytes": 0},
        "transport": {"plugin": "local", "path": str(tmp_path / "nas")},
        "plugin_dirs": [],
    }
    cfg, plugins = build.from_document(raw)
    segs = []
    for seq in range(1, 4):  # 300K in a 250K spool
        path = spooldisk.path / "cam0" / segment_name("cam0", datetime.now(UTC), seq)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(100_000))
        segs.append(Segment.from_path(path))
    shipper = Shipper(cfg, plugins)
    spooldisk.break_("readonly")
    need, reason = shipper.spool.bytes_to_free()
    assert need > 0
    assert shipper.evictor.evict(shipper.spool, need, reason) is False
    assert all(s.path.exists() for s in segs)
    assert "cannot evict" in caplog.text and "EVICTED" not in caplog.text
    assert shipper.evictor.ledger.record.get("count", 0) == 0
    assert not loss_records(cfg.buffer.path) and not loss_records(spooldisk.path)


def on_nas(share: Share) -> set[str]:
    """The names of every segment and loss record on the share."""
    return {p.name for p in share.store.rglob("*.mp4")}


def published_lines(log: str, name: str) -> int:
    return sum(f" published {name} to " in line for line in log.splitlines())


@pytest.mark.slow
def test_a_spool_gone_read_only_with_segments_in_it_ships_each_once_and_loses_none(
    tmp_path, share, spooldisk
):
    n = Node(
        tmp_path / "node",
        nfs(share),
        spool={"path": str(spooldisk.path), "max_bytes": "300K"},
        buffer={"max_bytes": "700K"},
        spill_after="1s",
    )
    try:
        proc = n.start()
        wait_for(lambda: len(share.segments()) >= 4, 30, "publishing")
        share.unmount()  # the NAS goes away: segments wait in the spool, up to its quota
        wait_for(lambda: n.status()["shipper"]["evictions"] >= 2, 60, "the spool at its quota")
        spooldisk.break_("readonly")  # and now the SD card fails: every spill needs an eviction
        held = {p.name for p in n.local_segments("spool")}  # frozen from here on
        assert len([name for name in held if name.startswith("cam")]) >= 4, held
        wait_for(lambda: n.status()["spool_failed"], 20, "status says the spool failed")
        # RAM-only: the cameras record on, the buffer evicts at its limit, counted.
        count = n.status()["shipper"]["evictions"]
        wait_for(lambda: n.status()["shipper"]["evictions"] >= count + 2, 60, "RAM evicts")
        share.mount()  # the NAS is back, the spool is not
        wait_for(lambda: held <= on_nas(share), 60, "what the spool holds published")
        wait_for(lambda: len(n.local_segments("buffer")) <= 4, 60, "caught up from RAM")
        shipper = json.loads((n.buffer / ".livecam" / "shipper.json").read_text())
        assert n.stop(proc) == 0
        log = n.log_text()
        # Published, but undeletable: each went once, and stayed where it was.
        assert {p.name for p in n.local_segments("spool")} == held
        assert [name for name in sorted(held) if published_lines(log, name) != 1] == []
        assert shipper["already_there"] == 0, shipper
        # The card is repaired (fsck, a reboot): the drain finds them already there.
        subprocess.run(["mount", "-o", "remount,rw", str(spooldisk.mnt)], check=True)
        n.spool = spooldisk.path
        n.drain()
    finally:
        n.cleanup()
    evicted = evicted_in_log(n)
    assert len(evicted) == len(set(evicted))
    assert not held & set(evicted), "evicted from the read-only spool"
    closed = assert_all_arrived(n, share, lost_ok=set(evicted))
    # Every missing segment is counted, and nothing counted arrived ...
    assert {c["name"] for c in closed} - set(share.segments()) == set(evicted)
    assert n.status()["shipper"]["evictions"] == len(evicted)
    # ... and its loss record reached the NAS; no record names a segment that was kept.
    recorded = [r["detail"]["segment"] for r in loss_records(share.store) if r["kind"] == "evicted"]
    assert sorted(recorded) == sorted(evicted)
