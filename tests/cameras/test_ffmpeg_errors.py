"""The ffmpeg backend names a camera's failure by its cause, with real ffmpeg.

A real ``livecam record cam0`` runs against inputs that fail: one with no video
stream, and a file that ends. Its log must name the cause in the failure line,
and a file is recorded once, not again from the start on every restart.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import livecam_cmd, write_config


def make_clip(path: Path, seconds: int) -> Path:
    """A small H.264 file of ``seconds`` of test pattern: an input that ends."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10",
         "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", str(path)],
        check=True,
    )  # fmt: skip
    return path


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
    clip = make_clip(tmp_path / "clip.mp4", 3)
    # 3 s of file at its own pace, then 0.5 + 1 + 2 + 4 s of restarts: ample time to
    # record it two or three times more if the restarts replayed it.
    log, segments = run_recorder(tmp_path, {"input": ["-i", str(clip)]}, 12)
    lines = failures(log)
    assert len(lines) >= 2, log  # it ended, and the restarts that followed
    assert f"input ended: {clip} (ffmpeg read it to its end)" in lines[0]
    for line in lines[1:]:
        assert f"input ended: {clip} (ffmpeg read it to its end); recorded to its end already" in (
            line
        )
    assert "code 0" not in log and "no message" not in log
    # Recorded once: 3 s of 1 s segments (the last may be cut short), not again.
    assert 3 <= len(segments) <= 4, segments
    assert len(re.findall(r"starting with ffmpeg", log)) == 1  # started once, never again


def test_an_ended_input_stays_ended_across_a_reboot_until_the_camera_changes(tmp_path):
    """A real ``livecam run`` ships a file input to its end; restarted after a
    reboot (RAM buffer wiped) it records nothing of it again; with the camera's
    input changed in the config it records again."""
    clip = make_clip(tmp_path / "clip.mp4", 2)
    nas = tmp_path / "nas"
    nas.mkdir()
    camera = {"size": [160, 120], "fps": 10, "preset": "ultrafast", "input": ["-i", str(clip)]}

    def run(seconds: float, until: str | None = None) -> tuple[str, dict]:
        config = write_config(tmp_path / "livecam.yaml", {
            "segment_seconds": 1,
            "cameras": {"cam0": camera},
            "buffer": {"path": str(tmp_path / "buffer"), "max_bytes": "50M"},
            "spool": {"path": str(tmp_path / "spool"), "max_bytes": "50M", "min_free_bytes": 0},
            "transport": {"plugin": "local", "path": str(nas)},
            "plugin_dirs": [],
        })  # fmt: skip
        log = tmp_path / "run.log"
        log.write_bytes(b"")
        with open(log, "ab") as out:
            proc = subprocess.Popen(livecam_cmd("-c", str(config), "run"), stdout=out, stderr=out)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline and not (until and until in log.read_text()):
                time.sleep(0.2)
            status = json.loads(subprocess.run(
                livecam_cmd("-c", str(config), "status", "--json"),
                capture_output=True, text=True, timeout=30).stdout)  # fmt: skip
            time.sleep(1)  # let the shipper take what closed last
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=60) == 0
        return log.read_text(), status

    def shipped() -> list[Path]:
        return sorted(p for p in nas.rglob("cam0-*.mp4"))

    # First boot: the file is recorded and shipped to its end, once.
    log, status = run(30, until="recorded to its end already")
    first = shipped()
    assert f"input ended: {clip} (ffmpeg read it to its end)" in log, log
    assert 2 <= len(first) <= 3, (first, log)
    assert status["cameras"]["cam0"]["state"] == "ended", status
    assert (tmp_path / "spool" / ".livecam" / "ended-cam0.json").is_file()

    # A reboot: the RAM buffer is gone, the spool (and its note) stays.
    shutil.rmtree(tmp_path / "buffer")
    log, status = run(6)
    assert "recorded to its end already" in log, log
    assert "starting with ffmpeg" not in log, log  # no backend started at all
    assert status["cameras"]["cam0"]["state"] == "ended", status
    assert shipped() == first

    # The camera's input changed in the config: it records again.
    camera["input"] = ["-ss", "0", "-i", str(clip)]
    log, status = run(30, until="recorded to its end already")
    assert "starting with ffmpeg" in log, log
    again = [p for p in shipped() if p not in first]
    assert 2 <= len(again) <= 3, (again, log)


def test_a_pipe_whose_writer_ends_is_not_an_ended_input(tmp_path):
    """A FIFO's writer may come back (a feeder restarting): its end is a closed
    stream, restarted as usual and never noted as an input that ended for good."""
    clip = tmp_path / "clip.ts"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=10",
         "-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-f", "mpegts", str(clip)],
        check=True,
    )  # fmt: skip
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    config = write_config(tmp_path / "livecam.yaml", {
        "segment_seconds": 1,
        "cameras": {"cam0": {"size": [160, 120], "fps": 10, "preset": "ultrafast",
                             "input": ["-f", "mpegts", "-i", str(fifo)]}},
        "buffer": {"path": str(tmp_path / "buffer"), "max_bytes": "50M"},
        "spool": {"path": str(tmp_path / "spool"), "max_bytes": "50M", "min_free_bytes": 0},
        "transport": {"plugin": "nfs", "path": str(tmp_path / "nas")},
        "plugin_dirs": [],
    })  # fmt: skip
    log = tmp_path / "record.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(livecam_cmd("-c", str(config), "record", "cam0"),
                                stdout=out, stderr=out)  # fmt: skip
    try:
        with open(fifo, "wb") as writer:  # waits for the recorder's ffmpeg to open it
            writer.write(clip.read_bytes())
        deadline = time.monotonic() + 60
        while not failures(log.read_text()) and time.monotonic() < deadline:
            time.sleep(0.2)
        # The restarted ffmpeg opens the pipe again: a second writer comes and stays
        # until the stop (ffmpeg blocked opening a pipe with no writer ignores SIGTERM).
        writer_fd = -1
        while writer_fd < 0 and time.monotonic() < deadline:
            try:
                writer_fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.1)
        assert writer_fd >= 0, log.read_text()
        proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        os.close(writer_fd)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    lines = failures(text)
    assert lines and f"input ended: {fifo} closed the stream" in lines[0], text
    assert "recorded to its end already" not in text
    assert len(re.findall(r"starting with ffmpeg", text)) >= 2, text  # started again
    assert not list((tmp_path / "spool").rglob("ended-*.json"))
    assert sorted((tmp_path / "buffer" / "cam0").glob("*.mp4")), text  # the feed recorded


def test_a_camera_is_starting_until_its_first_frame_then_recording(tmp_path):
    """A camera whose device gives nothing yet is "starting", never "recording" (nor
    up in the metrics); it records from its first frames on."""
    fifo = tmp_path / "feed"
    os.mkfifo(fifo)
    config = write_config(tmp_path / "livecam.yaml", {
        "segment_seconds": 2,  # stall limit 2.5 x 2 + 5 s: no restart while it waits
        "cameras": {"cam0": {"size": [160, 120], "fps": 10, "preset": "ultrafast",
                             "realtime": False,
                             "input": ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-video_size",
                                       "160x120", "-framerate", "10", "-i", str(fifo)]}},
        "buffer": {"path": str(tmp_path / "buffer"), "max_bytes": "50M"},
        "spool": {"path": str(tmp_path / "spool"), "max_bytes": "50M", "min_free_bytes": 0},
        "transport": {"plugin": "nfs", "path": str(tmp_path / "nas")},
        "plugin_dirs": [],
    })  # fmt: skip

    def state() -> str | None:
        out = subprocess.run(livecam_cmd("-c", str(config), "status", "--json"),
                             capture_output=True, text=True, timeout=30)  # fmt: skip
        return json.loads(out.stdout)["cameras"]["cam0"]["state"] if out.returncode == 0 else None

    log = tmp_path / "record.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(livecam_cmd("-c", str(config), "record", "cam0"),
                                stdout=out, stderr=out)  # fmt: skip
    try:
        seen = set()
        deadline = time.monotonic() + 4  # within the stall limit (2.5 segments + 5 s)
        while time.monotonic() < deadline:
            seen.add(state())
            time.sleep(0.3)
        # (before the recorder wrote its first state: "never started")
        assert seen - {None, "never started"} == {"starting"}, (seen, log.read_text())
        frame = bytes(160 * 120 * 3 // 2)
        with open(fifo, "wb") as writer:  # the device starts giving frames
            deadline = time.monotonic() + 20
            while state() != "recording" and time.monotonic() < deadline:
                writer.write(frame * 5)
                writer.flush()
                time.sleep(0.1)
            assert state() == "recording", log.read_text()
            # The first closed segment can say "recording" before the watchdog's line.
            while "cam0: recording (its first" not in log.read_text():
                assert time.monotonic() < deadline, log.read_text()
                writer.write(frame)
                writer.flush()
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            for _ in range(20):
                with contextlib.suppress(BrokenPipeError):
                    writer.write(frame)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert text.index("cam0: starting with ffmpeg") < text.index("cam0: recording (its first")
