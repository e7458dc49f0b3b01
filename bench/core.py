#!/usr/bin/env python3
"""Benchmarks of the core appliance, with real ffmpeg and real livecam processes.

    bench/core.py boundary  [--segments 120]        frames in vs frames out across boundaries
    bench/core.py diskwrites [--seconds 60]         bytes written to the "SD card" per byte recorded
    bench/core.py cpu       [--seconds 180]         livecam CPU and RSS per camera-hour at 720p30
    bench/core.py all --report /tmp/core.md     (then copy into docs/benchmarks.md)

Run as root (the disk-write benchmark mounts an ext4 image on a loop device as the
node's SD card, so its block-layer write counter sees only livecam's writes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.conftest import command_lines  # noqa: E402 - the tests' helper, from the repo
from tests.core.node import LoopDisk  # noqa: E402

LIVECAM = [sys.executable, "-m", "livecam"]


def ffprobe_frames(path: Path) -> tuple[int, float]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0", "-show_entries",
         "stream=nb_read_frames:format=start_time", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    data = json.loads(out)
    return int(data["streams"][0]["nb_read_frames"]), float(data["format"]["start_time"])


# --- boundary loss -------------------------------------------------------------------


def bench_boundary(args: argparse.Namespace) -> dict:
    """Encode a finite test pattern through the ffmpeg backend; count every frame out."""
    from livecam_plugins.ffmpeg import FfmpegCamera

    from livecam.options import check_options

    fps, seconds = 30, 1
    frames_in = args.segments * seconds * fps
    work = Path(tempfile.mkdtemp(prefix="livecam-bench-"))
    open_dir = work / ".open"
    open_dir.mkdir()
    source = f"testsrc2=size=320x240:rate={fps}:duration={frames_in / fps:g}"
    opts = check_options(
        "bench",
        {
            "input": f"-f lavfi -i {source}",
            "size": [320, 240],
            "fps": fps,
            "realtime": False,
            "preset": "ultrafast",
            "bitrate": "1M",
        },
        FfmpegCamera.options,
    )
    closed: list[Path] = []

    class Sink:
        def __init__(self):
            self.open_dir = open_dir

        def close(self, path, *, duration=None, start=None):
            dest = work / f"{len(closed):06d}.mp4"
            os.rename(path, dest)
            closed.append(dest)

        def dropped_frames(self, count):
            raise AssertionError("ffmpeg reported dropped frames")

    camera = FfmpegCamera("bench", opts, segment_seconds=seconds)
    t0 = time.monotonic()
    try:
        camera.record(Sink())
    except Exception as exc:  # the finite source ends: ffmpeg exits, as it should here
        if "code 0" not in str(exc):
            raise
    elapsed = time.monotonic() - t0
    counts, starts = zip(*(ffprobe_frames(p) for p in closed), strict=True)
    shutil.rmtree(work)
    return {
        "segments": len(closed),
        "frames_in": frames_in,
        "frames_out": sum(counts),
        "lost_or_repeated": frames_in - sum(counts),
        "segments_not_full": sum(1 for c in counts[:-1] if c != fps * seconds),
        "segments_not_starting_at_0": sum(1 for s in starts if s != 0.0),
        "encode_seconds": round(elapsed, 1),
    }


# --- a node to measure ------------------------------------------------------------------


class Node:
    """livecam run with a config, a RAM buffer, a spool and a tmpfs 'NAS'."""

    def __init__(self, root: Path, spool: Path, cameras: dict, segment_seconds: float):
        self.root = root
        self.nas = root / "nas"
        self.nas.mkdir(parents=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4G", "tmpfs", str(self.nas)], check=True
        )
        self.config = root / "livecam.yaml"
        self.config.write_text(
            yaml.safe_dump(
                {
                    "node": "bench",
                    "site": "bench",
                    "segment_seconds": segment_seconds,
                    "cameras": cameras,
                    "buffer": {
                        "path": f"/dev/shm/livecam-bench-{os.getpid()}",
                        "max_bytes": "200M",
                    },
                    "spool": {"path": str(spool), "max_bytes": "10G", "min_free_bytes": 0},
                    "transport": {"plugin": "nfs", "path": str(self.nas), "fstypes": ["tmpfs"]},
                    "plugin_dirs": [],
                }
            )
        )
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.root / "log", "wb") as log:
            self.proc = subprocess.Popen(
                [*LIVECAM, "-c", str(self.config), "run"], stdout=subprocess.DEVNULL, stderr=log
            )

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.nas)], check=False, capture_output=True)
        shutil.rmtree(f"/dev/shm/livecam-bench-{os.getpid()}", ignore_errors=True)

    def recorded_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.nas.rglob("*.mp4"))

    def processes(self) -> dict[int, str]:
        """pid -> 'livecam' or 'ffmpeg' for every process of this node."""
        found = {}
        for pid, cmd in command_lines():
            if str(self.config) in cmd:
                found[pid] = "livecam"
            elif f"livecam-bench-{os.getpid()}" in cmd and cmd.startswith("ffmpeg"):
                found[pid] = "ffmpeg"
        return found


def small_cameras(n: int = 2) -> dict:
    return {
        f"cam{i}": {
            "pattern": "testsrc2",
            "size": [640, 360],
            "fps": 30,
            "bitrate": "2M",
            "preset": "ultrafast",
        }
        for i in range(n)
    }


def bench_diskwrites(args: argparse.Namespace) -> dict:
    """Bytes written to the SD card per byte recorded: healthy link, then an outage."""
    root = Path(tempfile.mkdtemp(prefix="livecam-bench-"))
    disk = LoopDisk(root)
    node = Node(root, disk.mnt / "spool", small_cameras(), segment_seconds=2)
    results = {}
    try:
        node.start()
        time.sleep(5)  # start-up writes (sequence reservation) are not steady state
        w0, r0 = disk.written(), node.recorded_bytes()
        time.sleep(args.seconds)
        w1, r1 = disk.written(), node.recorded_bytes()
        results["healthy"] = {
            "recorded_bytes": r1 - r0,
            "sd_bytes_written": w1 - w0,
            "ratio": round((w1 - w0) / max(1, r1 - r0), 4),
        }
        # The outage: the share unmounts, so every segment spills to the SD card.
        subprocess.run(["umount", "-l", str(node.nas)], check=True)
        spool = disk.mnt / "spool"
        s0 = sum(p.stat().st_size for p in spool.rglob("*.mp4"))
        w0 = disk.written()
        time.sleep(args.seconds)
        w1 = disk.written()
        s1 = sum(p.stat().st_size for p in spool.rglob("*.mp4"))
        results["outage"] = {
            "spilled_bytes": s1 - s0,
            "sd_bytes_written": w1 - w0,
            "ratio": round((w1 - w0) / max(1, s1 - s0), 3),
        }
        node.stop()
    finally:
        node.close()
        disk.close()
        shutil.rmtree(root, ignore_errors=True)
    return results


def proc_stats(pid: int) -> tuple[float, int] | None:
    """(CPU seconds including reaped children, peak RSS bytes) of one process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")
    cpu = sum(int(x) for x in stat[11:15]) / tick  # utime stime cutime cstime
    hwm = next(
        int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM")
    )
    return cpu, hwm


def bench_cpu(args: argparse.Namespace) -> dict:
    """The reference load: 2 cameras, 720p30, 5 Mbit/s, 30 s segments."""
    root = Path(tempfile.mkdtemp(prefix="livecam-bench-"))
    cams = {
        f"cam{i}": {
            "pattern": "testsrc2",
            "size": [1280, 720],
            "fps": 30,
            "bitrate": "5M",
            "preset": "ultrafast",
        }
        for i in range(2)
    }
    node = Node(root, root / "spool", cams, segment_seconds=args.segment_seconds)
    samples: dict[int, tuple[str, float, int]] = {}
    try:
        node.start()
        t0 = time.monotonic()
        while time.monotonic() - t0 < args.seconds:
            for pid, kind in node.processes().items():
                st = proc_stats(pid)
                if st:
                    samples[pid] = (kind, *st)
            time.sleep(1)
        wall = time.monotonic() - t0
        recorded = node.recorded_bytes()
        node.stop()
    finally:
        node.close()
        shutil.rmtree(root, ignore_errors=True)
    livecam = [(c, r) for k, c, r in samples.values() if k == "livecam"]
    ffmpeg = [(c, r) for k, c, r in samples.values() if k == "ffmpeg"]
    cam_hours = 2 * wall / 3600
    livecam_cpu = sum(c for c, _ in livecam)
    return {
        "wall_seconds": round(wall),
        "recorded_MB": round(recorded / 1e6, 1),
        "livecam_processes": len(livecam),
        "livecam_cpu_seconds_per_camera_hour": round(livecam_cpu / cam_hours, 1),
        "livecam_share_of_one_core_per_camera": f"{100 * livecam_cpu / wall / 2:.2f}%",
        "livecam_peak_rss_MB_max": round(max(r for _, r in livecam) / 2**20, 1),
        "ffmpeg_cpu_seconds_per_camera_hour": round(sum(c for c, _ in ffmpeg) / cam_hours),
        "ffmpeg_peak_rss_MB_max": round(max(r for _, r in ffmpeg) / 2**20, 1),
    }


def markdown(results: dict) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} cores, "
        f"`python bench/core.py all`.",
        "",
    ]
    for name, figures in results.items():
        lines += [f"### {name}", "", "| figure | value |", "|---|---|"]
        flat = {}
        for k, v in figures.items():
            if isinstance(v, dict):
                flat.update({f"{k}: {kk}": vv for kk, vv in v.items()})
            else:
                flat[k] = v
        lines += [f"| {k} | {v} |" for k, v in flat.items()] + [""]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("which", choices=["boundary", "diskwrites", "cpu", "all"])
    p.add_argument("--segments", type=int, default=120)
    p.add_argument("--seconds", type=float, default=None)
    p.add_argument("--segment-seconds", type=float, default=30)
    p.add_argument("--report", type=Path, help="write the figures as markdown here")
    args = p.parse_args()
    results = {}
    if args.which in ("boundary", "all"):
        results["boundary loss (ffmpeg backend)"] = bench_boundary(args)
    if args.which in ("diskwrites", "all"):
        a = argparse.Namespace(**{**vars(args), "seconds": args.seconds or 60})
        results["SD-card writes per recorded byte"] = bench_diskwrites(a)
    if args.which in ("cpu", "all"):
        a = argparse.Namespace(**{**vars(args), "seconds": args.seconds or 180})
        results["CPU and memory at the reference load"] = bench_cpu(a)
    print(json.dumps(results, indent=2))
    if args.report:
        args.report.write_text(markdown(results))


if __name__ == "__main__":
    main()
