"""What ffprobe says about a segment file on the NAS: its duration and keyframes.

The index takes a segment's duration from the file, never from its name: a
salvaged or cut-short segment is shorter than the configured length.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

TIMEOUT = 60.0


class ProbeError(Exception):
    """ffprobe could not read the file (not a playable MP4, missing ffprobe, a hang)."""


def _ffprobe(args: list[str], path: Path) -> str:
    try:
        out = subprocess.run(
            ["ffprobe", "-v", "error", *args, "-of", "json", str(path)],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ProbeError(f"{path.name}: ffprobe failed: {exc}") from None
    if out.returncode != 0:
        detail = (out.stderr.strip().splitlines() or ["no message"])[-1]
        raise ProbeError(f"{path.name}: ffprobe: {detail}")
    return out.stdout


def duration(path: Path) -> float:
    """Seconds of video in ``path``, as its container states them."""
    data = json.loads(_ffprobe(["-show_entries", "format=duration"], path))
    try:
        return float(data["format"]["duration"])
    except (KeyError, TypeError, ValueError):
        raise ProbeError(f"{path.name}: ffprobe reports no duration") from None


def keyframes(path: Path) -> tuple[float, list[tuple[float, float]]]:
    """The video's first presentation time and each keyframe's (presentation, decoding)
    time, in seconds of the file's own timestamps (with B-frames, frames are shown a
    little later than they are decoded, so the first is shown after 0)."""
    data = json.loads(
        _ffprobe(
            ["-select_streams", "v:0", "-show_entries", "packet=pts_time,dts_time,flags"],
            path,
        )
    )
    times, keys = [], []
    for packet in data.get("packets", []):
        if packet.get("pts_time") in (None, "N/A"):
            continue
        times.append(float(packet["pts_time"]))
        if "K" in packet.get("flags", ""):
            dts = packet.get("dts_time")
            keys.append((times[-1], times[-1] if dts in (None, "N/A") else float(dts)))
    if not times:
        raise ProbeError(f"{path.name}: no video packets")
    return min(times), sorted(keys)
