"""Restarts as the audit tells them (issue 22): a clean restart continues its numbers
(only a time gap, explained), a recorder crash skips a range whose cut-off segment
was salvaged (never used, not "lost"), holes are ranges with their time, never lists
of numbers, and an overlap between two segments is a time fault.

The first two run real nodes (``livecam``, ffmpeg, the ``nfs`` transport into a
tmpfs share). The size bounds need histories no test could wait for (40 starts; a
day of 30 s segments): they are written by the node's own code (its sequence
counter, its ``restart``/``stopped`` records, its loss writer) on a clock the test
moves, with every segment a real ffmpeg file (hard links of one), and audited by
the real ``livecam nas audit`` and the web's timeline.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse

from livecam.nas import config as nasconfig
from livecam.nas import probe
from livecam.recorder.sequence import SequenceCounter
from livecam.storage import losses
from livecam.storage.layout import NodeDisk
from livecam.storage.segment import Segment, segment_name
from livecam.storage.tiers import Tier
from livecam.web.nas import timeline
from tests.core.node import wait_for
from tests.nas.conftest import audit_json, landed, nas, nfs_node, segment_files

pytestmark = pytest.mark.slow

CAM0 = {"cam0": {"size": [160, 120], "fps": 10, "bitrate": "300k", "preset": "ultrafast",
                 "keyframe_seconds": "500ms", "pattern": "testsrc2"}}  # fmt: skip


def seq_of(path: Path) -> int:
    return int(path.stem.rsplit("-", 1)[1])


def holes(report: dict[str, Any], kind: str, camera: str = "cam0") -> list[dict[str, Any]]:
    return [h for c in report["cameras"] if c["camera"] == camera
            for h in c["holes"] if h["kind"] == kind]  # fmt: skip


def test_a_clean_restart_continues_its_numbers_and_leaves_a_time_gap(tmp_path: Path):
    with nfs_node(tmp_path, cameras=CAM0, segment_seconds=2) as (node, share):
        for _ in range(2):
            mark = len(node.closed())
            proc = node.start()
            wait_for(lambda m=mark: len(node.closed()) >= m + 3, 40, "recording")
            assert node.stop(proc) == 0
            time.sleep(4)  # stopped long enough for a time gap the audit must explain
        node.drain()
        root = landed(share, tmp_path / "nasroot")
    seqs = [c["seq"] for c in node.closed()]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs  # no jump at the restart
    code, report = audit_json(root, "--grace", "0s")
    text = nas("nas", "audit", "--root", str(root), "--grace", "0s", "--no-index").stdout
    print(text)
    assert code == 0 and holes(report, "sequence") == [], text
    [gap] = holes(report, "time")
    assert gap["explained"] and gap["causes"][0]["cause"] == "restart", gap
    assert "stopped cleanly at " in gap["causes"][0]["text"] and gap["seconds"] > 3, gap


def test_a_recorder_crash_skips_one_range_and_its_salvaged_segment_is_not_lost(tmp_path: Path):
    with nfs_node(tmp_path, cameras=CAM0, segment_seconds=2) as (node, share):
        ship = node.start("ship")
        recorder = node.start("record", "cam0")
        wait_for(lambda: len(node.closed()) >= 3, 40, "recording")
        mark = len(node.closed())
        wait_for(lambda: len(node.closed()) > mark, 10, "a segment closed")
        time.sleep(1.0)  # in the middle of the next one (2 s): a second of it is written
        os.kill(recorder.pid, signal.SIGKILL)  # its ffmpeg dies with it (PDEATHSIG)
        recorder.wait(timeout=10)
        mark = len(node.closed())
        recorder = node.start("record", "cam0")
        wait_for(lambda: len(node.closed()) >= mark + 3, 40, "recording again")
        assert node.stop(recorder) == 0 and node.stop(ship) == 0
        node.drain()
        root = landed(share, tmp_path / "nasroot")
    assert "salvaged" in node.log_text()
    code, report = audit_json(root, "--grace", "0s")
    text = nas("nas", "audit", "--root", str(root), "--grace", "0s", "--no-index").stdout
    print(text)
    [hole] = holes(report, "sequence")
    assert code == 0 and hole["explained"] and abs(hole["seconds"]) <= 3, text
    [cause] = hole["causes"]
    assert cause["cause"] == "restart" and "salvaged" in cause["text"], cause  # not power_cut
    assert cause["ranges"] == [[hole["first_seq"], hole["last_seq"]]], cause
    assert hole["last_seq"] - hole["first_seq"] < 1000, hole  # the rest of one block
    [line] = [ln for ln in text.splitlines() if f"seq {hole['first_seq']}-" in ln]
    assert "never used" in line and "lost" not in line, line
    assert float(line.split("s not recorded")[0].rsplit(" ", 1)[1]) <= 3, line


def test_an_overlap_between_segments_is_a_time_fault(tree: Path, tmp_path: Path):
    files = segment_files(tree, "cam0")
    a, b = files[3], files[4]
    a_end = Segment.from_path(a).start.timestamp() + probe.duration(a)  # type: ignore[union-attr]
    start = datetime.fromtimestamp(math.floor(a_end) - 2, UTC)  # 2-3 s before a ends
    b.rename(b.with_name(segment_name("cam0", start, seq_of(b))))
    done = nas("nas", "audit", "--root", str(tree), "--grace", "1h", "--json")
    [hole] = [h for h in holes(json.loads(done.stdout), "overlap") if h["first_seq"] == seq_of(b)]
    assert done.returncode == 1 and not hole["explained"], hole
    assert f"before seq {seq_of(a)} ends" in hole["fault"] and hole["seconds"] < -1.1, hole
    text = nas("nas", "audit", "--root", str(tree), "--grace", "1h", "--no-index").stdout
    assert f"UNEXPLAINED overlap at seq {seq_of(b)} (" in text, text
    # A clock that stepped back explains it.
    writer = History(tmp_path / "node").writer
    record = writer.record("clock_step", "cam0", [seq_of(b)], "stepped", step_seconds=-2.5)
    assert record is not None
    publish(record, tree)
    _, report = audit_json(tree, "--grace", "1h")
    [hole] = [h for h in holes(report, "overlap") if h["first_seq"] == seq_of(b)]
    assert hole["explained"] and hole["causes"][0]["cause"] == "clock_step", hole


# --- histories written by the node's own code, for the size bounds -------------------------


def publish(record: Path, root: Path) -> None:
    """Place a loss record on the NAS as the shipper does (``remote_path``'s layout)."""
    rec = Segment.from_path(record)
    assert rec is not None
    dest = root / "lab/node01" / losses.LOSS_CAMERA / f"{rec.start:%Y-%m-%d}" / record.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(record, dest)


class History:
    """One camera's life as its node writes it, on a clock the test moves: each run
    reserves numbers (``SequenceCounter``), records its start (``note_start``), closes
    segments (hard links of one real file, named as the recorder names them) and
    ends cleanly (``release``, ``mark_clean_stop``), by a crash, or by a reboot (a
    crash that also wipes the RAM buffer)."""

    def __init__(self, base: Path, segment: Path | None = None, seconds: float = 0.0):
        self.base, self.segment, self.seconds = base, segment, seconds
        for tier in ("buffer", "spool"):
            (base / tier).mkdir(parents=True, exist_ok=True)
        tiers = (Tier(t, base / t, max_bytes=1 << 30) for t in ("buffer", "spool"))
        self.disk = NodeDisk(*tiers)
        self.writer = losses.LossWriter(self.disk, "lab", "node01", clock=lambda: self.clock)
        self.clock = time.time()  # the wall clock until a run sets its own

    def run(self, root: Path, start: float, segments: int, end: str) -> float:
        """One run of ``segments`` from ``start``; when it ended (Unix seconds)."""
        self.clock = start
        seq = SequenceCounter(self.disk, "cam0")
        losses.note_start(self.writer, "cam0", previous_limit=seq.previous_limit,
                          starts_at=seq.first)  # fmt: skip
        name = None
        for _ in range(segments):
            name = segment_name("cam0", datetime.fromtimestamp(self.clock, UTC), seq.take())
            day = root / "lab/node01/cam0" / f"{datetime.fromtimestamp(self.clock, UTC):%F}"
            day.mkdir(parents=True, exist_ok=True)
            assert self.segment is not None
            os.link(self.segment, day / name)
            self.clock += self.seconds
        if end == "clean":
            seq.release()
            losses.mark_clean_stop(self.writer, "cam0", name)
        if end == "reboot":
            shutil.rmtree(self.base / "buffer")
            (self.base / "buffer").mkdir()
        for record in (self.base / "spool" / losses.LOSS_CAMERA).glob("[!.]*"):
            publish(record, root)
        return self.clock


def real_segment(path: Path, seconds: int) -> Path:
    """A real segment as livecam's ffmpeg backend writes them (fragmented MP4)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "5",
         "-movflags", "+frag_keyframe+empty_moov+default_base_moof", "-f", "mp4", str(path)],
        check=True, timeout=120,
    )  # fmt: skip
    return path


def test_the_audit_of_20_restarts_and_20_crashes_stays_small(tmp_path: Path):
    root = tmp_path / "root"
    life = History(tmp_path / "node", real_segment(tmp_path / "seg.mp4", 2), 2.0)
    when = time.time() - 86400
    ends = ["crash", "clean", "reboot", "clean"] * 10  # 20 clean stops, 20 crashes
    for end in ends:
        when = life.run(root, when, 3, end) + 10  # each run 3 segments, then 10 s down
    config = tmp_path / "nas.yaml"
    config.write_text(json.dumps({"root": str(root), "sha256": True}))  # one probe for all
    done = nas("nas", "audit", "-c", str(config), "--grace", "0s", "--json")
    size = len(done.stdout.encode())
    print(f"audit JSON: {size} bytes")
    report = json.loads(done.stdout)
    assert done.returncode == 0 and report["unexplained_gaps"] == 0, done.stdout[-3000:]
    [cam] = report["cameras"]
    assert cam["segments"] == 120 and len(cam["holes"]) == 40, cam["holes"]  # 39 + the silence
    assert cam["last_seq"] > 1_000_000, cam  # ten reboots skipped 100,000 numbers each
    assert size < 100_000, size
    text = nas("nas", "audit", "-c", str(config), "--grace", "0s", "--no-index").stdout
    assert len(text) < 20_000 and max(map(len, text.splitlines())) < 400, text


def test_a_camera_days_timeline_of_2880_segments_stays_under_a_megabyte(tmp_path: Path):
    root = tmp_path / "root"
    life = History(tmp_path / "node", real_segment(tmp_path / "seg.mp4", 29), 29.0)
    day = datetime.fromtimestamp(time.time() - 3 * 86400, UTC).replace(
        hour=0, minute=0, second=0, microsecond=0
    )
    when = day.timestamp()
    for end in ["reboot", "crash", "clean", "reboot", "crash", "clean"]:  # 6 starts a day
        when = life.run(root, when, 480, end) + 60
    assert when < day.timestamp() + 86400
    config = tmp_path / "nas.yaml"
    config.write_text(json.dumps({"root": str(root), "sha256": True}))
    assert nas("nas", "index", "-c", str(config)).returncode == 0
    cfg = nasconfig.load(str(config), None)
    body = JSONResponse(timeline(cfg, ("lab", "node01", "cam0"), f"{day:%F}")).body
    tl = json.loads(body)
    print(f"timeline JSON: {len(body)} bytes, {len(tl['holes'])} holes")
    assert len(tl["segments"]) == 2880 and len(tl["holes"]) >= 5, tl["holes"]
    assert all(h["explained"] for h in tl["holes"]), tl["holes"]
    assert len(body) < 1_000_000, len(body)
