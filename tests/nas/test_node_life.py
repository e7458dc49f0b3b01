"""What a node's life does to the audit, beyond losses: a spool that failed and
recovered (the node ran RAM-only, losing nothing), and a node reinstalled (its
sequence begins again at 0).

Real nodes (``livecam run``, ffmpeg test-pattern cameras, the ``nfs`` transport into
a tmpfs share); the spool's disk is a tmpfs of its own that is remounted read-only
and back, as an SD card that failed read-only and was fixed. Every name is below
pytest's tmp directory.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from tests.core.node import sh, wait_for
from tests.nas.conftest import audit_json, landed, nas, nfs_node, segment_files

pytestmark = pytest.mark.slow


def seq_of(path: Path) -> int:
    return int(path.stem.rsplit("-", 1)[1])


def test_a_node_that_ran_ram_only_shows_when_and_no_hole(tmp_path: Path):
    disk = tmp_path / "spooldisk"
    disk.mkdir()
    sh("mount", "-t", "tmpfs", "-o", "size=16M", "tmpfs", str(disk))
    spool = disk / "spool"
    spool.mkdir()
    try:
        with nfs_node(tmp_path, spool={"path": str(spool)}, spill_after="1s") as (node, share):
            node.spool = spool  # where drain() looks for what is left
            proc = node.start()
            wait_for(lambda: len(share.segments()) >= 4, 40, "publishing")
            sh("mount", "-o", "remount,ro", str(disk))  # the SD card fails read-only
            wait_for(lambda: node.status()["spool_failed"], 30, "status says the spool failed")
            shipped = len(share.segments())
            wait_for(lambda: len(share.segments()) >= shipped + 6, 30, "shipping from RAM")
            sh("mount", "-o", "remount,rw", str(disk))  # and is fixed
            wait_for(lambda: "works again" in node.log_text(), 30, "the shipper works again")
            assert node.stop(proc) == 0
            node.drain()
            root = landed(share, tmp_path / "nasroot")
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)
    assert "SPOOL FAILED" in node.log_text()
    code, report = audit_json(root, "--grace", "0s")
    text = nas("nas", "audit", "--root", str(root), "--grace", "0s", "--no-index").stdout
    print(text)
    assert code == 0 and report["unexplained_gaps"] == 0, text
    for cam in report["cameras"]:
        # One stretch of RAM-only running, with its start, end and cause; no hole from it.
        [span] = cam["ram_only"]
        assert "read-only" in span["reason"].lower() and span["to"] and span["seconds"] > 0, span
        # No hole from it: only the camera's silence since the node stopped cleanly.
        [silent] = cam["holes"]
        assert silent["kind"] == "silent" and silent["causes"][0]["cause"] == "stopped", silent
    assert text.count("ran RAM-only from ") == len(report["cameras"]) == 2


def test_a_reinstalled_node_begins_a_new_sequence_and_every_hole_stays_explained(tmp_path: Path):
    with nfs_node(tmp_path) as (node, share):

        def closed(cam: str) -> int:
            return sum(c["camera"] == cam for c in node.closed())

        for _ in range(2):
            proc = node.start()
            mark = {cam: closed(cam) for cam in ("cam0", "cam1")}
            wait_for(lambda m=mark: all(closed(c) >= m[c] + 4 for c in m), 40, "recording")
            assert node.stop(proc) == 0
            node.drain()
            # Reinstalled: the spool (sequence state, clean-stop notes) and the RAM
            # buffer are new and empty; only the NAS remembers.
            for tier in (node.spool, node.buffer):
                shutil.rmtree(tier)
                tier.mkdir()
        root = landed(share, tmp_path / "nasroot")
    code, report = audit_json(root, "--grace", "0s")
    text = nas("nas", "audit", "--root", str(root), "--grace", "0s", "--no-index").stdout
    print(text)
    assert code == 0 and report["unexplained_gaps"] == 0, text
    for cam in report["cameras"]:
        seqs = [seq_of(p) for p in segment_files(root, cam["camera"])]
        assert len(seqs) > len(set(seqs)), "the second install numbered from 0 again"
        # Both installs' segments are counted, each number once per epoch.
        assert cam["epochs"] == 2 and cam["segments"] == len(seqs), cam
        [step] = [h for h in cam["holes"] if h["causes"][:1] and
                  h["causes"][0]["cause"] == "new_sequence"]  # fmt: skip
        assert step["explained"] and step["first_seq"] == 0
