"""A camera that must exist and sends nothing is a hole (issue 22): the audit knows
every camera seen on the NAS, named in its node's loss records, or listed in the NAS
config's ``cameras`` (the inventory), and the time after each camera's newest
segment, once older than ``grace``, is a hole explained like any other.

Real nodes (``livecam run``, ffmpeg cameras, the ``nfs`` transport into a tmpfs
share): one killed with -9 and never back (unexplained, exit 1, in the report, the
JSON, the Prometheus file and the web timeline); one stopped cleanly (explained by
its ``stopped`` records); a camera whose device is missing (no footage, explained by
its ``camera_down`` records while they come, then by its clean stop, and
unexplained when they stop coming because the node died); a camera of the inventory
that never sent a thing (unexplained).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from starlette.responses import JSONResponse

from livecam.nas import config as nasconfig
from livecam.storage.losses import is_loss_record
from livecam.web.nas import timeline
from tests.core.node import wait_for
from tests.nas.conftest import audit_json, landed, nas, nfs_node

pytestmark = pytest.mark.slow

CAMERA = {"size": [160, 120], "fps": 10, "bitrate": "300k", "preset": "ultrafast",
          "keyframe_seconds": "500ms"}  # fmt: skip
TWO = {"cam0": {**CAMERA, "pattern": "testsrc2"}, "cam1": {**CAMERA, "pattern": "smptebars"}}
GRACE = 3.0  # seconds: the audits below run once this much has passed since the node's end


def silences(report: dict[str, Any], camera: str, node: str = "node01") -> list[dict[str, Any]]:
    """The silent holes of one camera in an audit's JSON."""
    [cam] = [c for c in report["cameras"] if (c["node"], c["camera"]) == (node, camera)]
    return [h for h in cam["holes"] if h["kind"] == "silent"]


def records(root: Path, kind: str, camera: str) -> list[dict[str, Any]]:
    """The loss records of ``kind`` about ``camera`` that reached the NAS."""
    found = [json.loads(p.read_text()) for p in root.rglob("*") if is_loss_record(p)]
    return [r for r in found if r["kind"] == kind and r["camera"] == camera]


def past_grace(since: float) -> None:
    time.sleep(max(0.0, since + GRACE + 1 - time.time()))


def test_a_node_killed_and_never_back_is_unexplained_after_grace(tmp_path: Path):
    with nfs_node(tmp_path, cameras=TWO, segment_seconds=2) as (node, share):
        node.start()
        wait_for(lambda: len(share.segments()) >= 6, 60, "publishing")
        node.kill_all()  # the whole node, never restarted
        killed = time.time()
        root = landed(share, tmp_path / "nasroot")
    # Within grace the node may still be shipping: no hole yet.
    code, report = audit_json(root, "--grace", "1h")
    assert all(silences(report, cam) == [] for cam in TWO), report
    past_grace(killed)
    metrics = tmp_path / "livecam_nas.prom"
    argv = ("nas", "audit", "--root", str(root), "--grace", f"{GRACE:g}s")
    done = nas(*argv, "--prometheus", str(metrics))
    print(done.stdout)
    assert done.returncode == 1, done.stdout
    code, report = audit_json(root, "--grace", f"{GRACE:g}s", "--no-index")
    assert code == 1
    for cam in TWO:
        [hole] = silences(report, cam)
        assert not hole["explained"] and hole["causes"] == [], hole
        assert hole["fault"].startswith("no segment and no loss record since"), hole
        assert hole["first_seq"] is None and hole["seconds"] >= GRACE, hole
        assert f'camera="{cam}"}} 1' in metrics.read_text(), metrics.read_text()
    assert done.stdout.count("UNEXPLAINED silent since ") == 2, done.stdout
    # The web timeline of the day shows it, unexplained, up to now.
    cfg = replace(nasconfig.load(None, str(root)), grace=GRACE)
    day = f"{datetime.now(UTC):%Y-%m-%d}"
    tl = json.loads(JSONResponse(timeline(cfg, ("lab", "node01", "cam0"), day)).body)
    [hole] = [h for h in tl["holes"] if h["kind"] == "silent"]
    assert not hole["explained"] and hole["to"] >= killed + GRACE, hole


def test_a_node_stopped_cleanly_is_explained_by_its_stopped_records(tmp_path: Path):
    with nfs_node(tmp_path, cameras=TWO, segment_seconds=2) as (node, share):
        proc = node.start()
        wait_for(lambda: len(share.segments()) >= 6, 60, "publishing")
        assert node.stop(proc) == 0
        stopped = time.time()
        node.drain()
        root = landed(share, tmp_path / "nasroot")
    past_grace(stopped)
    code, report = audit_json(root, "--grace", f"{GRACE:g}s")
    text = nas("nas", "audit", "--root", str(root), "--grace", f"{GRACE:g}s", "--no-index").stdout
    print(text)
    for cam in TWO:
        [last] = [r["detail"]["last_seq"] for r in records(root, "stopped", cam)]
        [hole] = silences(report, cam)
        assert hole["explained"] and [c["cause"] for c in hole["causes"]] == ["stopped"], hole
        assert "stopped cleanly at " in hole["causes"][0]["text"]
        assert f"after seq {last}" in hole["causes"][0]["text"], (hole, last)
    assert code == 0 and report["unexplained_gaps"] == 0, text


def test_a_camera_without_its_device_is_a_hole_its_records_explain(tmp_path: Path):
    cameras = {"cam0": TWO["cam0"], "cam1": {**CAMERA, "input": "-f v4l2 -i /dev/video-lc-none"}}
    with nfs_node(tmp_path, cameras=cameras, segment_seconds=2) as (node, share):
        proc = node.start()
        began = time.time()
        wait_for(lambda: len(records(share.store, "camera_down", "cam1")) >= 3, 60, "cam1 down")
        past_grace(began)
        # While the node keeps saying so, the camera is down: explained.
        live = ("--grace", f"{GRACE:g}s", "--db", str(tmp_path / "live.sqlite"))
        code, report = audit_json(share.store, *live)
        [cam1] = [c for c in report["cameras"] if c["camera"] == "cam1"]
        assert cam1["segments"] == 0 and cam1["loss_records"] >= 3, cam1
        [hole] = silences(report, "cam1")
        assert hole["explained"] and hole["causes"][0]["cause"] == "camera_down", hole
        assert "camera down since " in hole["causes"][0]["text"], hole
        assert node.stop(proc) == 0
        stopped = time.time()
        node.drain()
        root = landed(share, tmp_path / "nasroot")
    past_grace(stopped)
    code, report = audit_json(root, "--grace", f"{GRACE:g}s")
    text = nas("nas", "audit", "--root", str(root), "--grace", f"{GRACE:g}s", "--no-index").stdout
    print(text)
    [hole] = silences(report, "cam1")
    assert hole["explained"], hole
    assert [c["cause"] for c in hole["causes"]] == ["camera_down", "stopped"], hole
    assert "lab/node01/cam1: 0 segments" in text
    assert code == 0 and report["unexplained_gaps"] == 0, text


def test_a_camera_down_whose_node_dies_is_unexplained_once_its_retries_stop(tmp_path: Path):
    cameras = {"cam1": {**CAMERA, "input": "-f v4l2 -i /dev/video-lc-none"}}
    with nfs_node(tmp_path, cameras=cameras, segment_seconds=2) as (node, share):
        node.start()
        wait_for(lambda: len(records(share.store, "camera_down", "cam1")) >= 3, 60, "cam1 down")
        node.kill_all()
        root = landed(share, tmp_path / "nasroot")
    last = max(records(root, "camera_down", "cam1"), key=lambda r: r["time"])
    past_grace(last["time"] + last["detail"]["delay"])  # its next retry never came
    code, report = audit_json(root, "--grace", f"{GRACE:g}s")
    [hole] = silences(report, "cam1")
    assert code == 1 and not hole["explained"], hole
    assert hole["causes"][0]["cause"] == "camera_down", hole  # what it did say, still shown
    assert hole["fault"].startswith("no segment and no loss record since"), hole


def test_an_inventory_camera_never_seen_is_unexplained(tree: Path, tmp_path: Path):
    config = tmp_path / "nas.yaml"
    inventory = ["lab/node01/cam0", "lab/node01/cam1", "lab/node02/cam0"]
    config.write_text(json.dumps({"root": str(tree), "cameras": inventory}))
    metrics = tmp_path / "livecam_nas.prom"
    done = nas("nas", "audit", "-c", str(config), "--json", "--grace", "0s",
               "--prometheus", str(metrics))  # fmt: skip
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    [never] = [c for c in report["cameras"] if c["node"] == "node02"]
    assert never["camera"] == "cam0" and never["segments"] == 0, never
    [hole] = silences(report, "cam0", node="node02")
    assert not hole["explained"] and "no segment and no loss record" in hole["fault"], hole
    assert 'livecam_nas_unexplained_gaps{site="lab",node="node02",camera="cam0"} 1' in (
        metrics.read_text()
    )
    # A bad entry is a config error naming the key: one line, exit 2.
    config.write_text(json.dumps({"root": str(tree), "cameras": ["lab/node01/cam0", "node01"]}))
    done = nas("nas", "audit", "-c", str(config))
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "cameras[1]: 'node01' is not SITE/NODE/CAMERA" in done.stderr, done.stderr
