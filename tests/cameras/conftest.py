"""The camera-backend contract: every registered backend records through the real recorder.

Each backend gets a tiny configuration (160x120, 10 fps, 1 s segments) whose frames
carry their frame number in the picture (16-pixel black/white blocks across the
top rows, bit 0 leftmost), so a test can read back every frame of every segment.
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

from livecam import snapshot
from livecam.plugins import Plugins
from tests.conftest import ffprobe, livecam_cmd, write_config

FAKE_LIBCAMERA = Path(__file__).resolve().parent / "fake_libcamera"
# The fake libcamera binding (and pykms, prctl) for picamera2 in this process too; its
# _fake module also reads frame numbers back for every backend.
sys.path.insert(0, str(FAKE_LIBCAMERA))
from libcamera import _fake  # noqa: E402

read_frame_number = _fake.read_frame_number
# Raspberry Pi 5 camera Ids: a Camera Module 3 on the CAM1 port, a v2 on CAM0.
CAM_IMX708 = "/base/axi/pcie@1000120000/rp1/i2c@88000/imx708@1a"
CAM_IMX219 = "/base/axi/pcie@1000120000/rp1/i2c@80000/imx219@10"
IMX219_MODES = [[640, 480, 103.33], [1640, 1232, 41.85], [1920, 1080, 47.57]]
WIDTH, HEIGHT, FPS = 160, 120, 10
SEGMENT_SECONDS = 1.0
KEYFRAME_SECONDS = 1.0
RECORD_SECONDS = 5.5

# Bit b of the frame number N as the block of columns [16b, 16b+16) in rows 0-15.
_NUMBER_LUMA = "if(lt(Y,16),if(mod(floor(N/pow(2,floor(X/16))),2),235,16),128)"


Contract = tuple[dict[str, Any], dict[str, str], list[str]]  # camera, environment, command


def _ffmpeg(tmp: Path) -> Contract:
    source = f"nullsrc=s={WIDTH}x{HEIGHT}:r={FPS},geq=lum='{_NUMBER_LUMA}':cb=128:cr=128"
    return (
        {
            "backend": "ffmpeg",
            "input": ["-f", "lavfi", "-i", source],  # a list: no shell-style unquoting
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


def frame_numbers(path: Path, width: int = WIDTH, height: int = HEIGHT) -> list[int]:
    """Decode a segment for real and read the frame number out of every frame."""
    raw = subprocess.run(
        # passthrough: one picture per stored frame (no duplicates filling timestamp gaps)
        ["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough",
         "-f", "rawvideo", "-pix_fmt", "gray", "-"],
        capture_output=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    size = width * height
    return [read_frame_number(raw[i : i + 16 * width], width) for i in range(0, len(raw), size)]


def record(tmp: Path, backend: str, seconds: float = RECORD_SECONDS) -> Recording:
    """Run ``livecam record cam0`` for ``seconds``, watching the buffer as a shipper would."""
    if backend not in CONTRACT_CAMERAS:
        pytest.fail(f"camera backend {backend!r} has no contract config: add to CONTRACT_CAMERAS")
    camera, env, command = CONTRACT_CAMERAS[backend](tmp)
    camera = {
        "size": [WIDTH, HEIGHT],
        "fps": FPS,
        "bitrate": "200k",
        "keyframe_seconds": f"{KEYFRAME_SECONDS}s",
        **camera,
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
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            for entry in sorted(ready.iterdir()) if ready.is_dir() else []:
                # The open directory, and the camera's snapshot (livecam.snapshot: a
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
    return rec


@pytest.fixture(scope="module", params=camera_backends())
def recording(request, tmp_path_factory) -> Recording:
    """One contract recording per registered backend, shared by the contract tests."""
    return record(tmp_path_factory.mktemp(request.param), request.param)
