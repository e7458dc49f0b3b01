"""``livecam nas index``: every segment, durations from the files, incremental, read-only.

The recordings are real (``recorded``); the index is checked against ffprobe and
the filesystem, and every run's own account of what it did (``--json``) is
checked against what changed in between.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from livecam.transport.errors import conflict_path
from tests.nas.conftest import audit_json, nas, segment_files

pytestmark = pytest.mark.slow


def index(root: Path, *extra: str) -> dict:
    done = nas("nas", "index", "--root", str(root), "--json", *extra)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every file below ``root`` but the index's own, with its size and mtime."""
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in root.rglob("*") if p.is_file() and ".livecam" not in p.parts
    }  # fmt: skip


def rows(root: Path) -> dict[str, sqlite3.Row]:
    conn = sqlite3.connect(root / ".livecam" / "index.sqlite")
    conn.row_factory = sqlite3.Row
    return {r["path"]: r for r in conn.execute("SELECT * FROM segments")}


def ffprobe_duration(path: Path) -> float:
    argv = ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0"]
    out = subprocess.run([*argv, str(path)], capture_output=True, text=True, check=True)
    return float(out.stdout)


def copy_in(src: Path, dest: Path) -> None:
    """As a transport lands a file: a dot-named temp, then a rename."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.part")
    shutil.copyfile(src, tmp)
    os.rename(tmp, dest)


def cut_short(segment: Path, seconds: float) -> None:
    """Keep the first ``seconds`` of ``segment`` (stream copy), as a stop cuts a
    camera's last segment short: the name still says the full length."""
    tmp = segment.with_name(f".{segment.name}.cut.mp4")
    argv = ["ffmpeg", "-v", "error", "-i", str(segment), "-t", str(seconds), "-c", "copy"]
    subprocess.run([*argv, str(tmp)], check=True, capture_output=True)
    os.rename(tmp, segment)


def test_index_holds_every_segment_with_its_duration_from_the_file(tree: Path):
    short = segment_files(tree, "cam1")[-2]  # B-frames: a cut the muxer must account for
    cut_short(short, 1.0)
    before = snapshot(tree)
    segments = [p for c in ("cam0", "cam1") for p in segment_files(tree, c)]
    records = list(tree.rglob("loss-*.json"))
    first = index(tree)
    assert first["added"] == first["probed"] == first["segments"] == len(segments)
    assert first["records"] == len(records) >= 1  # the recorder's start, at least
    # Nothing in the recordings tree changed; the index lives in <root>/.livecam only.
    assert snapshot(tree) == before
    assert sorted(p.name for p in (tree / ".livecam").iterdir())[0] == "index.sqlite"
    found = rows(tree)
    assert set(found) == {str(p.relative_to(tree)) for p in segments}
    for p in segments:
        row = found[str(p.relative_to(tree))]
        assert (row["site"], row["node"], row["size"]) == ("lab", "node01", p.stat().st_size)
        assert row["camera"] == p.name.split("-")[0]
        assert row["seq"] == int(p.stem.rsplit("-", 1)[1])
        assert row["duration"] == pytest.approx(ffprobe_duration(p), abs=1e-3)
    # The segment cut short (a stream copy ends at a keyframe: 1 to 1.5 s) says so,
    # where its name would have said 2 s.
    assert found[str(short.relative_to(tree))]["duration"] < 1.9


def test_index_is_incremental(tree: Path):
    index(tree)
    again = index(tree)
    assert again["dirs_listed"] == 0 and again["probed"] == 0 and again["added"] == 0
    cam0 = segment_files(tree, "cam0")
    new = tree / "lab/node01/cam0/2026-12-01/cam0-20261201T000000Z-009999.mp4"
    copy_in(cam0[2], new)
    cam0[3].unlink()
    (new.parent / "cam0-20261301T000000Z-000001.mp4").write_bytes(b"no month 13")  # ignored
    (new.parent / "notes.txt").write_text("not a segment")  # ignored
    third = index(tree)
    assert (third["added"], third["removed"], third["probed"]) == (1, 1, 1)
    # Only the directories that changed were listed again: root unchanged, the camera
    # directory (a new date) and both date directories.
    assert third["dirs_listed"] == 3, third
    found = rows(tree)
    assert str(new.relative_to(tree)) in found and str(cam0[3].relative_to(tree)) not in found


def test_files_landing_while_the_index_runs_are_all_indexed_by_the_next_run(tree: Path):
    source = segment_files(tree, "cam0")[1]
    stop = threading.Event()
    landed: list[Path] = []

    def land() -> None:
        for i in range(300):
            if stop.wait(0.01):
                break
            name = (
                f"cam0-20261201T{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}Z-{5000 + i:06d}.mp4"
            )
            dest = tree / f"lab/node01/cam0/2026-12-0{1 + i % 3}/{name}"
            copy_in(source, dest)
            landed.append(dest)

    writer = threading.Thread(target=land)
    writer.start()
    try:
        time.sleep(0.2)
        at_start = len(landed)
        during = index(tree)
        at_end = len(landed)
    finally:
        stop.set()
        writer.join()
    assert at_start < at_end, "files landed while the index ran"
    assert during["added"] >= at_start
    index(tree)
    on_disk = {str(p.relative_to(tree)) for c in ("cam0", "cam1") for p in segment_files(tree, c)}
    assert set(rows(tree)) == on_disk
    assert index(tree)["dirs_listed"] == 0


def test_sha256_and_a_configured_index_place(tree: Path, tmp_path: Path):
    config = tmp_path / "nas.yaml"
    db = tmp_path / "elsewhere" / "idx.sqlite"
    config.write_text(f"root: {tree}\ndb: {db}\nsha256: true\nprobe_workers: 1\n")
    done = nas("nas", "index", "-c", str(config), "--json")
    assert done.returncode == 0, done.stderr
    assert db.exists() and not (tree / ".livecam").exists()
    conn = sqlite3.connect(db)
    for path, digest in conn.execute("SELECT path, sha256 FROM segments"):
        assert digest == hashlib.sha256((tree / path).read_bytes()).hexdigest()


def test_a_conflict_named_segment_is_indexed_under_its_sequence_and_counted_once(tree: Path):
    """A segment whose name held other content on the NAS is published beside it under a
    conflict name (``livecam.transport.errors.conflict_path``, as the shipper names it)."""
    _, before = audit_json(tree, "--grace", "0s")
    files = segment_files(tree, "cam0")
    original = files[3]
    content = files[4].read_bytes()  # real, playable, and not the original's bytes
    digest = hashlib.sha256(content).hexdigest()
    aside = tree / conflict_path(str(original.relative_to(tree)), digest)
    aside.write_bytes(content)
    code, after = audit_json(tree, "--grace", "0s")
    indexed = rows(tree)
    seq = int(original.stem.rsplit("-", 1)[1])
    assert str(aside.relative_to(tree)) in indexed, "the conflict copy is indexed"
    copy, first = indexed[str(aside.relative_to(tree))], indexed[str(original.relative_to(tree))]
    assert (copy["camera"], copy["seq"], copy["start"]) == ("cam0", seq, first["start"])
    assert copy["duration"] > 0
    # Counted once: as many segments, the same seconds recorded, no new hole.
    cam0 = [next(c for c in r["cameras"] if c["camera"] == "cam0") for r in (before, after)]
    assert cam0[1]["segments"] == cam0[0]["segments"] == len(files)
    recorded = [sum(day["recorded"] for day in c["coverage"]) for c in cam0]
    assert recorded[1] == recorded[0]
    # (A silence since the node stopped ends "now": when each audit ran.)
    same = [[{**h, "before": 0, "seconds": 0} if h["kind"] == "silent" else h for h in c["holes"]]
            for c in cam0]  # fmt: skip
    assert same[1] == same[0] and code == 0


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (None, ["no such NAS config file", "--root"]),
        ("roots: /srv\n", ["roots", "unknown key"]),
        ("root: /nonexistent-nas-root\n", ["root", "not a directory"]),
        ("grace: soon\n", ["grace"]),
        ("- a list\n", ["mapping"]),
    ],
)
def test_config_errors_are_one_line_and_exit_2(tmp_path: Path, config, words):
    path = tmp_path / "nas.yaml"
    if config is not None:
        path.write_text(config)
    env = {**os.environ, "LIVECAM_NAS_CONFIG": str(path)}
    done = subprocess.run([*nas.__globals__["livecam_cmd"]("nas", "audit")],
                          capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and all(w in lines[0] for w in words), lines
