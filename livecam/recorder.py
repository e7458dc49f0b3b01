"""``livecam record CAMERA``: one camera's process. Turns the camera into ready segments.

It never touches the network. It runs the camera backend, names each closed
segment and renames it atomically into the RAM buffer, and restarts the backend
with backoff when it fails or stalls (no segment closed for a few lengths).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from livecam import tiers
from livecam.camera import CameraBackend, CameraError
from livecam.config import Config
from livecam.heartbeat import RecorderHeartbeat
from livecam.plugins import Plugins
from livecam.segment import Segment, SequenceCounter, segment_name
from livecam.state import read_json, write_json

log = logging.getLogger("livecam.recorder")

BACKOFF_MAX = 30.0


class BadSegment(CameraError):
    """The camera handed over a file that is not a usable MP4."""


class BufferSink:
    """Where a backend delivers segments: ``open_dir`` to write, ``close`` when done."""

    def __init__(self, recorder: Recorder):
        self.recorder = recorder
        self.open_dir = recorder.open_dir

    def close(self, path: Path, *, duration: float | None = None) -> Segment | None:
        return self.recorder.segment_done(Path(path), duration)

    def dropped_frames(self, count: int) -> None:
        self.recorder.frames_dropped(count)


class Recorder:
    """Runs one camera until SIGTERM; see the module doc."""

    def __init__(self, config: Config, plugins: Plugins, camera: str):
        self.config = config
        self.plugins = plugins
        self.camera = config.cameras[camera]
        self.buffer = tiers.build(config, plugins, "buffer")
        self.spool = tiers.build(config, plugins, "spool")
        self.ready_dir = self.buffer.camera_dir(camera)
        self.open_dir = self.ready_dir / ".open"
        self.state_file = self.buffer.state_dir / f"recorder-{camera}.json"
        self.stopping = threading.Event()
        self.backend: CameraBackend | None = None
        self.last_closed = time.monotonic()
        self.state = {
            "camera": camera,
            "backend": self.camera.backend,
            "pid": os.getpid(),
            "started": time.time(),
            "state": "starting",
            "segments": 0,
            "restarts": 0,
            "dropped_frames": 0,
            "bad_segments": 0,
            "salvaged": 0,
            "last_segment": None,
            # Kept across restarts of this process: "no segment for N seconds" stays true.
            "last_closed_at": read_json(self.state_file).get("last_closed_at"),
            "last_error": None,
        }
        self.seq: SequenceCounter | None = None
        self.heartbeat = RecorderHeartbeat(self.open_dir)  # systemd READY/WATCHDOG/STATUS

    # --- the sink side ------------------------------------------------------------

    def segment_done(
        self, path: Path, duration: float | None, end: datetime | None = None
    ) -> Segment | None:
        """Name a finished file and make it ready; None if it is not a usable MP4.

        ``end`` is when its last frame was written (default: now)."""
        try:
            _check_mp4(path)
        except BadSegment as exc:
            self.state["bad_segments"] += 1
            self.state["last_error"] = str(exc)
            log.error("camera %s: discarding %s: %s", self.camera.name, path.name, exc)
            path.unlink(missing_ok=True)
            self._save()
            return None
        assert self.seq is not None
        start = (end or datetime.now(UTC)) - timedelta(
            seconds=duration or self.config.segment_seconds
        )
        seq = self.seq.take()
        dest = self.ready_dir / segment_name(self.camera.name, start, seq)
        os.rename(path, dest)  # atomic: from here on the shipper sees it
        segment = Segment(self.camera.name, start.replace(microsecond=0), seq, dest)
        self.last_closed = time.monotonic()
        self.state.update(
            state="recording",
            segments=self.state["segments"] + 1,
            last_segment=dest.name,
            last_closed_at=time.time(),
        )
        self._save()
        log.info(
            "camera %s: closed %s (%d bytes)", self.camera.name, dest.name, dest.stat().st_size
        )
        self.plugins.segment_closed(segment=segment)
        return segment

    def frames_dropped(self, count: int) -> None:
        self.state["dropped_frames"] += count
        log.warning(
            "camera %s: %d frames dropped (%d in all)",
            self.camera.name,
            count,
            self.state["dropped_frames"],
        )
        self._save()

    # --- the loop -------------------------------------------------------------------

    def run(self) -> int:
        """Record until SIGTERM/SIGINT. Returns the process exit code."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        self._prepare()
        cls = self.plugins.cameras.get(self.camera.backend, f"cameras.{self.camera.name}.backend")
        failures = 0
        watchdog = threading.Thread(target=self._watch, daemon=True, name="watchdog")
        watchdog.start()
        while not self.stopping.is_set():
            self.backend = cls(
                self.camera.name, self.camera.options, segment_seconds=self.config.segment_seconds
            )
            started = time.monotonic()
            self.last_closed = started
            self.state["state"] = "recording"
            self._save()
            log.info("camera %s: recording with %s", self.camera.name, self.camera.backend)
            try:
                self.backend.record(BufferSink(self))
                if self.stopping.is_set():
                    break
                error: Exception = CameraError("backend returned without being stopped")
            except Exception as exc:
                error = exc
            self._salvage()
            if self.stopping.is_set():
                break
            # A run that produced segments for a while was healthy: start backoff afresh.
            if time.monotonic() - started > 3 * self.config.segment_seconds:
                failures = 0
            failures += 1
            self.state["restarts"] += 1
            self.state["state"] = "restarting"
            self.state["last_error"] = f"{type(error).__name__}: {error}"
            self._save()
            delay = min(BACKOFF_MAX, 0.5 * 2 ** (failures - 1))
            log.error(
                "camera %s failed: %s; restart %d in %.1fs",
                self.camera.name,
                error,
                self.state["restarts"],
                delay,
            )
            self.plugins.camera_failed(
                camera=self.camera.name, error=error, restarts=self.state["restarts"]
            )
            self.stopping.wait(delay)
        self.state["state"] = "stopped"
        self._save()
        log.info("camera %s: stopped", self.camera.name)
        return 0

    def stop(self) -> None:
        self.stopping.set()
        if self.backend is not None:
            self.backend.stop()

    def _prepare(self) -> None:
        self.open_dir.mkdir(parents=True, exist_ok=True)
        floor = 1 + max(
            (s.seq for t in (self.buffer, self.spool) for s in t.segments()
             if s.camera == self.camera.name),
            default=-1,
        )  # fmt: skip
        self.seq = SequenceCounter(self.spool.state_dir, self.camera.name, floor=floor)
        self._salvage()

    def _salvage(self) -> None:
        """Keep what can play of the segments a crashed camera or recorder left open.

        A fragmented MP4 (what the ffmpeg backend writes) plays up to its last
        complete fragment; anything else unfinished has no index and is removed.
        """
        for leftover in sorted(self.open_dir.iterdir()):
            probed = probe(leftover)
            if probed is None:
                log.warning("camera %s: removing unplayable unfinished %s",
                            self.camera.name, leftover.name)  # fmt: skip
                leftover.unlink(missing_ok=True)
                continue
            frames, duration = probed
            end = datetime.fromtimestamp(leftover.stat().st_mtime, UTC)
            segment = self.segment_done(leftover, duration, end)
            if segment is not None:
                self.state["salvaged"] += 1
                log.warning("camera %s: salvaged %d frames (%.1fs) of an unfinished segment as %s",
                            self.camera.name, frames, duration, segment.name)  # fmt: skip
        self._save()

    def stall_limit(self) -> float:
        """Seconds without a closed segment before the camera counts as stalled."""
        return 2.5 * self.config.segment_seconds + 5

    def _watch(self) -> None:
        while not self.stopping.wait(1.0):
            self.heartbeat.beat(self.state)  # READY at the first frame, WATCHDOG while frames come
            idle = time.monotonic() - self.last_closed
            if self.backend is not None and idle > self.stall_limit():
                log.error(
                    "camera %s stalled: no segment closed in %.0fs; restarting",
                    self.camera.name,
                    idle,
                )
                self.last_closed = time.monotonic()
                self.backend.kill()

    def _save(self) -> None:
        try:
            write_json(self.state_file, self.state)
        except OSError as exc:
            log.warning("camera %s: cannot write state: %s", self.camera.name, exc)


def _check_mp4(path: Path) -> None:
    try:
        with open(path, "rb") as f:
            head = f.read(12)
    except FileNotFoundError:
        raise BadSegment("the camera reported a segment file that does not exist") from None
    if len(head) < 12 or head[4:8] not in (b"ftyp", b"moov", b"mdat", b"free"):
        raise BadSegment(f"not an MP4 file ({len(head)} bytes read)")


def probe(path: Path) -> tuple[int, float] | None:
    """(frames, seconds) of the video in ``path`` by ffprobe's packet count; None if it
    does not play (or ffprobe is missing or hangs)."""
    try:
        out = subprocess.run(
            ["ffprobe", "-v", "error", "-count_packets", "-select_streams", "v:0",
             "-show_entries", "stream=nb_read_packets:format=duration", "-of", "json", str(path)],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        data = json.loads(out.stdout)
        frames = int(data["streams"][0]["nb_read_packets"])
        duration = float(data["format"]["duration"])
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, IndexError):
        return None
    return (frames, duration) if out.returncode == 0 and frames > 0 else None
