"""The camera-backend contract: every registered backend records through the real recorder.

Each backend gets a tiny configuration (160x120, 10 fps, 1 s segments) whose frames
carry their frame number in the picture (16-pixel black/white blocks across the
top rows, bit 0 leftmost), so a test can read back every frame of every segment,
and below it the wall-clock time the frame was captured (``libcamera._fake``'s
layout; for ffmpeg, when its test source made the frame, on its own clock as a
camera does), so a test can compare a segment's name with its first frame's time.
A backend registered without an entry in CONTRACT_CAMERAS fails the suite: add one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from livecam.pluginhost.manager import Plugins
from livecam.storage import snapshot
from tests.conftest import ffprobe, livecam_cmd, write_config

FAKE_LIBCAMERA = Path(__file__).resolve().parent / "fake_libcamera"
# The fake libcamera binding (and pykms, prctl) for picamera2 in this process too; its
# _fake module also reads frame numbers back for every backend.
sys.path.insert(0, str(FAKE_LIBCAMERA))
from libcamera import _fake  # noqa: E402

read_frame_number = _fake.read_frame_number
read_frame_time = _fake.read_frame_time
# Raspberry Pi 5 camera Ids: a Camera Module 3 on the CAM1 port, a v2 on CAM0.
CAM_IMX708 = "/base/axi/pcie@1000120000/rp1/i2c@88000/imx708@1a"
CAM_IMX219 = "/base/axi/pcie@1000120000/rp1/i2c@80000/imx219@10"
IMX219_MODES = [[640, 480, 103.33], [1640, 1232, 41.85], [1920, 1080, 47.57]]
WIDTH, HEIGHT, FPS = 160, 120, 10
SEGMENT_SECONDS = 1.0
KEYFRAME_SECONDS = 1.0
RECORD_SECONDS = 5.5

# Bit b of the frame number N as the block of columns [16b, 16b+16) in rows 0-15; under
# it bit b of the capture time in milliseconds (T: the source sets each frame's time to
# the wall clock, RTCTIME, while it makes it) in rows of WIDTH/16 blocks (_fake.time_blocks).
_NUMBER_LUMA = "if(mod(floor(N/pow(2,floor(X/16))),2),235,16)"
_TIME_BIT = f"(floor(Y/16)-1)*{WIDTH // 16}+floor(X/16)"
_TIME_LUMA = f"if(mod(floor(floor(T*1000+0.5)/pow(2,{_TIME_BIT})),2),235,16)"
_TIME_ROWS = 16 + 16 * -(-_fake.TIME_BITS // (WIDTH // 16))
_LUMA = f"if(lt(Y,16),{_NUMBER_LUMA},if(lt(Y,{_TIME_ROWS}),{_TIME_LUMA},128))"


Contract = tuple[dict[str, Any], dict[str, str], list[str]]  # camera, environment, command


def _ffmpeg(tmp: Path) -> Contract:
    # Like a camera: the source makes each frame on its own clock (``realtime``: frame N
    # N/FPS s after frame 0), stamps it with the wall clock in ms (RTCTIME) as it makes
    # it, paints it, and gives it back its place in the stream (N/FPS s); ffmpeg reads
    # frames as they come (``realtime: false``: no -re).
    source = (
        f"nullsrc=s={WIDTH}x{HEIGHT}:r={FPS},realtime,settb=1/1000,setpts=RTCTIME/1000,"
        f"geq=lum='{_LUMA}':cb=128:cr=128,setpts=N/({FPS}*TB)"
    )
    return (
        {
            "backend": "ffmpeg",
            # A list: no shell-style unquoting. No probing ahead (it would wait for
            # frames, which come in real time).
            "input": ["-fpsprobesize", "0", "-f", "lavfi", "-i", source],
            "realtime": False,
            "preset": "ultrafast",
        },
        {},
        livecam_cmd(),
    )


def _picamera2(tmp: Path) -> Contract:
    # picamera2 from PyPI runs for real, Picamera2 class and all; only the libcamera
    # binding (two cameras as on a Pi 5; the second one is used) and the kernel's DMA
    # heap are stood in for: livecam_fake_pi runs the livecam command with the latter.
    cameras = _fake.write_config(
        tmp / "cameras.json",
        {"id": CAM_IMX708},
        {"id": CAM_IMX219, "model": "imx219", "modes": IMX219_MODES},
    )
    env = {"PYTHONPATH": str(FAKE_LIBCAMERA), _fake.CONFIG_ENV: str(cameras)}
    command = [sys.executable, str(FAKE_LIBCAMERA / "livecam_fake_pi.py")]
    return {"backend": "picamera2", "camera": CAM_IMX219}, env, command


CONTRACT_CAMERAS: dict[str, Callable[[Path], Contract]] = {
    "ffmpeg": _ffmpeg,
    "picamera2": _picamera2,
}


def camera_backends() -> list[str]:
    return Plugins().cameras.names()


@dataclass
class Recording:
    """What one contract run of a backend left behind."""

    backend: str
    ready_dir: Path
    open_dir: Path
    exit_code: int
    log: str
    segments: list[Path] = field(default_factory=list)
    seen_unplayable: list[str] = field(default_factory=list)
    stray_files: list[str] = field(default_factory=list)
    probes: dict[str, dict[str, Any]] = field(default_factory=dict)
    numbers: dict[str, list[int]] = field(default_factory=dict)
    times: dict[str, list[float]] = field(default_factory=dict)  # each frame's capture time


def frame_numbers(path: Path, width: int = WIDTH, height: int = HEIGHT) -> list[int]:
    """Decode a segment for real and read the frame number out of every frame."""
    size = width * height
    raw = _luma(path)
    return [read_frame_number(raw[i : i + 16 * width], width) for i in range(0, len(raw), size)]


def frame_times(path: Path, width: int = WIDTH, height: int = HEIGHT) -> list[float]:
    """Decode a segment for real and read each frame's capture time out of it."""
    size, now = width * height, time.time()
    raw = _luma(path)
    return [read_frame_time(raw[i : i + size], width, now) for i in range(0, len(raw), size)]


def _luma(path: Path) -> bytes:
    """Every frame of a segment decoded, as 8-bit luma."""
    return subprocess.run(
        # passthrough: one picture per stored frame (no duplicates filling timestamp gaps)
        ["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough",
         "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip


def record(tmp: Path, backend: str, seconds: float = RECORD_SECONDS, **options: Any) -> Recording:
    """Run ``livecam record cam0`` for ``seconds``, watching the buffer as a shipper would;
    ``options`` change the camera's contract config."""
    if backend not in CONTRACT_CAMERAS:
        pytest.fail(f"camera backend {backend!r} has no contract config: add to CONTRACT_CAMERAS")
    camera, env, command = CONTRACT_CAMERAS[backend](tmp)
    camera = {
        "size": [WIDTH, HEIGHT],
        "fps": FPS,
        "bitrate": "200k",
        "keyframe_seconds": f"{KEYFRAME_SECONDS}s",
        **camera,
        **options,
    }
    config = write_config(
        tmp / "livecam.yaml",
        {
            "segment_seconds": SEGMENT_SECONDS,
            "cameras": {"cam0": camera},
            "buffer": {"path": str(tmp / "buffer"), "max_bytes": "50M"},
            "spool": {"path": str(tmp / "spool"), "max_bytes": "50M", "min_free_bytes": 0},
            "transport": {"plugin": "nfs", "path": str(tmp / "nas")},
            "plugin_dirs": [],
        },
    )
    ready = tmp / "buffer" / "cam0"
    rec = Recording(backend, ready, ready / ".open", exit_code=-1, log="")
    proc = subprocess.Popen(
        [*command, "-c", str(config), "record", "cam0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **env},
    )
    seen: set[str] = set()
    # ``seconds`` of recording from when the recorder made its camera's directory: on a
    # busy machine Python alone may take seconds to start.
    deadline = time.monotonic() + seconds + 60
    try:
        while time.monotonic() < deadline:
            if deadline - time.monotonic() > seconds and ready.is_dir():
                deadline = time.monotonic() + seconds
            if proc.poll() is not None:
                break  # it ended on its own: the tests say what went wrong
            for entry in sorted(ready.iterdir()) if ready.is_dir() else []:
                # The open directory, and the camera's snapshot (livecam.storage.snapshot: a
                # dot-name the tier never lists, replaced through a dot-named temp file).
                if entry.name in (".open", snapshot.NAME) or entry.name in seen:
                    continue
                if entry.name.startswith(".snapshot-") and entry.name.endswith(".tmp"):
                    continue
                seen.add(entry.name)
                if not entry.name.endswith(".mp4"):
                    rec.stray_files.append(entry.name)
                    continue
                try:  # the moment it is visible, it must play
                    ffprobe(entry)
                except subprocess.CalledProcessError:
                    rec.seen_unplayable.append(entry.name)
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    rec.exit_code, rec.log = proc.returncode, out
    rec.segments = sorted(ready.glob("*.mp4"))
    for seg in rec.segments:
        rec.probes[seg.name] = ffprobe(seg)
        rec.numbers[seg.name] = frame_numbers(seg)
        rec.times[seg.name] = frame_times(seg)
    return rec


@pytest.fixture(scope="module", params=camera_backends())
def recording(request, tmp_path_factory) -> Recording:
    """One contract recording per registered backend, shared by the contract tests."""
    return record(tmp_path_factory.mktemp(request.param), request.param)
