"""Loss records, end to end on a real node (README.md; docs/architecture.md "Loss
records and the NAS side"; docs/nas.md "Loss records: what the nodes tell the NAS").

Every kind is written where the docs say: straight into the disk spool, and into
the RAM buffer only while the spool cannot take it. Records in the spool survive
a power cut (RAM wiped) and are never evicted, also from a spool at its quota.
Each reaches the NAS beside the recordings, under
``<site>/<node>/_losses/<date>/`` as ``loss-*.json`` (never a video: issue 22), byte
for byte, and the evictions it records are exactly the node's EVICTED lines.

One node lives through all of it while its NAS is away (so each record waits on
the node, where the test sees it): a start (``restart``), a camera whose ffmpeg
is killed mid-segment (``camera_down``, ``salvaged``), a clock step
(``clock_step``, by the naming clock's test hook ``LIVECAM_CLOCK_OFFSET``), a
spool quota (``evicted``), a power cut (``restart`` after a crash), a spool that
fails read-only and is fixed (``spool_failed``, ``spool_recovered``); then the
NAS returns and the node stops cleanly (``stopped``). The spool is a
tmpfs of its own, the NAS a tmpfs share behind the nfs transport.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from livecam.storage.losses import FORMAT, KINDS, LOSS_CAMERA
from livecam.storage.segment import Segment
from tests.conftest import livecam_cmd
from tests.core.node import Node, Share, assert_all_arrived, wait_for
from tests.core.test_reliability import SpoolDisk, evicted_in_log, nfs

pytestmark = pytest.mark.slow

CAMERAS = {
    cam: {"size": [160, 120], "fps": 10, "bitrate": "300k", "preset": "ultrafast",
          "keyframe_seconds": "250ms", "pattern": pattern}
    for cam, pattern in (("cam0", "testsrc2"), ("cam1", "smptebars"))
}  # fmt: skip


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


def records_in(tier: Path) -> dict[str, bytes]:
    """The loss records a tier holds: name -> content."""
    return {p.name: p.read_bytes() for p in tier.glob(f"{LOSS_CAMERA}/loss-*.json")}


def kinds(records: dict[str, bytes]) -> list[str]:
    return sorted(json.loads(data)["kind"] for data in records.values())


class Seen:
    """Every record seen on the node, and where: {name: content} per tier."""

    def __init__(self, node: Node):
        self.node = node
        self.spool: dict[str, bytes] = {}
        self.buffer: dict[str, bytes] = {}

    def look(self) -> None:
        self.spool |= records_in(self.node.spool)
        self.buffer |= records_in(self.node.buffer)

    def kinds(self, tier: str) -> list[str]:
        return kinds(self.spool if tier == "spool" else self.buffer)


def kill_mid_segment(n: Node, cam: str) -> None:
    """SIGKILL ``cam``'s ffmpeg 0.6 s into a 2 s segment (two fragments written)."""

    def closes() -> list[dict]:
        return [c for c in n.closed() if c["camera"] == cam]

    before = len(closes())
    wait_for(lambda: len(closes()) > before, 20, "a fresh segment boundary")
    time.sleep(max(0.0, closes()[-1]["closed"] + 0.6 - time.time()))
    for pid in wait_for(lambda: n.pids("ffmpeg", f"{cam}/.open"), 20, f"{cam}'s ffmpeg"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_every_kind_of_loss_record_is_kept_where_the_docs_say_and_reaches_the_nas(
    tmp_path, share, spooldisk, monkeypatch
):
    offset = tmp_path / "clock-offset"
    offset.write_text("0\n")
    monkeypatch.setenv("LIVECAM_CLOCK_OFFSET", str(offset))
    n = Node(
        tmp_path / "node",
        nfs(share),
        cameras=CAMERAS,
        segment_seconds=2,
        spool={"path": str(spooldisk.path), "max_bytes": "400K"},
        spill_after="1s",
    )
    seen = Seen(n)
    try:
        # The NAS is away from the start, so every record waits on the node to be seen.
        share.unmount()
        proc = n.start()
        wait_for(lambda: len(n.closed()) >= 4, 40, "recording")
        # camera_down, and salvaged: what the killed ffmpeg wrote of its segment plays.
        for attempt in range(1, 6):  # a kill before the first fragment leaves nothing to keep
            kill_mid_segment(n, "cam0")
            wait_for(lambda a=attempt: n.log_text().count("camera cam0 failed") >= a, 20, "failed")
            if "salvaged" in n.log_text():
                break
        assert "salvaged" in n.log_text()
        offset.write_text("-3600\n")  # NTP steps back a clock that ran an hour fast
        wait_for(lambda: n.log_text().count("the clock stepped") >= 2, 30, "both cameras")
        # The spool fills to its quota and evicts, recording each loss there.
        wait_for(lambda: n.status()["shipper"]["evictions"] >= 4, 90, "evictions")
        seen.look()
        assert seen.kinds("buffer") == [], "the spool works: no record in RAM"
        assert set(seen.kinds("spool")) == {
            "restart",
            "camera_down",
            "salvaged",
            "clock_step",
            "evicted",
        }, seen.kinds("spool")
        # A power cut in the outage: RAM is wiped, the spool's records are not.
        n.kill_all()
        before_the_cut = records_in(n.spool)
        recorded = [json.loads(r)["detail"]["segment"] for r in before_the_cut.values()
                    if json.loads(r)["kind"] == "evicted"]  # fmt: skip
        assert set(evicted_in_log(n)) <= set(recorded), "a record per eviction"
        power_cut = {p.name for p in n.local_segments("buffer")}  # the RAM it took
        shutil.rmtree(n.buffer)
        before = {c["pid"] for c in n.closed()}
        proc = n.start()
        wait_for(lambda: sum(c["pid"] not in before for c in n.closed()) >= 4, 30, "recording")
        # The SD card fails read-only: its records go to RAM, and ship from there.
        spooldisk.break_("readonly")
        wait_for(lambda: "spool_failed" in seen.kinds("buffer") or seen.look(), 30, "in RAM")
        subprocess.run(["mount", "-o", "remount,rw", str(spooldisk.mnt)], check=True)
        wait_for(lambda: "works again" in n.log_text(), 30, "the spool works again")
        wait_for(lambda: "spool_recovered" in seen.kinds("spool") or seen.look(), 30, "spool")
        count = n.status()["shipper"]["evictions"]
        wait_for(lambda: n.status()["shipper"]["evictions"] >= count + 2, 60, "evicting on")
        seen.look()
        assert set(before_the_cut) <= set(seen.spool), "the power cut took no record"
        share.mount()
        assert n.stop(proc) == 0
        n.drain(timeout=60)
    finally:
        n.cleanup()
    evicted = evicted_in_log(n)
    closed = assert_all_arrived(n, share, lost_ok=set(evicted) | power_cut)
    on_nas = share.records()
    assert all(p.suffix == ".json" for p in on_nas.values()), "a loss record named as a video"
    # Every record the node held reached the NAS, byte for byte: none was evicted.
    for name, data in (seen.spool | seen.buffer).items():
        assert name in on_nas and on_nas[name].read_bytes() == data, name
    records = [json.loads(p.read_text()) for p in on_nas.values()]
    assert {r["kind"] for r in records} == set(KINDS)
    for name, path in on_nas.items():  # <site>/<node>/_losses/<date>/<name>
        start = Segment.from_path(path)
        assert start is not None
        expected = f"lab/node01/{LOSS_CAMERA}/{start.start:%Y-%m-%d}/{name}"
        assert path.relative_to(share.store).as_posix() == expected
    for r in records:
        assert (r["format"], r["site"], r["node"]) == (FORMAT, "lab", "node01"), r
    by_kind: dict[str, list[dict]] = {}
    for r in records:
        by_kind.setdefault(r["kind"], []).append(r)
    # Each eviction, as the log says (a crash between the record and the count may
    # write one twice); spool failures for the node as a whole.
    assert {r["detail"]["segment"] for r in by_kind["evicted"]} == set(evicted)
    assert all(r["camera"] == "" for r in by_kind["spool_failed"] + by_kind["spool_recovered"])
    # Written to RAM while the spool could not take it (from where a spill may move it
    # once the spool works again), the others to the spool, RAM untouched.
    assert seen.kinds("buffer") == ["spool_failed"]
    assert set(seen.kinds("spool")) == set(KINDS) - {"stopped"}  # the stop: after the look
    # The clean stop: one record per camera, with its last segment.
    last = {cam: max(c["seq"] for c in closed if c["camera"] == cam) for cam in ("cam0", "cam1")}
    assert {r["camera"]: r["detail"]["last_seq"] for r in by_kind["stopped"]} == last
    # The start after the power cut says it followed a crash, for both cameras.
    crashed = {r["camera"] for r in by_kind["restart"] if r["detail"]["clean"] is False
               and r["detail"]["reserved_below"] is not None}  # fmt: skip
    assert crashed == {"cam0", "cam1"}, by_kind["restart"]
    assert {r["camera"] for r in by_kind["clock_step"]} == {"cam0", "cam1"}
    assert all(-3700 < r["detail"]["step_seconds"] < -3500 for r in by_kind["clock_step"])
    names = {c["seq"]: c["name"] for c in closed if c["camera"] == "cam0"}
    for r in by_kind["salvaged"]:  # a segment the recorder closed (then shipped, or evicted)
        assert r["camera"] == "cam0" and r["sequences"][0] in names, r


def test_a_node_whose_only_camera_never_records_ships_records_not_videos(tmp_path, share):
    """Issue 22: a camera whose device is missing fails again and again; its
    ``camera_down`` records reach the NAS as JSON (``_losses/<date>/loss-*.json``), every
    ``.mp4`` there plays (``find -name '*.mp4' | xargs ffprobe`` trips on none), and
    status and metrics show 0 published segments, no last success, and the records
    apart, exactly as many as the NAS holds; ``nas index`` counts them as records."""
    camera = {"input": "-f v4l2 -i /dev/video-livecam-missing", "size": [160, 120], "fps": 10}
    n = Node(tmp_path / "node", nfs(share), cameras={"cam0": camera}, segment_seconds=2)
    try:
        shipper = n.start("ship")
        recorder = n.start("record", "cam0")
        down = wait_for(
            lambda: [r for r in share.records().values() if b'"camera_down"' in r.read_bytes()][2:],
            60,
            "three camera_down records on the NAS",
        )
        assert n.stop(recorder) == 0  # no record is written after this one's
        wait_for(lambda: not n.local_records(), 30, "every record published")
        # The shipper saves its counts a moment after it publishes.
        status = wait_for(
            lambda: (s := n.status())["shipper"]["records_published"] == len(share.records()) and s,
            15,
            "the shipper's count saved",
        )
        prom = subprocess.run(
            livecam_cmd("-c", str(n.config_file), "status", "--prometheus"),
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout  # fmt: skip
        assert n.stop(shipper) == 0
    finally:
        n.cleanup()
    files = [p for p in share.store.rglob("*") if p.is_file()]
    records = share.records()
    assert down and sorted(files) == sorted(records.values()), files
    assert all(p.suffix == ".json" for p in files), files
    for video in share.store.rglob("*.mp4"):  # none here; each one would have to play
        subprocess.run(["ffprobe", "-v", "error", str(video)], check=True, timeout=60)
    kinds = {json.loads(p.read_text())["kind"] for p in files}
    assert {"restart", "camera_down"} <= kinds, kinds
    ship = status["shipper"]
    assert (ship["published"], ship["published_bytes"], ship["last_success"]) == (0, 0, None)
    assert ship["records_published"] == len(records) >= 4, (ship, sorted(records))
    assert status["tiers"]["spool"]["segments"] == status["shipper"]["backlog_segments"] == 0
    assert "\nlivecam_published_segments_total 0\n" in prom
    assert f"\nlivecam_loss_records_published_total {len(records)}\n" in prom
    assert "livecam_shipper_last_success_timestamp_seconds" not in prom
    done = subprocess.run(
        livecam_cmd("nas", "index", "--root", str(share.store), "--json"),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    stats = json.loads(done.stdout)
    assert (stats["segments"], stats["records"]) == (0, len(records)), stats
    print(f"{len(records)} loss records published, 0 segments; kinds {sorted(kinds)}")
