"""A real power cut of a node: its spool on lazyfs, cut at many points, rebooted.

The node (``tests/core/node.py``'s ``Node``: real livecam processes, real ffmpeg
cameras, the ``nfs`` transport into a tmpfs "NAS") keeps its spool on lazyfs
(``tests/powercut/lazyfs.py``), which holds what was not fsynced in its own cache.
Each cut forgets that cache and, at the same instant, kills every process of the
node (its cgroup); then the RAM buffer is wiped and the spool mounted again: a
reboot. The cuts fall during spills (the NAS away), evictions (the spool's quota),
loss records being written, sequence reservations and publishing (the NAS back,
segments leaving the spool), each at a chosen file operation, and by command.

After each cut, on the disk as the cut left it:

- every segment older than the window the docs state (docs/architecture.md, "What
  can be lost": ready segments younger than ``spill_after`` plus one housekeeping
  pass; the open one never closed, so the witness never saw it) and every segment
  the shipper reported spilled or published before the cut is whole (its
  digest) on the spool or the NAS, or evicted with its loss record there;
- every file under a final name on the spool is whole, every loss record on it
  reads.

At the end (the NAS back, the node drained): no sequence number was handed out
twice; the NAS has every segment but those lost in a cut's window and those
evicted, each evicted one counted; each restart after a cut says so in its record
(and the one after a clean stop says clean, with the last segment); and
``livecam nas audit`` explains every hole: the segments lost in a window as a
power cut, every other missing segment as an eviction.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from livecam.nas.records import BadRecord, parse
from livecam.shipper.process import POLL
from livecam.storage.files import read_json
from livecam.storage.losses import LOSS_CAMERA
from tests.conftest import livecam_cmd, sha256
from tests.core.node import Node, Share, wait_for
from tests.nas.conftest import numbers
from tests.powercut.mount import Cgroup, LazyMount

pytestmark = pytest.mark.slow

SPILL_AFTER = 1.0


def window(shipper: dict[str, Any], cut: dict[str, Any]) -> float:
    """How long before ``cut`` a segment may have become ready and still be lost
    (docs/architecture.md, "What can be lost"): ``spill_after`` plus one housekeeping
    pass. A segment not yet due at one pass is spilled by the next, which starts
    ``POLL`` (0.5 s) after the first one ended, and spills it after the evictions and
    spills before it: the pass before (at most the longest pass the shipper
    measured), the pass that spills it up to the cut (how long the shipper's main
    thread had been busy on the spool when it fell), and the loop's own work between
    and before them (its state file, the scan of the RAM buffer: less than a pass;
    counted as one more longest pass). The open segment is lost too, but it never
    closed, so the witness never listed it."""
    longest = float(shipper.get("longest_housekeeping", 0.0))
    busy = cut["time"] - cut["busy_since"].get(str(shipper.get("pid")), cut["time"])
    return SPILL_AFTER + POLL + 2 * longest + busy


SAFE = '''
"""Test site plugin: what the shipper treated as safe (spilled, published) and evicted."""
import hashlib, json, time
from livecam import hookimpl

LOG = {log!r}


def note(event, segment, **more):
    line = {"event": event, "name": segment.name, "camera": segment.camera,
            "seq": segment.seq, "time": time.time(), **more}
    with open(LOG, "a") as f:
        f.write(json.dumps(line) + "\\n")


@hookimpl
def livecam_segment_spilled(segment):
    note("spilled", segment, sha256=hashlib.sha256(segment.path.read_bytes()).hexdigest())


@hookimpl
def livecam_segment_published(segment, remote, already_there):
    note("published", segment)


@hookimpl
def livecam_segment_evicted(segment, tier, reason):
    note("evicted", segment, tier=tier.role)
'''


@dataclass(frozen=True)
class Cut:
    """One cut: ``what`` it interrupts, with the NAS reachable or not (``nas``), at
    an armed lazyfs operation (``arm``: when, op, path pattern, how many to let
    pass) or by command once ``published`` more segments reached the NAS; with
    ``clean_stop`` the node is stopped cleanly before the cut."""

    what: str
    nas: bool
    arm: tuple[str, str, str, int] | None = None
    published: int = 0
    clean_stop: bool = False


PART = r"^/cam\d/\.cam\d-[^/]*\.part$"
CUTS = [
    Cut("publishing from RAM", nas=True, published=4),
    Cut("spill: the copy written, not fsynced", nas=False, arm=("after", "write", PART, 2)),
    Cut("spill: the copy fsynced, not renamed", nas=False, arm=("after", "fsync", PART, 2)),
    Cut("spill: renamed, its folder not fsynced", nas=False, arm=("after", "rename", PART, 2)),
    Cut("spill: its folder fsynced", nas=False, arm=("after", "fsyncdir", r"^/cam\d$", 3)),
    Cut("eviction: renamed aside", nas=False, arm=("after", "rename", r"\.evicting$", 1)),
    Cut(
        "eviction: counted in the ledger",
        nas=False,
        arm=("after", "rename", r"^/\.livecam/evictions\.json$", 1),
    ),
    Cut("eviction: deleted", nas=False, arm=("after", "unlink", r"\.evicting$", 1)),
    Cut(
        "loss record: written, not fsynced",
        nas=False,
        arm=("after", "write", r"^/_losses/\.loss-", 2),
    ),
    Cut(
        "loss record: named, its folder not fsynced",
        nas=False,
        arm=("after", "link", r"^/_losses/loss-", 2),
    ),
    Cut(
        "sequence reservation: renamed, its folder not fsynced",
        nas=True,
        arm=("after", "rename", r"^/\.livecam/seq-cam0$", 0),
    ),
    Cut(
        "publishing: spool copies deleted",
        nas=True,
        arm=("after", "unlink", r"^/cam\d/cam\d-[^/]*\.mp4$", 3),
    ),
    Cut("recording a while after a restart", nas=True, published=6),
    Cut("after a clean stop", nas=True, published=3, clean_stop=True),
    Cut("just after the start that follows the clean stop", nas=True, published=2),
]


@dataclass
class PowerCuts:
    """One node on lazyfs, cut again and again; what each cut was allowed to take."""

    node: Node
    share: Share
    spool: LazyMount
    safe_log: Path
    nas_up: bool = True
    cuts: list[tuple[Cut, float]] = field(default_factory=list)
    lost: set[str] = field(default_factory=set)  # closed, then lost in a cut's window

    def events(self, kind: str, before: float) -> dict[str, dict[str, Any]]:
        if not self.safe_log.exists():
            return {}
        lines = [json.loads(line) for line in self.safe_log.read_text().splitlines() if line]
        return {e["name"]: e for e in lines if e["event"] == kind and e["time"] <= before}

    def nas(self, up: bool) -> None:
        if up != self.nas_up:
            (self.share.mount if up else self.share.unmount)()
            self.nas_up = up

    def run(self, cut: Cut) -> tuple[float, float]:
        """Start the node, cut as ``cut`` says, reboot; the time of the cut, and how
        long before it a segment may have become ready and still be lost."""
        self.nas(cut.nas)
        if cut.arm is not None:
            self.spool.arm(*cut.arm)
        proc = self.node.start()
        if cut.arm is not None:
            event = self.spool.wait_cut(60)
        else:
            before = len(self.share.segments())
            wait_for(lambda: len(self.share.segments()) >= before + cut.published, 60, cut.what)
            if cut.clean_stop:
                assert self.node.stop(proc) == 0
            event = self.spool.cut()
        proc.wait(timeout=30)  # killed at the cut (or stopped before it)
        self.spool.power_cycle()
        shipper = read_json(self.node.buffer / ".livecam" / "shipper.json")
        shutil.rmtree(self.node.buffer)  # a reboot empties the RAM buffer
        self.cuts.append((cut, event["time"]))
        return event["time"], 0.0 if cut.clean_stop else window(shipper, event)


def spool_state(backing: Path) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    """Segments under their final names, and the loss records, on the spool as the cut
    left it (the backing directory holds exactly what is durable)."""
    segments = {
        p.name: p
        for p in backing.glob("*/*.mp4")
        if not p.name.startswith(".") and p.parent.name != LOSS_CAMERA
    }
    return segments, records_in(backing / LOSS_CAMERA)


def records_in(folder: Path) -> list[dict[str, Any]]:
    """Every loss record below ``folder``; one that does not read fails the test."""
    records = []
    for path in sorted(folder.rglob("loss-*.json")):
        try:
            record = parse(path.read_text(), str(path))
        except BadRecord as exc:
            raise AssertionError(f"a loss record that does not read: {exc}") from None
        records.append({"kind": record.kind, "camera": record.camera, "time": record.time,
                        "sequences": record.sequences, **record.detail})  # fmt: skip
    return records


def evicted_on_record(records: list[dict[str, Any]]) -> set[tuple[str, int]]:
    return {(r["camera"], s) for r in records if r["kind"] == "evicted" for s in r["sequences"]}


def check_the_cut(run: PowerCuts, when: float, window: float) -> None:
    """What the cut at ``when`` left: see the module doc. Segments closed within
    ``window`` before it and never reported safe may be gone (noted in ``run.lost``)."""
    on_spool, spool_records = spool_state(run.spool.backing)
    on_nas = run.share.segments()
    recorded = evicted_on_record(spool_records + records_in(run.share.store))
    safe = run.events("spilled", when) | run.events("published", when)
    closed = {c["name"]: c for c in run.node.closed()}
    assert set(on_spool) <= set(closed), "the spool holds a segment nobody recorded"
    for name, c in closed.items():
        where = on_spool.get(name) or on_nas.get(name)
        if where is not None:
            assert sha256(where) == c["sha256"], f"{name} is not whole on {where}"
        elif (c["camera"], c["seq"]) in recorded or name in run.lost:
            continue  # evicted and on record; or lost at an earlier cut
        elif c["closed"] > when - window and name not in safe:
            run.lost.add(name)  # in the window this cut may take
        else:
            age = when - c["closed"]
            raise AssertionError(
                f"{name}, ready {age:.2f}s before the cut (window {window:.3f}s), is not"
                " on the spool, nor on the NAS, nor evicted on record"
            )
    for name, event in run.events("spilled", when).items():
        # A record goes to RAM (then spilled) only while the spool cannot take it.
        assert event["camera"] != LOSS_CAMERA, f"the loss record {name} was written to RAM"
        assert event["sha256"] == closed[name]["sha256"], f"{name} spilled, not as recorded"


@pytest.fixture
def power_cuts(tmp_path: Path) -> Iterator[PowerCuts]:
    with contextlib.ExitStack() as cleanup:  # every step undone, whatever failed
        share = Share(tmp_path / "nas")
        cleanup.callback(share.close)
        cgroup = Cgroup(f"livecam-powercut-{os.getpid()}-{tmp_path.name}")
        transport = {"plugin": "nfs", "path": str(share.mnt), "fstypes": ["tmpfs"]}
        node = Node(
            tmp_path / "node",
            transport,
            spill_after=f"{SPILL_AFTER}s",
            spool={"max_bytes": "300K"},
        )
        node.preexec = cgroup.join
        safe_log = tmp_path / "node" / "safe.jsonl"
        (node.plugins / "safe.py").write_text(SAFE.replace("{log!r}", repr(str(safe_log))))
        spool = LazyMount(tmp_path / "spool-backing", node.spool, cgroup)
        cleanup.callback(spool.unmount)
        cleanup.callback(node.cleanup)
        cleanup.callback(cgroup.remove)  # first: nothing of the node may hold the spool
        spool.mount()
        yield PowerCuts(node, share, spool, safe_log)


def test_power_cuts_lose_only_the_stated_window_and_nothing_unrecorded(power_cuts, tmp_path):
    run = power_cuts
    for cut in CUTS:
        check_the_cut(run, *run.run(cut))
    # The NAS back: everything left ships, then a clean stop.
    run.nas(True)
    proc = run.node.start()
    wait_for(lambda: not run.node.local_segments("spool"), 60, "the spool drained")
    assert run.node.stop(proc) == 0
    if run.node.local_segments("buffer") or run.node.local_segments("spool"):
        run.node.drain()
    closed = run.node.closed()
    numbers = [(c["camera"], c["seq"]) for c in closed]
    assert len(numbers) == len(set(numbers)), "a sequence number was handed out twice"
    nas_records = records_in(run.share.store)
    evicted = {
        c["name"] for c in closed if (c["camera"], c["seq"]) in evicted_on_record(nas_records)
    }
    check_arrived(run, closed, lost_ok=run.lost | evicted)
    missing_evicted = {c["name"] for c in closed} - set(run.share.segments()) - run.lost
    assert run.node.status()["shipper"]["evictions"] >= len(missing_evicted)
    # An eviction whose rename or unlink a cut forgot brings its segment back, and it
    # ships (so none may be missing); its record, fsynced before the unlink, stays.
    assert evicted_on_record(nas_records), "the eviction cuts evicted nothing on record"
    check_restarts(run, closed, nas_records)
    check_audit(run, closed, tmp_path / "index.sqlite")


def check_arrived(run: PowerCuts, closed: list[dict], lost_ok: set[str]) -> None:
    """Every closed segment but ``lost_ok`` is on the NAS once, whole; nothing else is,
    but the temp a publish killed between its link and its unlink left beside the
    segment it had just published (``livecam/transport/dirstore.py``: the retry finds
    the segment "already there" and leaves the temp)."""
    on_nas = run.share.segments()
    names = [p.name for p in run.share.store.rglob("*.mp4") if not p.name.startswith(".")]
    assert len(names) == len(set(names)), "a segment is on the NAS twice"
    for c in closed:
        if c["name"] in on_nas:
            assert sha256(on_nas[c["name"]]) == c["sha256"], f"{c['name']} differs on the NAS"
        else:
            assert c["name"] in lost_ok, f"{c['name']} never arrived"
    for temp in run.share.hidden():
        final = temp.with_name(temp.name[1:].removesuffix(".part"))
        assert final.exists() and sha256(temp) == sha256(final), f"a temp file left: {temp}"


def check_restarts(run: PowerCuts, closed: list[dict], records: list[dict[str, Any]]) -> None:
    """The first start after each cut says whether the node had stopped cleanly."""
    restarts = sorted((r for r in records if r["kind"] == "restart"), key=lambda r: r["time"])
    for cut, when in run.cuts:
        for camera in ("cam0", "cam1"):
            after = [r for r in restarts if r["camera"] == camera and r["time"] > when]
            assert after, f"no restart record after the cut {cut.what!r}"
            assert after[0]["clean"] is cut.clean_stop, (cut.what, after[0])
            if cut.clean_stop:
                mine = [c["seq"] for c in closed if c["camera"] == camera and c["closed"] < when]
                assert after[0]["last_seq"] == max(mine), (cut.what, after[0])


def check_audit(run: PowerCuts, closed: list[dict], db: Path) -> None:
    """``livecam nas audit`` explains every hole, and explains each right: a segment
    lost in a cut's window as the power cut, every other missing one as evicted."""
    argv = ["nas", "audit", "--root", str(run.share.store), "--db", str(db), "--grace", "0s"]
    done = subprocess.run(livecam_cmd(*argv, "--json"), capture_output=True, text=True, timeout=120)
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["unexplained_gaps"] == 0, done.stdout
    on_nas = set(run.share.segments())
    for camera in report["cameras"]:
        if camera["camera"] == LOSS_CAMERA:
            continue
        cause = {
            seq: c["cause"]
            for hole in camera["holes"]
            for c in hole["causes"]
            for seq in numbers(c["ranges"])
        }
        for c in closed:
            if c["camera"] != camera["camera"] or c["name"] in on_nas:
                continue
            allowed = {"power_cut", "evicted"} if c["name"] in run.lost else {"evicted"}
            assert cause.get(c["seq"]) in allowed, (c["name"], cause.get(c["seq"]))
