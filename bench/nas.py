#!/usr/bin/env python3
"""Benchmarks of the NAS side: the index at fleet scale, the audit, export vs cat.

    bench/nas.py index   [--days 30] [--cameras 4]   first index, no-op and +1,000 files
    bench/nas.py audit                                one camera-month, and all cameras
    bench/nas.py export  [--minutes 10,30]           livecam export vs cat of the same bytes
                                                      (figures: [best, median] of --reps)
    bench/nas.py probe                                ffprobe cost of one real 30 s 720p segment
    bench/nas.py all --report docs/benchmarks.md

The index tree is 30 days x 4 cameras x 2,880 segments of 30 s (345,600 names),
laid out as the nodes lay it out. The files are hard links to one small real
segment per camera-day (120 distinct contents, made by ffmpeg), so the index runs
with ``sha256: true`` and takes each duration from its cache keyed by content:
the figures are the index's own work (walking, stat, hashing, SQLite), with one
ffprobe per distinct content. What ffprobe adds per file on a real NAS is measured
on its own (``probe``) and reported beside them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from livecam.nas import audit, export, index, probe  # noqa: E402
from livecam.nas.config import NasConfig  # noqa: E402
from livecam.storage import losses  # noqa: E402
from livecam.storage.layout import NodeDisk  # noqa: E402
from livecam.storage.segment import segment_name  # noqa: E402
from livecam.storage.tiers import Tier  # noqa: E402

LIVECAM = [sys.executable, "-m", "livecam"]
LIVECAM_SCRIPT = str(Path(sys.executable).parent / "livecam")  # the console script
START = datetime(2026, 10, 1, tzinfo=UTC)
SEGMENT = 30


def encode(
    out: Path, seconds: int, size: str, fps: int, bitrate: str, noise: bool, tag: str = ""
) -> Path:
    """A real segment as the ffmpeg backend writes it (fragmented MP4, H.264); ``tag``
    goes into the file's metadata, so each tag makes different bytes."""
    vf = ["-vf", "noise=alls=30:allf=t"] if noise else []
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i",
         f"testsrc2=size={size}:rate={fps}:duration={seconds}", *vf,
         "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
         "-b:v", bitrate, "-maxrate", bitrate, "-bufsize", bitrate, "-g", str(fps),
         "-metadata", f"comment={tag}",
         "-movflags", "+frag_keyframe+empty_moov+default_base_moof", "-f", "mp4", str(out)],
        check=True, timeout=600,
    )  # fmt: skip
    return out


def build_tree(root: Path, days: int, cameras: int, work: Path) -> int:
    """``days`` x ``cameras`` x 2,880 hard-linked segment names; returns the file count."""
    per_day = 86400 // SEGMENT
    count = 0
    for cam_i in range(cameras):
        cam = f"cam{cam_i}"
        node = f"node{cam_i // 2 + 1:02d}"
        for day in range(days):
            source = encode(work / f"src-{cam}-{day}.mp4", SEGMENT, "64x48", 2, "20k",
                            noise=False, tag=f"{cam}-{day}")  # fmt: skip
            date = START + timedelta(days=day)
            folder = root / "lab" / node / cam / f"{date:%Y-%m-%d}"
            folder.mkdir(parents=True)
            for i in range(per_day):
                seq = day * per_day + i
                name = segment_name(cam, date + timedelta(seconds=i * SEGMENT), seq)
                os.link(source, folder / name)
                count += 1
    return count


def timed(fn, *args, **kw):  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    result = fn(*args, **kw)
    return time.perf_counter() - t0, result


def bench_index(args: argparse.Namespace, work: Path) -> dict:
    root = work / "root"
    t_build, files = timed(build_tree, root, args.days, args.cameras, work)
    config = NasConfig(root=root, db=work / "index.sqlite", sha256=True, probe_workers=2)
    t_first, (conn, first) = timed(index.update, config)
    conn.close()
    t_noop, (conn, noop) = timed(index.update, config)
    conn.close()
    assert noop.dirs_listed == 0 and noop.probed == 0
    # 1,000 new segments: the next day begins on every camera (250 each).
    source = next(work.glob("src-cam0-1.mp4"))
    day = START + timedelta(days=args.days)
    for cam_i in range(args.cameras):
        cam = f"cam{cam_i}"
        folder = root / "lab" / f"node{cam_i // 2 + 1:02d}" / cam / f"{day:%Y-%m-%d}"
        folder.mkdir(parents=True)
        for i in range(1000 // args.cameras):
            seq = args.days * 2880 + i
            os.link(source, folder / segment_name(cam, day + timedelta(seconds=i * SEGMENT), seq))
    t_incr, (conn, incr) = timed(index.update, config)
    conn.close()
    return {
        "files": files,
        "tree_build_seconds": round(t_build, 1),
        "first_index_seconds": round(t_first, 1),
        "first_index_files_per_second": round(files / t_first),
        "first_index_ffprobe_runs": first.probed,
        "noop_update_seconds": round(t_noop, 2),
        "update_after_1000_new_seconds": round(t_incr, 2),
        "update_added": incr.added,
        "update_dirs_listed": incr.dirs_listed,
        "db_bytes": config.db.stat().st_size,
    }


def bench_audit(args: argparse.Namespace, work: Path) -> dict:
    root, db = work / "root", work / "index.sqlite"
    # 100 evictions of cam0 with their records, so explanations are looked up too.
    conn = index.connect(db)
    victims = conn.execute(
        "SELECT path, seq FROM segments WHERE camera='cam0' AND seq % 800 = 7 LIMIT 100"
    ).fetchall()
    spool = work / "spool"
    spool.mkdir(exist_ok=True)  # the node's writer never makes a missing spool
    disk = NodeDisk(
        Tier("buffer", work / "buffer", max_bytes=1 << 20),
        Tier("spool", spool, max_bytes=1 << 20),
    )
    writer = losses.LossWriter(disk)
    for path, seq in victims:
        (root / path).unlink()
        rec = writer.record("evicted", "cam0", [seq], "bench", tier="spool", limit="max_bytes")
        assert rec is not None
        dest = root / "lab/node01" / losses.LOSS_CAMERA / "2026-10-01" / rec.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(rec, dest)
    # Every camera stopped cleanly at the end of its month, as a node writes it: its
    # silence since is explained (a camera that just went quiet would be a finding).
    for site, node, cam, last, end in conn.execute(
        "SELECT site, node, camera, MAX(seq), MAX(start + COALESCE(duration, 30))"
        " FROM segments GROUP BY 1, 2, 3"
    ).fetchall():
        rec = losses.loss_record("stopped", cam, [], "bench", site=site, node=node, now=end,
                                 last_seq=last)  # fmt: skip
        folder = root / site / node / losses.LOSS_CAMERA / "stopped"
        folder.mkdir(parents=True, exist_ok=True)
        losses.write_record(folder, rec)
    config = NasConfig(root=root, db=db, sha256=True)
    conn.close()
    conn, _ = index.update(config)
    times = []
    for _ in range(3):
        t, result = timed(audit.audit_camera, conn, "lab", "node01", "cam0", grace=0)
        times.append(t)
    gaps = [h for h in result.holes if h.kind != "silent"]  # and one silence since, explained
    assert result.unexplained == 0 and len(gaps) == len(victims), result.holes[:3]
    t0 = time.perf_counter()
    done = subprocess.run([*LIVECAM, "nas", "audit", "--root", str(root), "--db", str(db),
                           "--json", "--grace", "0s"], capture_output=True, text=True)  # fmt: skip
    t_cli = time.perf_counter() - t0
    assert done.returncode == 0, done.stderr[-500:]
    return {
        "camera_month_segments": result.segments,
        "camera_month_holes": len(result.holes),
        "audit_one_camera_month_seconds": round(min(times), 2),
        "audit_cli_all_cameras_seconds": round(t_cli, 2),
        "cameras_in_cli_audit": len(json.loads(done.stdout)["cameras"]),
    }


def wheel_venv(work: Path) -> Path:
    """A venv with livecam installed from a wheel of this tree, as the NAS role installs it
    (ansible/roles/livecam_nas/tasks/livecam.yml): no editable-install import hook, byte
    code compiled at install. Returns its ``livecam`` console script."""
    wheels, venv = work / "wheel", work / "wheel-venv"
    shutil.rmtree(wheels, ignore_errors=True)
    shutil.rmtree(venv, ignore_errors=True)

    def sh(*argv: str) -> None:
        subprocess.run(argv, check=True, capture_output=True, timeout=600)

    sh(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(REPO), "-w", str(wheels))
    shutil.rmtree(REPO / "build", ignore_errors=True)  # setuptools' leftovers in the tree
    sh(sys.executable, "-m", "venv", str(venv))
    sh(str(venv / "bin/pip"), "install", "-q", str(next(wheels.glob("livecam-*.whl"))))
    return venv / "bin" / "livecam"


def spread(times: list[float]) -> tuple[float, float]:
    return min(times), statistics.median(times)


def bench_export(args: argparse.Namespace, work: Path) -> dict:
    """``livecam export`` (the console script, installed from the wheel as on the NAS, and
    the development venv's editable one) against ``cat`` of the same segment files into
    the same file system, runs interleaved; best and median of ``--reps``. Warm: the
    segments in the page cache for every run; cold: dropped from it before every run
    (``POSIX_FADV_DONTNEED``, only those files), as a NAS exporting last week reads them."""
    root = work / "export-root"
    source = work / "seg720.mp4"
    if not source.exists():
        encode(source, SEGMENT, "1280x720", 30, "5M", noise=True)
    spans = [int(m) for m in str(args.minutes).split(",")]
    count = max(spans) * 60 // SEGMENT
    folder = root / "lab/node01/cam0/2026-10-01"
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for i in range(count):  # copies, not links: each read is a real read
        files.append(folder / segment_name("cam0", START + timedelta(seconds=i * SEGMENT), i))
        if not files[-1].exists():
            shutil.copyfile(source, files[-1])
    scripts = {"wheel": str(wheel_venv(work)), "editable": LIVECAM_SCRIPT}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([scripts["wheel"], "nas", "index", "--root", str(root)], check=True, env=env,
                   capture_output=True)  # fmt: skip
    out = work / "clip.mp4"
    results: dict = {"export_reps": args.reps}

    def drop(paths: list[Path]) -> None:
        """Out of the page cache (clean after the sync): read again from the disk."""
        for path in paths:
            fd = os.open(path, os.O_RDONLY)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            os.close(fd)

    def run(argv: list[str], cold: list[Path]) -> float:
        # Each run starts with no dirty pages left by the one before: otherwise the
        # kernel throttles whichever writer comes next to the disk's speed.
        os.sync()
        drop(cold)
        t0 = time.perf_counter()
        with open(out, "wb") as dst:
            subprocess.run(argv, check=True, stdout=dst, stderr=subprocess.DEVNULL, env=env)
        took = time.perf_counter() - t0
        out.unlink()
        return took

    for minutes in spans:
        n = minutes * 60 // SEGMENT
        span_files = files[:n]
        total = sum(f.stat().st_size for f in span_files)
        end = START + timedelta(seconds=n * SEGMENT)
        clip = work / "export.mp4"
        span = ["export", "lab/node01/cam0", "--root", str(root), "--from", START.isoformat(),
                "--to", end.isoformat(), "-o", str(clip)]  # fmt: skip
        commands = {f"export_{kind}": [script, *span] for kind, script in scripts.items()}
        commands["cat"] = ["cat", *map(str, span_files)]
        results |= {f"{minutes}min_segments": n, f"{minutes}min_bytes": total}
        for cache in ("warm", "cold"):
            cold = span_files if cache == "cold" else []
            for argv in commands.values():  # page cache (warm), byte code
                run(argv, cold)
            times: dict[str, list[float]] = {name: [] for name in [*commands, "export_in_process"]}
            for _ in range(args.reps):
                for name, argv in commands.items():
                    times[name].append(run(argv, cold))
                    clip.unlink(missing_ok=True)
                # The same export in this process: the join itself, without starting a Python.
                conn = index.connect(root / ".livecam" / "index.sqlite")
                os.sync()
                drop(cold)
                t, _clip = timed(export.export, conn, root, ("lab", "node01", "cam0"),
                                 START.timestamp(), end.timestamp(), clip)  # fmt: skip
                conn.close()
                times["export_in_process"].append(t)
                clip.unlink()
            key = f"{minutes}min_{cache}"
            cat_best, cat_median = spread(times["cat"])
            results[f"{key}_cat_seconds"] = [round(cat_best, 3), round(cat_median, 3)]
            for name in ("export_wheel", "export_editable", "export_in_process"):
                best, median = spread(times[name])
                results[f"{key}_{name}_seconds"] = [round(best, 3), round(median, 3)]
                results[f"{key}_{name}_vs_cat"] = [round(cat_best / best, 2),
                                                   round(cat_median / median, 2)]  # fmt: skip
    if len(spans) >= 2:
        # Throughput: what the longer span adds over the shorter one, so a command's
        # fixed start (Python, imports) cancels out: cat's added time over the export's.
        short, long = f"{min(spans)}min", f"{max(spans)}min"
        for cache in ("warm", "cold"):
            for name in ("export_wheel", "export_in_process"):
                added = [
                    results[f"{long}_{cache}_{what}_seconds"][0]
                    - results[f"{short}_{cache}_{what}_seconds"][0]
                    for what in ("cat", name)
                ]
                results[f"throughput_{cache}_{name}_vs_cat"] = round(added[0] / added[1], 2)
    # The fixed cost of a command: a bare Python, and one importing the export's modules.
    python = str(Path(scripts["wheel"]).parent / "python")
    for name, code in (
        ("python_start", "pass"),
        ("python_import_export", "import livecam.nas.cli"),
    ):
        best = []
        for _ in range(args.reps):
            t0 = time.perf_counter()
            subprocess.run([python, "-c", code], check=True, env=env)
            best.append(time.perf_counter() - t0)
        results[f"wheel_{name}_seconds"] = [round(x, 3) for x in spread(best)]
    return results


def bench_probe(args: argparse.Namespace, work: Path) -> dict:
    seg = work / "seg720.mp4"
    if not seg.exists():
        encode(seg, SEGMENT, "1280x720", 30, "5M", noise=True)
    times = [timed(probe.duration, seg)[0] for _ in range(20)]
    per = statistics.median(times)
    return {
        "ffprobe_seconds_per_segment": round(per, 4),
        "segment_bytes": seg.stat().st_size,
        "first_index_345600_with_ffprobe_2_workers_hours_estimate": round(
            345600 * per / 2 / 3600, 2
        ),
    }


def report_md(results: dict) -> str:
    rows = "\n".join(f"| {k} | {v} |" for part in results.values() for k, v in part.items())
    return f"| figure | value |\n|---|---|\n{rows}\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("what", choices=["index", "audit", "export", "probe", "all"])
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--cameras", type=int, default=4)
    p.add_argument("--minutes", default="10,30", help="export spans, comma-separated")
    p.add_argument(
        "--reps", type=int, default=7, help="export and cat runs each (best and median kept)"
    )
    p.add_argument("--report", help="also write the figures as a markdown table here")
    p.add_argument("--work", help="work directory (default: a new one under /var/tmp)")
    args = p.parse_args()
    logging.disable(logging.WARNING)  # one 'loss record' line per placed record
    work = Path(args.work or tempfile.mkdtemp(prefix="livecam-nasbench-", dir="/var/tmp"))
    results: dict[str, dict] = {}
    try:
        if args.what in ("index", "audit", "all"):
            results["index"] = bench_index(args, work)
        if args.what in ("audit", "all"):
            results["audit"] = bench_audit(args, work)
        if args.what in ("export", "all"):
            results["export"] = bench_export(args, work)
        if args.what in ("probe", "all"):
            results["probe"] = bench_probe(args, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results, indent=1))
    if args.report:
        Path(args.report).write_text(report_md(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
