"""Benchmark the picamera2 backend's encoding path; compare with plain ffmpeg libx264.

Figures:
- encoder CPU per camera-second at 720p30 and 1080p30: the plugin's real path
  (picamera2's Picamera2 class and request loop -> LibavH264Encoder -> SplittableOutput
  -> PyavOutput files), the fake camera free-running (a frame whenever a buffer is
  free, timestamps 1/30 s apart), versus ``ffmpeg -c:v libx264`` with the same preset,
  tune, bitrate and GOP on the same frames;
- split latency (timer fires -> old file closed) and frames lost per 100 splits,
  checked by decoding every segment and reading the frame numbers in the picture.

Runs against the tests' fake camera stack (fake libcamera binding and DMA heap, see
tests/cameras/fake_libcamera); on a Pi, docs/raspberry-pi.md has the hardware check.
Usage: .venv/bin/python bench/picamera2.py [--seconds 10] [--splits 100] [--report FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
FAKE = REPO / "tests" / "cameras" / "fake_libcamera"
# This file's own folder comes first on sys.path, and its name would hide picamera2.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]
sys.path[:0] = [str(FAKE), str(REPO)]

import fake_dma_heap  # noqa: E402
import libcamera  # noqa: E402
from libcamera import _fake  # noqa: E402
from livecam_plugins import picamera2 as plugin  # noqa: E402
from livecam_plugins.picamera2 import library  # noqa: E402

from livecam.options import check_options  # noqa: E402


class Sink:
    def __init__(self, open_dir: Path):
        self.open_dir = open_dir
        self.closed: list[Path] = []
        self.dropped = 0

    def close(
        self, path: Path, *, duration: float | None = None, start: float | None = None
    ) -> None:
        self.closed.append(Path(path))

    def dropped_frames(self, count: int) -> None:
        self.dropped += count


class BenchCamera(plugin.Picamera2Camera):
    """The backend on the fake camera, timing each split."""

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.split_seconds: list[float] = []

    def _split(self, *args: Any) -> bool:
        t = time.monotonic()
        ok = super()._split(*args)
        self.split_seconds.append(time.monotonic() - t)
        return ok


def plug_camera(work: Path, **faults: Any) -> str:
    """Describe one fake camera (a Camera Module 3) for the fake libcamera; returns its Id."""
    camera_id = "/base/axi/pcie@1000120000/rp1/i2c@88000/imx708@1a"
    config = _fake.write_config(
        work / f"camera-{time.monotonic_ns()}.json", {"id": camera_id, **faults}
    )
    os.environ[_fake.CONFIG_ENV] = str(config)
    return camera_id


def make_backend(camera, size, fps, segment, keyframe, preset, bitrate) -> BenchCamera:
    opts = check_options(
        "bench",
        {"camera": camera, "size": list(size), "fps": fps, "bitrate": bitrate,
         "keyframe_seconds": keyframe, "preset": preset, "frame_timeout": "30s"},
        plugin.Picamera2Camera.options,
    )  # fmt: skip
    return BenchCamera("bench", opts, segment_seconds=segment)


def plugin_cpu(size, fps, frames, preset, bitrate, work: Path) -> dict[str, float]:
    """CPU seconds of this process while the plugin encodes ``frames`` frames flat out."""
    camera = plug_camera(work, realtime=False, stall_after=frames)
    b = make_backend(camera, size, fps, 3600, 1, preset, bitrate)
    sink = Sink(work)
    cpu0, t0 = time.process_time(), time.monotonic()
    runner = threading.Thread(target=b.record, args=(sink,))
    runner.start()
    fake = libcamera.CameraManager.singleton().get(camera)
    while runner.is_alive() and (fake.sensor is None or not fake.sensor.finished.wait(0.05)):
        time.sleep(0.01)
    delivered = fake.sensor.delivered if fake.sensor else 0
    b.stop()
    runner.join()
    cpu, wall = time.process_time() - cpu0, time.monotonic() - t0
    # What the fake sensor itself costs (painting pictures into buffers) is not encoding.
    pictures = _fake.Pictures(*size)
    frame = pictures.frame(0)
    w, h = size
    y, u, v = frame[: w * h].reshape(h, w), frame[w * h : w * h * 5 // 4], frame[w * h * 5 // 4 :]
    u, v = u.reshape(h // 2, w // 2), v.reshape(h // 2, w // 2)
    c0 = time.process_time()
    for n in range(frames):
        pictures.draw(n, y, u, v)
    camera_cpu = time.process_time() - c0
    for p in sink.closed:
        p.unlink()
    if delivered != frames:
        raise SystemExit(f"the fake camera delivered {delivered} frames of {frames}")
    return {"cpu": cpu - camera_cpu, "camera_cpu": camera_cpu, "wall": wall}


def ffmpeg_cpu(size, fps, frames, preset, bitrate, work: Path) -> dict[str, float]:
    """CPU seconds of ffmpeg libx264 on the same frames, read from a RAM file."""
    raw = work / "frames.yuv"
    pictures = _fake.Pictures(*size)
    with open(raw, "wb") as f:
        for n in range(frames):
            f.write(pictures.frame(n).tobytes())
    argv = [
        "ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "yuv420p",
        "-s", f"{size[0]}x{size[1]}", "-r", str(fps), "-i", str(raw),
        "-c:v", "libx264", "-preset", preset, "-tune", "zerolatency", "-b:v", str(bitrate),
        "-g", str(fps), "-f", "mp4", str(work / "ffmpeg.mp4"),
    ]  # fmt: skip
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    subprocess.run(argv, check=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    raw.unlink()
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"cpu": cpu, "wall": wall}


def split_run(splits: int, work: Path) -> dict[str, Any]:
    """Record in real time with short segments; time each split and count lost frames."""
    from tests.cameras.conftest import frame_numbers

    size, fps, segment = (320, 240), 30, 0.25
    camera = plug_camera(work)
    b = make_backend(camera, size, fps, segment, segment, "ultrafast", 1_000_000)
    sink = Sink(work)
    runner = threading.Thread(target=b.record, args=(sink,))
    runner.start()
    while runner.is_alive() and len(b.split_seconds) < splits:
        time.sleep(0.05)
    b.stop()
    runner.join()
    numbers = [n for p in sink.closed for n in frame_numbers(p, *size)]
    expected = list(range(numbers[0], numbers[-1] + 1))
    lost = len(set(expected) - set(numbers))
    repeated = len(numbers) - len(set(numbers))
    for p in sink.closed:
        p.unlink()
    done = len(b.split_seconds)
    lat = sorted(b.split_seconds)
    return {
        "splits": done,
        "segment": segment,
        "keyframe": segment,
        "frames": len(numbers),
        "lost": lost,
        "repeated": repeated,
        "lost_per_100": 100 * lost / done,
        "latency_median_ms": 1000 * statistics.median(lat),
        "latency_p95_ms": 1000 * lat[int(0.95 * (len(lat) - 1))],
        "latency_max_ms": 1000 * lat[-1],
        "forced_keyframes": library.load().can_force_keyframes,
    }


def _quiet_unraisable(u: Any) -> None:
    # picamera2 0.3.38's Picamera2.close() ends by making a DmaAllocator, which fails
    # here (no DMA heap) after the camera is released; its __del__ then complains.
    if "DmaAllocator" not in repr(u.object):
        sys.__unraisablehook__(u)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=10, help="camera-seconds per CPU run")
    ap.add_argument("--splits", type=int, default=100)
    ap.add_argument("--preset", default="ultrafast")
    ap.add_argument("--report", type=Path, help="also write the figures as markdown here")
    args = ap.parse_args()
    import av

    fake_dma_heap.install()  # this kernel has no DMA heap for picamera2's buffers
    sys.unraisablehook = _quiet_unraisable

    work = Path(tempfile.mkdtemp(prefix="livecam-bench-", dir="/dev/shm"))
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    lines = [
        f"Machine: {machine}; Python {platform.python_version()}, PyAV {av.__version__}, "
        f"x264 preset {args.preset}, tune zerolatency, GOP 30 frames, "
        f"{args.seconds:g} camera-seconds per run.",
        "",
        "| stream | bitrate | plugin CPU-s per camera-s | ffmpeg libx264 CPU-s per camera-s "
        "| ratio plugin/ffmpeg | plugin fps flat out |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    print("\n".join(lines), flush=True)
    streams = (("720p30", (1280, 720), 5_000_000), ("1080p30", (1920, 1080), 8_000_000))
    for label, size, bitrate in streams:
        frames = int(args.seconds * 30)
        p = plugin_cpu(size, 30, frames, args.preset, bitrate, work)
        f = ffmpeg_cpu(size, 30, frames, args.preset, bitrate, work)
        row = (
            f"| {label} | {bitrate // 1_000_000}M | {p['cpu'] / args.seconds:.3f} "
            f"| {f['cpu'] / args.seconds:.3f} | {p['cpu'] / f['cpu']:.2f} "
            f"| {frames / p['wall']:.0f} |"
        )
        lines.append(row)
        print(row, flush=True)
    s = split_run(args.splits, work)
    tail = [
        "",
        f"Splits: {s['splits']} splits of {s['segment']}s segments (keyframe every "
        f"{s['keyframe']}s, forced keyframes: {s['forced_keyframes']}): latency median "
        f"{s['latency_median_ms']:.0f} ms, p95 {s['latency_p95_ms']:.0f} ms, max "
        f"{s['latency_max_ms']:.0f} ms; {s['frames']} frames decoded, {s['lost']} lost, "
        f"{s['repeated']} repeated: {s['lost_per_100']:.2f} frames lost per 100 splits.",
    ]
    lines += tail
    print("\n".join(tail))
    shutil.rmtree(work)
    if args.report:
        args.report.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
