"""``livecam nas audit``: every hole explained by the node's own loss records, or flagged.

The scenario test runs a real node (``livecam run``, ffmpeg test-pattern cameras,
the ``nfs`` transport into a tmpfs share) through a clean restart, a camera whose
ffmpeg is killed again and again (then frozen), an outage with a spool quota that forces
evictions, and a power cut (kill -9 of everything, the RAM buffer wiped). The
audit must explain every hole, and agree with what the node closed (the witness
plugin's log) and what it evicted (its EVICTED log lines). A segment then deleted
by hand on the NAS must show as unexplained, with exit code 1.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from livecam.storage import losses
from livecam.storage.layout import NodeDisk
from livecam.storage.tiers import Tier
from tests.core.node import wait_for
from tests.nas.conftest import audit_json, landed, nas, nfs_node, numbers, segment_files

pytestmark = pytest.mark.slow


def seq_of(path: Path) -> int:
    return int(path.stem.rsplit("-", 1)[1])


def explained(report: dict, camera: str) -> dict[str, set[int]]:
    """Missing sequence numbers of ``camera`` by the cause the audit gave."""
    out: dict[str, set[int]] = {}
    for cam in report["cameras"]:
        if cam["camera"] == camera:
            for hole in cam["holes"]:
                for cause in hole["causes"] if hole["kind"] != "silent" else ():
                    out.setdefault(cause["cause"], set()).update(numbers(cause["ranges"]))
    return out


def test_a_segment_deleted_by_hand_is_unexplained(tree: Path, tmp_path: Path):
    code, report = audit_json(tree, "--grace", "0s")
    assert code == 0 and report["unexplained_gaps"] == 0, report
    victim = segment_files(tree, "cam1")[4]
    victim.unlink()
    metrics = tmp_path / "livecam_nas.prom"
    done = nas("nas", "audit", "--root", str(tree), "--grace", "0s", "--prometheus", str(metrics))
    assert done.returncode == 1
    assert f"UNEXPLAINED seq {seq_of(victim)} (1 number; " in done.stdout, done.stdout
    prom = metrics.read_text()
    assert 'livecam_nas_unexplained_gaps{site="lab",node="node01",camera="cam1"} 1' in prom
    assert 'livecam_nas_unexplained_gaps{site="lab",node="node01",camera="cam0"} 0' in prom
    assert 'livecam_nas_coverage_ratio{site="lab",node="node01",camera="cam0"} 0.' in prom
    # Within the grace period the same hole is still on its way: not yet shipped.
    code, report = audit_json(tree, "--grace", "1h")
    assert code == 0 and explained(report, "cam1") == {"backlog": {seq_of(victim)}}


def test_a_record_placed_as_the_node_places_it_explains_an_eviction(tree: Path, tmp_path):
    victim = segment_files(tree, "cam0")[3]
    victim.unlink()
    # The node writes the record into its spool; the shipper lands it here.
    spool = tmp_path / "spool"
    spool.mkdir()  # a node's spool exists; livecam never makes one on a vanished mount
    disk = NodeDisk(
        Tier("buffer", tmp_path / "buffer", max_bytes=1 << 20),
        Tier("spool", spool, max_bytes=1 << 20),
    )
    record = losses.LossWriter(disk, "lab", "node01").record(
        "evicted",
        "cam0",
        [seq_of(victim)],
        "evicted",
        tier="spool",
        limit="max_bytes",
        segment=victim.name,
    )
    assert record is not None and losses.is_loss_record(record)
    dest = tree / "lab/node01" / losses.LOSS_CAMERA / "2026-11-27" / record.name
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(record, dest)
    code, report = audit_json(tree, "--grace", "0s")
    assert code == 0, report
    assert explained(report, "cam0") == {"evicted": {seq_of(victim)}}
    done = nas("nas", "audit", "--root", str(tree), "--grace", "0s", "--no-index")
    assert "evicted from the spool (max_bytes limit)" in done.stdout


def test_audit_explains_every_hole_of_a_real_node(tmp_path: Path):
    with nfs_node(tmp_path, spool={"max_bytes": "300K"}, spill_after="1s") as (node, share):

        def closed(cam: str) -> int:
            return sum(c["camera"] == cam for c in node.closed())

        proc = node.start()
        wait_for(lambda: closed("cam0") >= 4 and closed("cam1") >= 4, 40, "recording")
        assert node.stop(proc) == 0  # a clean stop
        proc = node.start()
        mark = closed("cam0")
        wait_for(lambda: closed("cam0") >= mark + 3, 30, "recording again")
        # Camera down: cam0's ffmpeg killed at once each time it comes back (backoff grows).
        killed: list[int] = []
        for _ in range(4):
            pids = wait_for(lambda: [p for p in node.pids("ffmpeg", "cam0/.open")
                                     if p not in killed], 30, "a cam0 ffmpeg")  # fmt: skip
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
        # Under load the kills can come more than 3 segments apart (the backoff then
        # starts afresh at 0.5 s) with segments closed between them, so no gap need be
        # longer than the audit's tolerance; a frozen camera always makes one: the
        # recorder restarts it when no segment closed for its stall limit (7.5 s).
        frozen = wait_for(lambda: [p for p in node.pids("ffmpeg", "cam0/.open")
                                   if p not in killed], 30, "a cam0 ffmpeg")  # fmt: skip
        os.kill(frozen[0], signal.SIGSTOP)
        wait_for(lambda: "cam0 stalled" in node.log_text(), 30, "the stall noticed")
        mark = closed("cam0")
        wait_for(lambda: closed("cam0") >= mark + 3, 40, "cam0 back")
        # An outage long enough for the spool quota to evict.
        share.unmount()
        wait_for(lambda: node.status()["shipper"]["evictions"] >= 4, 60, "evictions")
        node.kill_all()  # a power cut in the outage: RAM segments are lost
        shutil.rmtree(node.buffer)
        share.mount()
        proc = node.start()
        mark = closed("cam1")
        wait_for(lambda: closed("cam1") >= mark + 3 and not node.local_segments("spool"), 60,
                 "recording after the power cut, spool drained")  # fmt: skip
        assert node.stop(proc) == 0
        node.drain()
        root = landed(share, tmp_path / "nasroot")
    code, report = audit_json(root, "--grace", "0s")
    text = nas("nas", "audit", "--root", str(root), "--grace", "0s", "--no-index").stdout
    print(text)
    assert code == 0 and report["unexplained_gaps"] == 0, text

    evicted_names = {line.split("EVICTED ")[1].split()[0]
                     for line in node.log_text().splitlines() if "EVICTED " in line}  # fmt: skip
    assert len(evicted_names) >= 4
    causes = set()
    for cam in ("cam0", "cam1"):
        by_cause = explained(report, cam)
        causes |= set(by_cause)
        on_nas = {seq_of(p) for p in segment_files(root, cam)}
        mine = [c for c in node.closed() if c["camera"] == cam]
        lost = {c["seq"] for c in mine} - on_nas
        ev = {c["seq"] for c in mine if c["name"] in evicted_names}
        # Every segment the camera closed and the NAS lacks is explained, evictions as such.
        assert lost <= set().union(*by_cause.values()), (cam, lost, by_cause)
        assert by_cause.get("evicted", set()) == ev, (cam, by_cause, ev)
        assert "backlog" not in by_cause
    # (The clean stop and start leave no numbers out, and a time gap only when the
    # start took longer than the audit's tolerance: tests/nas/test_restarts.py.)
    assert {"evicted", "power_cut", "camera_down"} <= causes, text

    # A segment deleted by hand on the NAS: unexplained, exit 1.
    files = segment_files(root, "cam1")
    seqs = [seq_of(p) for p in files]
    victim = next(p for i, p in enumerate(files[1:-1], 1)
                  if seqs[i - 1] == seqs[i] - 1 and seqs[i + 1] == seqs[i] + 1)  # fmt: skip
    victim.unlink()
    code, report = audit_json(root, "--grace", "0s")
    assert code == 1 and report["unexplained_gaps"] == 1
    [hole] = [h for c in report["cameras"] for h in c["holes"] if not h["explained"]]
    assert hole["unexplained_ranges"] == [[seq_of(victim), seq_of(victim)]]
