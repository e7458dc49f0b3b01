#!/usr/bin/env python3
"""What the ffmpeg backend's snapshot costs: CPU of the camera's ffmpeg with and
without it.

    bench/snapshot.py [--seconds 30] [--size 1280x720] [--fps 15] [--report FILE]

Runs the backend's own command line (``FfmpegCamera.argv``: a real-time test
pattern, libx264, 30 s segments into a temporary directory) for ``--seconds``,
once with ``snapshot_seconds: 5s`` and once with ``0``, alternating, ``--rounds``
times; CPU is the child's user + system time. The difference per second of wall
time is the snapshot's share of one core. Target: ≤ 2 % of a core per camera.
On a shared machine the noise between runs is of the same order: read ``spread``.

Prints JSON; ``--report FILE`` writes it as markdown too. Run as any user.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from livecam_plugins.ffmpeg import FfmpegCamera

from livecam import options as o

TARGET = 0.02


def cpu_of(argv: list[str], seconds: float) -> float:
    """CPU seconds (user + system) ffmpeg used in ``seconds`` of wall time."""
    before = os.times()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    time.sleep(seconds)
    proc.send_signal(signal.SIGINT)
    proc.wait(30)
    after = os.times()
    return (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--size", default="1280x720")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--report", type=Path)
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    runs: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory(prefix="web-bench-snapshot-") as work:
        for _ in range(args.rounds):
            for case, every in (("with", "5s"), ("without", "0")):
                raw = {"size": [width, height], "fps": args.fps, "bitrate": "2M",
                       "snapshot_seconds": every}  # fmt: skip
                opts = o.check_options("cameras.bench", raw, FfmpegCamera.options)
                cam = FfmpegCamera("bench", opts, segment_seconds=30)
                open_dir = Path(work) / case / ".open"
                open_dir.mkdir(parents=True, exist_ok=True)
                runs[case].append(cpu_of(cam.argv(str(open_dir)), args.seconds) / args.seconds)
        snap = Path(work) / "with" / ".snapshot.jpg"
        assert snap.is_file(), "the snapshot was written"
        snapshot_bytes = snap.stat().st_size
    w, wo = (sum(v) / len(v) for v in (runs["with"], runs["without"]))
    result = {
        "camera": f"{args.size} {args.fps} fps libx264 veryfast 2M, testsrc2",
        "seconds_per_run": args.seconds, "rounds": args.rounds,
        "core_share_with": round(w, 4), "core_share_without": round(wo, 4),
        "snapshot_core_share": round(w - wo, 4),
        "spread": round(max(max(v) - min(v) for v in runs.values()), 4),
        "snapshot_bytes": snapshot_bytes, "target": TARGET,
    }  # fmt: skip
    result["within_target"] = result["snapshot_core_share"] <= TARGET
    print(json.dumps(result, indent=1))
    if args.report:
        args.report.write_text(
            "# Snapshot cost\n\n`bench/snapshot.py`: the ffmpeg backend's command line with\n"
            "and without the snapshot output.\n\n| figure | value |\n|---|---|\n"
            + "".join(f"| {k} | {v} |\n" for k, v in result.items())
        )
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
