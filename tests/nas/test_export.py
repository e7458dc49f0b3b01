"""``livecam export``: stream copy across segment boundaries, proven frame by frame.

The segments are real (``recorded``: real ``livecam run``, ffmpeg test patterns
whose every frame differs). Each decoded frame is identified by the MD5 of its
pixels, so "no frame lost or repeated at any boundary" is checked exactly: the
clip's frames must be the segments' frames inside the span, in order, once each.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import sqlite3
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from livecam.storage.segment import Segment, segment_name
from tests.conftest import livecam_cmd
from tests.nas.conftest import nas, segment_files

pytestmark = pytest.mark.slow


def frame_md5s(path: Path) -> list[str]:
    """The MD5 of every decoded frame, in presentation order, none dropped or duplicated."""
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
         "-f", "framemd5", "-"], capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return [line.split(",")[-1].strip() for line in out.splitlines() if not line.startswith("#")]


def probe(path: Path, what: str) -> list[dict[str, str]]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", what,
         "-of", "json", str(path)], capture_output=True, text=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    data = json.loads(out)
    return data.get("frames") or data.get("packets") or [data.get("format", {})]


def frame_times(path: Path) -> list[float]:
    return [float(f["pts_time"]) for f in probe(path, "frame=pts_time")]


def keyframe_times(path: Path) -> list[float]:
    """Keyframe times from the first frame's (B-frames delay it past the file's 0)."""
    packets = probe(path, "packet=pts_time,flags")
    first = min(float(p["pts_time"]) for p in packets)
    return [round(float(p["pts_time"]) - first, 3) for p in packets if "K" in p["flags"]]


def start_of(path: Path) -> datetime:
    seg = Segment.from_path(path)
    assert seg is not None
    return seg.start


def is_fragmented(path: Path) -> bool:
    return b"moof" in path.read_bytes()[: 1 << 20]


@pytest.mark.parametrize(
    ("camera", "remux"),
    [("cam0", False), ("cam1", False), ("cam0", True), ("cam1", True)],
    ids=["no-bframes", "bframes", "no-bframes-via-ffmpeg", "bframes-via-ffmpeg"],
)
def test_export_across_five_boundaries_keeps_every_frame_once(tree: Path, tmp_path, camera, remux):
    files = segment_files(tree / "lab", camera)
    assert len(files) >= 8, files
    span = files[1:7]  # six segments: five boundaries inside the span
    if remux:  # one segment as a plain MP4: the export falls back to ffmpeg's concat
        plain = tmp_path / "plain.mp4"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(span[3]), "-c", "copy", str(plain)],
                       check=True, timeout=60)  # fmt: skip
        os.replace(plain, span[3])
    # --from 0.7 s into the first (keyframes every 0.5 s: the clip starts at 0.5 s),
    # --to 0.7 s into the last (it ends before that segment's keyframe at 1.0 s).
    start = start_of(span[0]) + timedelta(seconds=0.7)
    end = start_of(span[-1]) + timedelta(seconds=0.7)
    first_keys, last_keys = keyframe_times(span[0]), keyframe_times(span[-1])
    assert 0.5 in first_keys and 1.0 in last_keys and 0.7 not in first_keys
    out = tmp_path / "clip.mp4"
    done = nas("export", f"lab/node01/{camera}", "--root", str(tree),
               "--from", start.isoformat(), "--to", end.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
               "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert out.exists() and "6 segments" in done.stdout and "holes: none" in done.stdout
    # Joined by fragments (livecam's own segments), or by ffmpeg (a plain MP4 among them).
    assert is_fragmented(out) != remux

    # What the clip must hold, from the segments decoded one by one.
    expected: list[str] = []
    for i, path in enumerate(span):
        md5s, times = frame_md5s(path), frame_times(path)
        assert len(md5s) == len(times) > 0
        rel = [t - times[0] for t in times]
        keep = [
            m
            for m, t in zip(md5s, rel, strict=True)
            if (i > 0 or t >= 0.5 - 1e-6) and (i < len(span) - 1 or t < 1.0 - 1e-6)
        ]
        expected += keep
    got = frame_md5s(out)
    assert len(set(expected)) == len(expected), "the test pattern repeats a frame"
    assert len(got) == len(expected), f"{len(got)} frames exported, {len(expected)} expected"
    assert got == expected, "a frame was lost, repeated or reordered at a boundary"
    # Plays from t=0 with continuous timestamps: one frame every 1/10 s, no jump.
    times = frame_times(out)
    assert times[0] == 0.0
    steps = {round(b - a, 3) for a, b in itertools.pairwise(times)}
    assert steps == {0.1}, steps
    assert float(probe(out, "format=start_time")[0]["start_time"]) == 0.0


def test_export_several_cameras_one_file_each_with_local_time(tree: Path, tmp_path):
    files = segment_files(tree / "lab", "cam0")
    begin = start_of(files[2]).astimezone(timezone(timedelta(hours=1)))  # local time, +01:00
    out = tmp_path / "clip.mp4"
    done = nas("export", "--camera", "lab/node01/cam0", "--camera", "node01/cam1",
               "--root", str(tree), "--from", begin.isoformat(),
               "--to", (begin + timedelta(seconds=3)).isoformat(), "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    made = sorted(p.name for p in tmp_path.glob("clip*.mp4"))
    assert made == ["clip-lab-node01-cam0.mp4", "clip-lab-node01-cam1.mp4"]
    for name in made:
        frames = frame_md5s(tmp_path / name)
        assert 30 <= len(frames) <= 50  # 3 s at 10 fps, widened to whole keyframe intervals
    assert begin.astimezone(UTC).strftime("%H:%M:%S") in done.stdout


def test_export_names_the_hole_it_spans(tree: Path, tmp_path):
    files = segment_files(tree / "lab", "cam0")
    files[3].unlink()  # a segment deleted on the NAS by hand
    seq = int(files[3].stem.rsplit("-", 1)[1])
    out = tmp_path / "clip.mp4"
    # The root from the NAS config file; no grace: a fresh hole is not "not yet shipped".
    config = tmp_path / "nas.yaml"
    config.write_text(f"root: {tree}\ngrace: 0s\n")
    done = nas("export", "lab/node01/cam0", "-c", str(config),
               "--from", start_of(files[1]).isoformat(),
               "--to", (start_of(files[5]) + timedelta(seconds=1)).isoformat(),
               "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert f"UNEXPLAINED seq {seq} " in done.stdout, done.stdout
    assert len(frame_md5s(out)) > 0


def test_export_refuses_a_time_without_a_zone_and_an_unknown_camera(tree: Path, tmp_path):
    out = tmp_path / "x.mp4"
    done = nas("export", "lab/node01/cam0", "--root", str(tree), "--from", "2026-11-27T14:03:00",
               "--to", "2026-11-27T14:04:00Z", "-o", str(out))  # fmt: skip
    assert done.returncode == 2 and "--from" in done.stderr and "zone" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    done = nas("export", "lab/node09/cam0", "--root", str(tree), "--from", "2026-11-27T14:03Z",
               "--to", "2026-11-27T14:04:00Z", "-o", str(out))  # fmt: skip
    assert done.returncode == 2 and "no such camera" in done.stderr
    assert not out.exists()


def test_export_writes_under_a_temp_name_then_renames(tree: Path, tmp_path):
    """The clip's own name never holds a partial file: seen in the command's system calls."""
    files = segment_files(tree / "lab", "cam0")
    out, trace = tmp_path / "clip.mp4", tmp_path / "trace"
    part = tmp_path / ".clip.mp4.part"
    export = livecam_cmd("export", "lab/node01/cam0", "--root", str(tree),
                         "--from", start_of(files[1]).isoformat(),
                         "--to", start_of(files[3]).isoformat(), "-o", str(out))  # fmt: skip
    done = subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=openat,rename,renameat,renameat2", "-o", str(trace),
         *export], capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    calls = trace.read_text().splitlines()
    written = [c for c in calls if "openat(" in c and ("O_WRONLY" in c or "O_RDWR" in c)]
    assert any(f'"{part}"' in c and "O_CREAT" in c for c in written), "written under a temp name"
    assert not any(f'"{out}"' in c for c in written), "the clip's name is never opened to write"
    renamed = [c for c in calls if "rename" in c and f'"{part}"' in c and f'"{out}"' in c]
    assert renamed and renamed[0].endswith("= 0"), calls
    assert out.exists() and not part.exists() and len(frame_md5s(out)) > 0


def test_the_export_command_starts_without_pluggy_or_pyyaml(tree: Path, tmp_path):
    """What keeps a short export close to ``cat`` (docs/benchmarks.md): the console
    script imports neither the plugin manager's pluggy nor PyYAML when ``--root`` is
    given; a plugin's ``from livecam import hookimpl`` still gets livecam's marker."""
    files = segment_files(tree / "lab", "cam0")
    done = subprocess.run(
        livecam_cmd("export", "lab/node01/cam0", "--root", str(tree),
                    "--from", start_of(files[1]).isoformat(),
                    "--to", start_of(files[2]).isoformat(), "-o", str(tmp_path / "c.mp4")),
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPROFILEIMPORTTIME": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}  # fmt: skip
    assert "livecam.nas.export" in imported and "sqlite3" in imported  # the trace works
    assert not imported & {"pluggy", "yaml", "livecam.plugins"}, imported
    plugin = ("import livecam, pluggy; from livecam import hookimpl; "
              "assert isinstance(hookimpl, pluggy.HookimplMarker) and livecam.hookimpl is hookimpl "
              "and hookimpl.project_name == 'livecam'")  # fmt: skip
    python = Path(livecam_cmd()[0]).with_name("python")
    subprocess.run([str(python), "-c", plugin], check=True, timeout=60)


def test_export_brings_only_its_node_and_days_up_to_date(tree: Path, tmp_path):
    """A segment that landed since the last index run is exported; another node's new
    files and a known day far from the span are left for the next ``nas index``."""
    files = segment_files(tree / "lab", "cam0")
    late = files[3]
    held = tmp_path / late.name
    os.rename(late, held)  # not there yet when the index runs
    old_day = start_of(files[0]) - timedelta(days=3)
    old_dir = tree / "lab/node01/cam0" / f"{old_day:%Y-%m-%d}"
    old_dir.mkdir()
    (old_dir / segment_name("cam0", old_day, 900000)).write_bytes(files[0].read_bytes())
    assert nas("nas", "index", "--root", str(tree)).returncode == 0
    db = tree / ".livecam" / "index.sqlite"
    assert late.name not in indexed_names(db)
    # Now it lands (a temp name, then a rename), and so do files the span does not need.
    tmp = late.with_name(f".{late.name}.part")
    shutil.copyfile(held, tmp)
    os.rename(tmp, late)
    old_late = old_dir / segment_name("cam0", old_day + timedelta(seconds=2), 900001)
    old_late.write_bytes(files[0].read_bytes())
    other = tree / "lab/node02/cam0" / late.parent.name / late.name
    other.parent.mkdir(parents=True)
    shutil.copyfile(held, other)

    out = tmp_path / "clip.mp4"
    done = nas("export", "lab/node01/cam0", "--root", str(tree),
               "--from", start_of(files[1]).isoformat(),
               "--to", (start_of(files[5]) + timedelta(seconds=1)).isoformat(),
               "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "5 segments" in done.stdout and "holes: none" in done.stdout, done.stdout
    names = indexed_names(db)
    assert late.name in names, "the export brought the span's directory up to date"
    assert old_late.name not in names and other.name not in indexed_names(db, "node02")
    # The next full run finds what the export left out.
    assert nas("nas", "index", "--root", str(tree)).returncode == 0
    assert old_late.name in indexed_names(db) and other.name in indexed_names(db, "node02")


def indexed_names(db: Path, node: str = "node01") -> set[str]:
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT path FROM segments WHERE node = ?", (node,)).fetchall()
    finally:
        conn.close()
    return {Path(r[0]).name for r in rows}
