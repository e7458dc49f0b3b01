#!/usr/bin/env python3
"""What a camera's snapshot costs: CPU of the camera's ffmpeg with and without it, or
of the picamera2 backend's snapshot code.

    bench/snapshot.py [--backend ffmpeg|picamera2] [--seconds 30] [--size 1280x720]
                      [--fps 15] [--report FILE]

ffmpeg: runs the backend's own command line (``FfmpegCamera.argv``: a real-time test
pattern, libx264, 30 s segments into a temporary directory) for ``--seconds``,
once with ``snapshot_seconds: 5s`` and once with ``0``, alternating, ``--rounds``
times; CPU is the child's user + system time. The difference per second of wall
time is the snapshot's share of one core. Target: ≤ 2 % of a core per camera.
On a shared machine the noise between runs is of the same order: read ``spread``.

picamera2: the backend records for real (picamera2's Picamera2, its x264 encoder) from
the tests' fake camera (tests/cameras/fake_libcamera) in real time, with
``snapshot_seconds: 5s``; the CPU time of the snapshot code itself is measured in the
threads that run it (the camera thread's copy of the frame, the recorder thread's
JPEG encoding and write), per second of wall time. The with/without difference of
the whole process is printed too, but the fake camera's painting of every frame
makes it far noisier than the figure.

Prints JSON; ``--report FILE`` writes it as markdown too. Run as any user.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from livecam_plugins.ffmpeg import FfmpegCamera

from bench.report import emit
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


def picamera2_cost(width: int, height: int, fps: int, seconds: float) -> dict[str, object]:
    """The picamera2 backend's snapshot code: thread CPU seconds per wall second."""
    fake = Path(__file__).resolve().parent.parent / "tests" / "cameras" / "fake_libcamera"
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
    sys.path.insert(0, str(fake))
    import fake_dma_heap
    from libcamera import _fake
    from livecam_plugins import picamera2 as plugin
    from livecam_plugins.picamera2.snapshots import Snapshots

    fake_dma_heap.install()  # this kernel has no DMA heap for picamera2's buffers
    used = {"camera_thread": 0.0, "recorder_thread": 0.0}
    snaps: list[object] = []

    def timed(fn, where):  # type: ignore[no-untyped-def]
        def run(self, *a):  # type: ignore[no-untyped-def]
            t = time.thread_time()
            try:
                return fn(self, *a)
            finally:
                used[where] += time.thread_time() - t
                if self not in snaps:
                    snaps.append(self)

        return run

    Snapshots.on_request = timed(Snapshots.on_request, "camera_thread")
    Snapshots.poll = timed(Snapshots.poll, "recorder_thread")
    with tempfile.TemporaryDirectory(prefix="web-bench-snapshot-", dir="/dev/shm") as work:
        config = _fake.write_config(
            Path(work) / "cameras.json", {"id": "/base/axi/pcie@1000120000/rp1/i2c@88000/imx708@1a"}
        )
        os.environ[_fake.CONFIG_ENV] = str(config)
        cpu: dict[str, float] = {}
        for case, every in (("without", "0"), ("with", "5s")):
            raw = {"camera": 0, "size": [width, height], "fps": fps, "bitrate": "2M",
                   "snapshot_seconds": every, "frame_timeout": "30s"}  # fmt: skip
            opts = o.check_options("cameras.bench", raw, plugin.Picamera2Camera.options)
            cam = plugin.Picamera2Camera("bench", opts, segment_seconds=30)
            open_dir = Path(work) / case / "bench" / ".open"
            open_dir.mkdir(parents=True)
            sink = SimpleSink(open_dir)
            if case == "with":
                used.update(camera_thread=0.0, recorder_thread=0.0)
            stop = threading.Timer(seconds, cam.stop)
            stop.start()
            t0 = time.process_time()
            cam.record(sink)  # type: ignore[arg-type]
            cpu[case] = (time.process_time() - t0) / seconds
        snap = open_dir.parent / ".snapshot.jpg"
        assert snap.is_file(), "the snapshot was written"
        written = snaps[-1].written  # type: ignore[attr-defined]
        share = (used["camera_thread"] + used["recorder_thread"]) / seconds
        return {
            "camera": f"picamera2 {width}x{height} {fps} fps, x264 ultrafast 2M, fake camera",
            "seconds": seconds, "snapshots": written,
            "snapshot_ms_camera_thread": round(1000 * used["camera_thread"] / written, 2),
            "snapshot_ms_recorder_thread": round(1000 * used["recorder_thread"] / written, 2),
            "snapshot_core_share": round(share, 5),
            "process_core_share_with": round(cpu["with"], 4),
            "process_core_share_without": round(cpu["without"], 4),
            "snapshot_bytes": snap.stat().st_size, "target": TARGET,
        }  # fmt: skip


class SimpleSink:
    """A SegmentSink that deletes what it is given (only the snapshot matters here)."""

    def __init__(self, open_dir: Path):
        self.open_dir = open_dir

    def close(
        self, path: Path, *, duration: float | None = None, start: float | None = None
    ) -> None:
        Path(path).unlink()

    def dropped_frames(self, count: int) -> None:
        pass


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=("ffmpeg", "picamera2"), default="ffmpeg")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--size", default="1280x720")
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--report", type=Path)
    args = p.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    if args.backend == "picamera2":
        result = picamera2_cost(width, height, args.fps, args.seconds)
        result["within_target"] = float(result["snapshot_core_share"]) <= TARGET  # type: ignore[arg-type]
        title = "Snapshot cost (picamera2)"
        emit(result, args.report, title, "`bench/snapshot.py --backend picamera2`")
        return 0 if result["within_target"] else 1
    runs: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory(prefix="web-bench-snapshot-") as work:
        for _ in range(args.rounds):
            for case, every in (("with", "5s"), ("without", "0")):
                raw = {"pattern": "testsrc2", "size": [width, height], "fps": args.fps,
                       "bitrate": "2M", "snapshot_seconds": every}  # fmt: skip
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
    intro = "`bench/snapshot.py`: the ffmpeg command line with and without the snapshot output."
    emit(result, args.report, "Snapshot cost", intro)
    return 0 if result["within_target"] else 1


if __name__ == "__main__":
    sys.exit(main())
