"""Every metric docs/monitoring.md documents, read from a real node put in known states.

A real node (tests/core/node.py): a camera that records, one whose site backend hands
the recorder garbage between real MP4s (bad segments), one whose input does not exist
(it fails and restarts, then its recorder is SIGKILLed: dead), a shipper
through a tmpfs "NAS share" that goes away (spills, evictions from a 400 KB spool,
transient failures), comes back read-only (permanent failures, alarm), then writable
with a file of other content under one segment's name (a conflict) and publishes
again; and ``livecam metrics --textfile`` writing into a tmpfs all along.

Three times (in the alarm, after the return, after a clean stop) the test reads
``livecam status --json``, ``livecam status --prometheus`` and the writer's file,
with every livecam process (and ffmpeg) SIGSTOPped but the writer, so all three
see the same state: each metric of the documented table (parsed from the doc, so
a new row is checked too), with exactly its documented labels, has the value the
status shows. After the stop the counters are also checked against what the test
caused and saw: the NAS's files and bytes, the log's spills, evictions, failures
and restarts, the garbage the backend wrote, the segments the witness saw closed.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import livecam
from livecam.storage.losses import is_loss_record
from tests.conftest import REPO, livecam_cmd
from tests.core.node import Node, Share, wait_for
from tests.core.test_promises_camera import BACKEND as GARBAGE_BACKEND

pytestmark = pytest.mark.slow

SEGMENT_SECONDS = 2
SPOOL_MAX = 400 * 1024
INTERVAL = 1  # the writer's; its least
# The shipper states of a process that does not run (livecam_shipper_up 0).
SHIPPER_DOWN = ("dead", "stopped", "never started")

Status = dict[str, Any]
Labels = dict[str, str]


# --- the documented table ----------------------------------------------------------------


def documented() -> dict[str, tuple[list[str], list[str]]]:
    """docs/monitoring.md's metrics table: name -> (label names, label values the doc
    fixes, as for ``kind``)."""
    text = (REPO / "docs" / "monitoring.md").read_text()
    table = text.split("| metric | labels | meaning |", 1)[1].split("\n\n", 1)[0]
    out: dict[str, tuple[list[str], list[str]]] = {}
    for row in table.splitlines()[2:]:
        metrics, labels = row.split("|")[1:3]
        names, _, values = labels.partition("=")
        for metric in re.findall(r"`(livecam_\w+)`", metrics):
            out[metric] = (re.findall(r"`(\w+)`", names), re.findall(r"`(\w+)`", values))
    return out


# --- what each metric must say, from status --json -----------------------------------------


def _cam(key: str) -> Callable[[Status, Labels], float]:
    return lambda s, lab: s["cameras"][lab["camera"]][key]


def _tier(key: str) -> Callable[[Status, Labels], float]:
    return lambda s, lab: s["tiers"][lab["tier"]][key]


def _ship(key: str) -> Callable[[Status, Labels], float]:
    return lambda s, lab: s["shipper"][key]


def _last_segment(s: Status, lab: Labels) -> float:
    cam = s["cameras"][lab["camera"]]
    return cam["last_closed_at"] if cam["last_closed_at"] is not None else cam["started"]


EXPECTED: dict[str, Callable[[Status, Labels], float]] = {
    "livecam_info": lambda s, lab: 1,
    "livecam_segment_seconds": lambda s, lab: SEGMENT_SECONDS,
    "livecam_metrics_interval_seconds": lambda s, lab: INTERVAL,
    "livecam_camera_up": lambda s, lab: s["cameras"][lab["camera"]]["state"] == "recording",
    "livecam_segments_closed_total": _cam("segments"),
    "livecam_last_segment_timestamp_seconds": _last_segment,
    "livecam_dropped_frames_total": _cam("dropped_frames"),
    "livecam_camera_restarts_total": _cam("restarts"),
    "livecam_bad_segments_total": _cam("bad_segments"),
    "livecam_salvaged_segments_total": _cam("salvaged"),
    "livecam_clock_steps_total": _cam("clock_steps"),
    "livecam_tier_bytes": _tier("bytes"),
    "livecam_tier_max_bytes": _tier("max_bytes"),
    "livecam_tier_segments": _tier("segments"),
    "livecam_shipper_up": lambda s, lab: s["shipper"]["state"] not in SHIPPER_DOWN,
    "livecam_shipper_backlog_segments": _ship("backlog_segments"),
    "livecam_shipper_backlog_bytes": _ship("backlog_bytes"),
    "livecam_published_segments_total": _ship("published"),
    "livecam_published_bytes_total": _ship("published_bytes"),
    "livecam_spilled_segments_total": _ship("spilled"),
    "livecam_loss_records_published_total": _ship("records_published"),
    "livecam_shipper_backlog_loss_records": _ship("backlog_records"),
    "livecam_publish_failures_total": lambda s, lab: s["shipper"]["failures_by_kind"].get(
        lab["kind"], 0
    ),
    "livecam_shipper_alarm": lambda s, lab: (
        s["shipper"]["state"] == "alarm" and s["shipper"]["last_error"]["permanent"]
    ),
    "livecam_shipper_last_success_timestamp_seconds": lambda s, lab: s["shipper"]["last_success"][
        "time"
    ],
    "livecam_evicted_segments_total": lambda s, lab: s["shipper"]["evicted_by"].get(
        f"{lab['camera']}/{lab['tier']}", 0
    ),
    "livecam_evicted_bytes_total": _ship("evicted_bytes"),
    "livecam_spool_failed": lambda s, lab: bool(s["spool_failed"]),
}
# Ages: the status's figure grown by the time between the two gatherings.
AGES: dict[str, Callable[[Status, Labels], float | None]] = {
    "livecam_tier_oldest_age_seconds": lambda s, lab: s["tiers"][lab["tier"]]["oldest_age"],
    "livecam_shipper_lag_seconds": lambda s, lab: s["shipper"]["lag"],
}
WRITER_ONLY = {"livecam_metrics_interval_seconds"}  # the doc: "(in its file only)"


def label_values(label: str, fixed: list[str], s: Status) -> list[str]:
    """The values a documented label must take, every one of them."""
    if fixed:
        return fixed
    values = {
        "camera": list(s["cameras"]),
        "tier": list(s["tiers"]),
        "version": [livecam.__version__],
        "node": [s["node"]],
        "site": [s["site"]],
        "transport": [s["shipper"]["transport"] or ""],
    }
    assert label in values, (
        f"docs/monitoring.md documents a label {label!r} this test does not know"
    )
    return values[label]


# --- reading the exposition ------------------------------------------------------------------

SAMPLE = re.compile(r"^(\w+)(?:\{(.*)\})? (\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> tuple[dict[str, list[tuple[Labels, float]]], dict[str, str]]:
    """Samples by family name, and each family's TYPE (of those with a HELP line too);
    fails on a line it cannot read."""
    samples: dict[str, list[tuple[Labels, float]]] = {}
    types: dict[str, str] = {}
    helped = set(re.findall(r"^# HELP (\w+) \S", text, re.M))
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ")
            types[name] = kind if name in helped else "no HELP"
            continue
        if line.startswith("#") or not line:
            continue
        m = SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        labels = dict(LABEL.findall(m[2] or ""))
        labels = {k: v.replace('\\"', '"').replace("\\\\", "\\") for k, v in labels.items()}
        samples.setdefault(m[1], []).append((labels, float(m[3])))
    return samples, types


def check(text: str, s: Status, *, writer: bool) -> dict[str, list[tuple[Labels, float]]]:
    """Every documented metric in ``text``, with its documented labels, says what status
    ``s`` says. Returns the samples."""
    samples, types = parse(text)
    table = documented()
    assert len(table) >= 25, "the metrics table of docs/monitoring.md was not found"
    assert set(samples) <= set(table), f"undocumented metrics: {set(samples) - set(table)}"
    now = samples["livecam_status_timestamp_seconds"][0][1]
    assert s["time"] <= now <= time.time(), "gathered after the status, before now"
    for name, (labels, fixed) in table.items():
        if name in WRITER_ONLY and not writer:
            assert name not in samples, name
            continue
        assert name in samples, f"{name} is documented but missing"
        assert types[name] == ("counter" if name.endswith("_total") else "gauge"), name
        got = samples[name]
        assert all(sorted(lab) == sorted(labels) for lab, _ in got), (name, got)
        combos = set(itertools.product(*(label_values(k, fixed, s) for k in labels)))
        assert {tuple(lab[k] for k in labels) for lab, _ in got} == combos, (name, got)
        assert len(got) == len(combos), f"{name}: a label set twice"
        for lab, value in got:
            if name == "livecam_status_timestamp_seconds":
                continue  # checked above
            if name in AGES:
                age = AGES[name](s, lab)
                want = 0.0 if age is None else age + (now - s["time"])
                assert math.isclose(value, want, abs_tol=0.15), (name, lab, value, want)
                continue
            assert name in EXPECTED, f"{name} is documented; say here what it must be"
            want = float(EXPECTED[name](s, lab))
            assert value == want, (name, lab, value, want)
    return samples


# --- the node ----------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    children = [int(p) for p in out.split()]
    return children + [d for c in children for d in descendants(c)]


class Scene:
    """The node, its share, its processes and the writer's file."""

    def __init__(self, root: Path, textfile: Path):
        self.share = Share(root / "nas")
        self.root = root
        self.good, self.garbage = root / "good.mp4", root / "garbage.txt"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10",
             "-t", "1", "-c:v", "libx264", "-f", "mp4", str(self.good)],
            check=True,
        )  # fmt: skip
        small = {"size": [160, 120], "fps": 10, "bitrate": "300k", "preset": "ultrafast"}
        self.node = Node(
            root / "node",
            {"plugin": "nfs", "path": str(self.share.mnt), "fstypes": ["tmpfs"]},
            segment_seconds=SEGMENT_SECONDS,
            remote_path="{camera}/{name}",
            spool={"max_bytes": SPOOL_MAX},
            retry={"initial": "200ms", "max": "1s", "permanent": "1s"},
            cameras={
                "cam0": {**small, "pattern": "testsrc2"},
                "cam1": {"backend": "garbage"},
                "cam2": {**small, "input": "-i /nonexistent/camera.mp4"},
            },
        )
        backend = GARBAGE_BACKEND.format(good=str(self.good), wrote=str(self.garbage))
        (self.node.plugins / "garbage.py").write_text(backend.replace("wait(0.3)", "wait(0.5)"))
        self.textfile = textfile
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        for cam in ("cam0", "cam1", "cam2"):
            self.procs[cam] = self.node.start("record", cam)
        self.procs["ship"] = self.node.start("ship")
        self.writer = self.node.start(
            "metrics", "--textfile", str(self.textfile), "--interval", str(INTERVAL)
        )

    def status(self) -> Status:
        return self.node.status()

    def freeze(self) -> list[int]:
        """SIGSTOP every process of the node but the writer (they stay alive); the
        parents first, so none starts a child (ffmpeg, the nfs helper) unseen."""
        pids = [p.pid for p in self.procs.values() if p.poll() is None]
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        children = [d for pid in pids for d in descendants(pid)]
        for pid in children:
            os.kill(pid, signal.SIGSTOP)
        return pids + children

    @property
    def log(self) -> str:
        return self.node.log_text()

    def close(self) -> None:
        self.node.cleanup()
        self.share.close()


@pytest.fixture
def scene(tmp_path) -> Iterator[Scene]:
    ram = Path(tempfile.mkdtemp(prefix="lc-metrics-", dir="/dev/shm"))  # a tmpfs
    s = Scene(tmp_path, ram / "livecam.prom")
    try:
        yield s
    finally:
        s.close()
        shutil.rmtree(ram)


def prometheus(node: Node) -> str:
    out = subprocess.run(
        livecam_cmd("-c", str(node.config_file), "status", "--prometheus"),
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    return out.stdout


def textfile_after(path: Path, since: float) -> str:
    """The writer's file, once it holds figures gathered after ``since``."""

    def fresh() -> str | None:
        text = path.read_text()
        stamp = re.search(r"^livecam_status_timestamp_seconds (\S+)$", text, re.M)
        return text if stamp and float(stamp[1]) > since else None

    return wait_for(fresh, 20, "the writer rewrote its file")


def snapshot(scene: Scene) -> tuple[Status, dict, dict]:
    """status --json, status --prometheus and the textfile, of one state: every
    process of the node stopped (SIGSTOP: still alive) but the writer, then resumed."""
    pids = scene.freeze()
    try:
        frozen = time.time()
        s = scene.status()
        promtext = prometheus(scene.node)
        filetext = textfile_after(scene.textfile, max(frozen, s["time"]))
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):  # it ended before its SIGSTOP
                os.kill(pid, signal.SIGCONT)
    assert s["shipper"]["state"] not in SHIPPER_DOWN or not pids, "a stopped process is alive"
    print(json.dumps({k: s[k] for k in ("cameras", "tiers", "shipper")}, default=str)[:3000])
    return s, check(promtext, s, writer=False), check(filetext, s, writer=True)


def value(samples: dict, name: str, **labels: str) -> float:
    (v,) = [v for lab, v in samples[name] if lab == labels]
    return v


def log_count(log: str, pattern: str) -> int:
    return len(re.findall(pattern, log, re.M))


def test_every_documented_metric_from_a_real_node_matches_status_and_what_happened(scene):
    node, share = scene.node, scene.share
    scene.start()
    wait_for(lambda: len(share.segments()) >= 3, 60, "publishing")

    # The NAS goes away: transient failures, spills, evictions from the small spool.
    share.unmount()
    wait_for(lambda: node.status()["shipper"]["evictions"] >= 3, 90, "evictions under the quota")
    # It comes back read-only: permanent failures, alarm.
    subprocess.run(["mount", "--bind", "-o", "ro", str(share.store), str(share.mnt)], check=True)
    wait_for(lambda: node.status()["shipper"]["state"] == "alarm", 30, "the shipper alarms")
    s, prom, _ = snapshot(scene)
    assert value(prom, "livecam_shipper_alarm") == 1
    assert value(prom, "livecam_publish_failures_total", kind="permanent") >= 1
    assert value(prom, "livecam_publish_failures_total", kind="transient") >= 1
    assert sum(v for _, v in prom["livecam_evicted_segments_total"]) >= 3
    assert value(prom, "livecam_spilled_segments_total") >= 3
    assert value(prom, "livecam_tier_bytes", tier="spool") <= SPOOL_MAX
    assert value(prom, "livecam_tier_max_bytes", tier="spool") == SPOOL_MAX
    assert value(prom, "livecam_shipper_lag_seconds") > 2 * SEGMENT_SECONDS
    assert value(prom, "livecam_camera_restarts_total", camera="cam2") >= 1  # it fails

    # Writable again, with other content under the newest waiting segment's name.
    waiting = node.local_segments("spool") + node.local_segments("buffer")
    newest = max((p for p in waiting if p.parent.name == "cam0"), key=lambda p: p.stat().st_mtime)
    planted = share.store / "cam0" / newest.name  # remote_path {camera}/{name}
    back = time.time()
    subprocess.run(["mount", "-o", "remount,bind,rw", str(share.mnt)], check=True)
    planted.parent.mkdir(parents=True, exist_ok=True)  # no cam0 segment may have arrived yet
    planted.write_bytes(b"other content under this name")
    wait_for(lambda: "CONFLICT " in scene.log, 30, "the conflict is set aside")
    wait_for(lambda: node.status()["shipper"]["backlog_segments"] <= 3, 60, "caught up")

    # cam2's recorder dies, killed in one of its long waits between restarts (its
    # state saved: the count in status is the log's).
    def settled() -> bool:
        restarts = node.status()["cameras"]["cam2"]["restarts"]
        return restarts >= 4 and restarts == log_count(scene.log, r"camera cam2 failed: ")

    wait_for(settled, 60, "cam2 failed four times")
    scene.procs["cam2"].kill()
    scene.procs["cam2"].wait()
    s, prom, filed = snapshot(scene)
    for samples in (prom, filed):
        assert value(samples, "livecam_camera_up", camera="cam0") == 1
        assert value(samples, "livecam_camera_up", camera="cam1") == 1
        assert value(samples, "livecam_camera_up", camera="cam2") == 0  # dead
        assert value(samples, "livecam_shipper_up") == 1
        assert value(samples, "livecam_shipper_alarm") == 0
        stamp = value(samples, "livecam_last_segment_timestamp_seconds", camera="cam0")
        assert s["time"] - 3 * SEGMENT_SECONDS - 5 < stamp <= s["time"], "fresh"
        assert value(samples, "livecam_shipper_last_success_timestamp_seconds") >= back
    assert s["cameras"]["cam2"]["state"] == "dead"

    # A clean stop: every counter settles; check them against what happened.
    for name in ("cam0", "cam1", "ship"):
        assert node.stop(scene.procs[name]) == 0, scene.log[-3000:]
    s, prom, filed = snapshot(scene)
    log = scene.log
    files = [p for p in share.store.rglob("*") if p.is_file() and not p.name.startswith(".")]
    files.remove(planted)
    # Loss records (``_losses/loss-*.json``: remote_path is {camera}/{name}) are no
    # segments: counted on their own, never in the segments, their bytes or last success.
    records = [p for p in files if is_loss_record(p)]
    on_nas = [p for p in files if p not in records]
    assert records and all(p.suffix == ".json" for p in records), records
    assert all(p.suffix == ".mp4" for p in on_nas), on_nas
    evicted = re.findall(r"EVICTED (\w+)-\S+ from (\w+) \(\S+ limit\): (\d+) bytes", log)
    for samples in (prom, filed):
        assert value(samples, "livecam_shipper_up") == 0
        assert value(samples, "livecam_published_segments_total") == len(on_nas) > 3
        assert value(samples, "livecam_loss_records_published_total") == len(records)
        assert value(samples, "livecam_shipper_backlog_loss_records") == len(
            [p for t in (node.buffer, node.spool) for p in t.glob("*/*") if is_loss_record(p)]
        )
        assert value(samples, "livecam_published_bytes_total") == sum(
            p.stat().st_size for p in on_nas
        )
        assert value(samples, "livecam_spilled_segments_total") == log_count(
            log, r"spilled \S+ to spool"
        )
        assert value(samples, "livecam_evicted_bytes_total") == sum(int(b) for *_, b in evicted)
        for cam, tier in itertools.product(("cam0", "cam1", "cam2"), ("buffer", "spool")):
            assert value(samples, "livecam_evicted_segments_total", camera=cam, tier=tier) == len(
                [e for e in evicted if e[:2] == (cam, tier)]
            )
        failures = {
            "transient": log_count(log, r"publish failed \(transient\)"),
            "permanent": log_count(log, r"publish failed \(PERMANENT\)"),
            "conflict": log_count(log, r"CONFLICT "),
        }
        assert failures["conflict"] == 1 and failures["permanent"] >= 1, failures
        for kind, count in failures.items():
            assert value(samples, "livecam_publish_failures_total", kind=kind) == count, kind
        assert (
            value(samples, "livecam_bad_segments_total", camera="cam1")
            == len(scene.garbage.read_text().split())
            >= 2
        )
        assert (
            value(samples, "livecam_camera_restarts_total", camera="cam2")
            == log_count(log, r"camera cam2 failed: ")
            >= 4
        )
        for cam in ("cam0", "cam1"):
            closed = [c for c in node.closed() if c["pid"] == scene.procs[cam].pid]
            assert value(samples, "livecam_segments_closed_total", camera=cam) == len(closed)
        assert value(samples, "livecam_spool_failed") == 0
        for tier in ("buffer", "spool"):
            files = node.local_segments(tier)
            assert value(samples, "livecam_tier_segments", tier=tier) == len(files)
            assert value(samples, "livecam_tier_bytes", tier=tier) == sum(
                p.stat().st_size for p in files
            )
    assert not [e for e in evicted if e[0] not in s["cameras"]]
    print(
        f"after the stop: {len(on_nas)} published ({s['shipper']['published_bytes']} bytes), "
        f"{s['shipper']['spilled']} spilled, {len(evicted)} evicted, failures {failures}, "
        f"{s['cameras']['cam1']['bad_segments']} bad segments, "
        f"{s['cameras']['cam2']['restarts']} restarts of cam2"
    )
