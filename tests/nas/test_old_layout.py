"""A NAS tree whose loss records carry the names of livecam before issue 22
(``{site}/{node}/livecam-losses/{date}/livecam-losses-...mp4``, tests/old_layout.py)
indexes and audits exactly as the same tree with today's names
(``_losses/{date}/loss-...json``): the records are read as records, never as
segments, so no camera ``livecam-losses`` appears, and every hole they explain is
explained the same way. Today's tree holds no ``.mp4`` that ffprobe rejects.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from livecam.storage import losses
from tests.nas.conftest import audit_json, nas, segment_files
from tests.nas.test_audit import explained
from tests.old_layout import to_old_layout, write_old_record

pytestmark = pytest.mark.slow


def index(root: Path) -> dict:
    done = nas("nas", "index", "--root", str(root), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def evicted(seg: Path, time: float) -> dict:
    """The record an eviction of ``seg`` writes (``livecam.shipper.evictions``)."""
    seq = int(seg.stem.rsplit("-", 1)[1])
    return losses.loss_record(
        "evicted", "cam1", [seq], "evicted", site="lab", node="node01", now=time,
        tier="spool", limit="max_bytes", segment=seg.name, bytes=seg.stat().st_size,
    )  # fmt: skip


def test_a_tree_with_old_record_names_indexes_and_audits_as_today(tree: Path, tmp_path: Path):
    # One segment lost to an eviction, the node's record of it placed as each version
    # places it: today's through the node's own writer, the old one byte for byte.
    victim = segment_files(tree, "cam1")[4]
    record = evicted(victim, victim.stat().st_mtime + 60)
    victim.unlink()
    folder = tmp_path / "spool" / "_losses"
    folder.mkdir(parents=True)
    new = losses.write_record(folder, record)
    assert new.name.startswith("loss-") and new.suffix == ".json"
    day = f"{datetime.fromtimestamp(record['time'], UTC):%Y-%m-%d}"
    (tree / "lab/node01/_losses" / day).mkdir(parents=True, exist_ok=True)
    shutil.copyfile(new, tree / "lab/node01/_losses" / day / new.name)
    old_tree = tmp_path / "old-tree"
    shutil.copytree(tree, old_tree)
    moved = to_old_layout(old_tree)
    assert len(moved) == len(list(tree.rglob("loss-*.json"))) >= 3
    old_made = write_old_record(tmp_path / "old-spool", record)  # as that version wrote it
    [(old_path, _)] = [(o, n) for o, n in moved.items() if n.name == new.name]
    assert old_path.read_bytes() == old_made.read_bytes() and old_path.name == old_made.name
    assert not list(old_tree.rglob("loss-*")) and not list(old_tree.rglob("_losses"))

    # Today's tree: no record named as a video; every .mp4 plays.
    for video in tree.rglob("*.mp4"):
        subprocess.run(["ffprobe", "-v", "error", str(video)], check=True, timeout=60)

    stats = {name: index(root) for name, root in (("new", tree), ("old", old_tree))}
    assert stats["new"]["records"] == stats["old"]["records"] == len(moved), stats
    assert (
        stats["new"]["segments"]
        == stats["old"]["segments"]
        == len([p for p in tree.rglob("*.mp4")])
    )
    assert stats["old"]["unplayable"] == 0, "an old record was probed as a video"
    for root in (tree, old_tree):
        with sqlite3.connect(root / ".livecam" / "index.sqlite") as conn:
            cameras = {r[0] for r in conn.execute("SELECT DISTINCT camera FROM segments")}
            kinds = [r[0] for r in conn.execute("SELECT kind FROM losses WHERE error IS NULL")]
        assert cameras == {"cam0", "cam1"}, (root, cameras)
        assert len(kinds) == len(moved) and "evicted" in kinds, kinds

    reports = {}
    for name, root in (("new", tree), ("old", old_tree)):
        code, reports[name] = audit_json(root, "--grace", "0s")
        assert code == 0, reports[name]
    assert reports["new"]["unexplained_gaps"] == 0
    seq = int(victim.stem.rsplit("-", 1)[1])
    assert seq in explained(reports["old"], "cam1")["evicted"], reports["old"]
    assert {c["camera"] for c in reports["old"]["cameras"]} == {"cam0", "cam1"}
    # The same answer.
    assert normalise(reports["old"]) == normalise(reports["new"])
    text = nas("nas", "audit", "--root", str(old_tree), "--grace", "0s", "--no-index").stdout
    assert "evicted from the spool (max_bytes limit)" in text, text


def normalise(report: dict) -> list:
    """What the audit says of each camera, but what moves with the clock (a hole up to
    now, the coverage so far): its counts, and each hole's kind, numbers and causes."""
    return [
        (c["site"], c["node"], c["camera"], c["segments"], c["first_seq"], c["last_seq"],
         c["loss_records"], c["bad_loss_records"], c["unexplained_gaps"], c["epochs"],
         [(h["kind"], h["first_seq"], h["last_seq"], h["explained"],
           sorted((x["cause"], x["text"]) for x in h["causes"])) for h in c["holes"]])
        for c in report["cameras"]
    ]  # fmt: skip
