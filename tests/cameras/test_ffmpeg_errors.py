"""The ffmpeg backend names a camera's failure by its cause, with real ffmpeg.

A real ``livecam record cam0`` runs against inputs that fail: one with no video
stream, and a file that ends. Its log must name the cause in the failure line,
and a file is recorded once, not again from the start on every restart.
"""

from __future__ import annotations

import re
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import livecam_cmd, write_config


def run_recorder(tmp: Path, camera: dict, seconds: float) -> tuple[str, list[Path]]:
    """``livecam record cam0`` for ``seconds``; (its log, the ready segments)."""
    config = write_config(
        tmp / "livecam.yaml",
        {
            "segment_seconds": 1,
            "cameras": {"cam0": {"size": [160, 120], "fps": 10, "preset": "ultrafast", **camera}},
            "buffer": {"path": str(tmp / "buffer"), "max_bytes": "50M"},
            "spool": {"path": str(tmp / "spool"), "max_bytes": "50M", "min_free_bytes": 0},
            "transport": {"plugin": "nfs", "path": str(tmp / "nas")},
            "plugin_dirs": [],
        },
    )
    log = tmp / "record.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            livecam_cmd("-c", str(config), "record", "cam0"), stdout=out, stderr=out
        )
        time.sleep(seconds)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    return log.read_text(), sorted((tmp / "buffer" / "cam0").glob("*.mp4"))


def failures(log: str) -> list[str]:
    return [line for line in log.splitlines() if "camera cam0 failed:" in line]


def test_an_input_without_video_names_the_missing_stream(tmp_path):
    audio = tmp_path / "audio.m4a"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "sine=d=2", str(audio)], check=True
    )
    log, segments = run_recorder(tmp_path, {"input": ["-i", str(audio)]}, 3)
    lines = failures(log)
    assert lines, log  # the camera failed (and was restarted)
    assert not segments
    for line in lines:
        assert "the input has no video stream (Stream map '0:v:0' matches no streams)" in line
        assert "trailing '?'" not in line


def test_a_file_input_that_ends_is_reported_ended_and_not_recorded_again(tmp_path):
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10",
         "-t", "3", "-c:v", "libx264", "-preset", "ultrafast", str(clip)],
        check=True,
    )  # fmt: skip
    # 3 s of file at its own pace, then 0.5 + 1 + 2 + 4 s of restarts: ample time to
    # record it two or three times more if the restarts replayed it.
    log, segments = run_recorder(tmp_path, {"input": ["-i", str(clip)]}, 12)
    lines = failures(log)
    assert len(lines) >= 2, log  # it ended, and the restarts that followed
    assert f"input ended: {clip} (ffmpeg read it to its end)" in lines[0]
    for line in lines[1:]:
        assert f"input ended: {clip} was recorded to its end already" in line
    assert "code 0" not in log and "no message" not in log
    # Recorded once: 3 s of 1 s segments (the last may be cut short), not again.
    assert 3 <= len(segments) <= 4, segments
    assert len(re.findall(r"recording with ffmpeg", log)) == len(lines)  # each start ended
