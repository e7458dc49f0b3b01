"""Shared helpers for every test: real ffprobe, digests, config files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(os.environ.get("LIVECAM_BIN", REPO / ".venv" / "bin"))


def ffprobe(path: Path) -> dict[str, Any]:
    """Frames, duration and first timestamp of the video stream, decoded for real."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries",
         "stream=nb_read_frames,codec_name,width,height:format=duration,start_time",
         "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    data = json.loads(out)
    stream = data["streams"][0]
    return {
        "frames": int(stream["nb_read_frames"]),
        "codec": stream["codec_name"],
        "width": stream["width"],
        "height": stream["height"],
        "duration": float(data["format"]["duration"]),
        "start": float(data["format"].get("start_time", 0.0)),
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def command_lines() -> Iterator[tuple[int, str]]:
    """(pid, command line with spaces) of every process that can be read now."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        yield int(entry), raw.replace(b"\0", b" ").decode(errors="replace")


def livecam_cmd(*args: str) -> list[str]:
    return [str(VENV_BIN / "livecam"), *args]


@pytest.fixture
def run_livecam():
    """Run a livecam command to completion; returns CompletedProcess (text)."""

    def run(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            livecam_cmd(*args), capture_output=True, text=True, timeout=timeout, **kw
        )

    return run
