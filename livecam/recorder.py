"""``livecam record CAMERA``: one camera's process. Turns the camera into ready segments.

It never touches the network. It runs the camera backend, hands it a
``BufferSink`` (``livecam.sink``) that makes each closed file a ready segment,
and restarts the backend with backoff when it fails or stalls (no segment closed
for a few lengths). A camera whose input ended is not started again while it is
configured the same (``livecam.ended``). Its state file has one writer, the ``state-writer`` thread;
the backend's threads only change the state in memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time

from livecam import build
from livecam.camera import CameraBackend, CameraError, InputEnded
from livecam.config import Config
from livecam.ended import EndedInputs
from livecam.heartbeat import RecorderHeartbeat
from livecam.losses import LossWriter, mark_clean_stop, note_start
from livecam.plugins import Plugins
from livecam.segment import SequenceCounter
from livecam.sink import BufferSink
from livecam.state import RecorderState, StateFile, read_json

log = logging.getLogger("livecam.recorder")

BACKOFF_MAX = 30.0


class Recorder:
    """Runs one camera until SIGTERM; see the module doc."""

    def __init__(self, config: Config, plugins: Plugins, camera: str):
        self.config = config
        self.plugins = plugins
        self.camera = config.cameras[camera]
        self.buffer = build.tier(config, plugins, "buffer")
        self.spool = build.tier(config, plugins, "spool")
        self.backend_cls = plugins.cameras.get(self.camera.backend, f"cameras.{camera}.backend")
        self.stopping = threading.Event()
        self.backend: CameraBackend | None = None
        path = self.buffer.state_dir / f"recorder-{camera}.json"
        self.state = StateFile(
            path,
            RecorderState(
                camera=camera,
                backend=self.camera.backend,
                pid=os.getpid(),
                started=time.time(),
                # Kept across restarts of this process: "no segment for N seconds" stays true.
                last_closed_at=read_json(path).get("last_closed_at"),
            ),
        )
        self.sink: BufferSink | None = None
        self.losses = LossWriter(self.spool.path, config.site, config.node, self.buffer.path)
        self.ended = EndedInputs(self.camera, self.spool.state_dir, self.buffer.state_dir)

    def run(self) -> int:
        """Record until SIGTERM/SIGINT. Returns the process exit code."""
        signal.signal(signal.SIGTERM, lambda *_: self.stop())
        signal.signal(signal.SIGINT, lambda *_: self.stop())
        sink = self.sink = self._prepare()
        sink.salvage()
        self._save()
        writer = threading.Thread(target=self._write_state, daemon=True, name="state-writer")
        writer.start()
        watchdog = threading.Thread(target=self._watch, args=(sink,), daemon=True, name="watchdog")
        watchdog.start()
        failures = 0
        while not self.stopping.is_set():
            self.backend = self.backend_cls(
                self.camera.name, self.camera.options, segment_seconds=self.config.segment_seconds
            )
            started = time.monotonic()
            sink.last_closed = started
            error = self._record(sink)
            if error is None:
                break
            sink.salvage()
            if self.stopping.is_set():
                break
            # A run that produced segments for a while was healthy: start backoff afresh.
            if time.monotonic() - started > 3 * self.config.segment_seconds:
                failures = 0
            failures += 1
            with self.state.edit() as st:
                st.restarts += 1
                st.state = "ended" if isinstance(error, InputEnded) else "restarting"
                st.last_error = f"{type(error).__name__}: {error}"
                restarts = st.restarts
            delay = min(BACKOFF_MAX, 0.5 * 2 ** (failures - 1))
            log.error(
                "camera %s failed: %s; restart %d in %.1fs",
                self.camera.name,
                error,
                restarts,
                delay,
            )
            self.losses.record("camera_down", self.camera.name, [],
                               f"{error}; restart in {delay:.1f}s", restarts=restarts,
                               delay=delay)  # fmt: skip
            self.plugins.camera_failed(camera=self.camera.name, error=error, restarts=restarts)
            self.stopping.wait(delay)
        self.stopping.set()
        writer.join()
        with self.state.edit() as st:
            st.state = "stopped"
        self._save()
        mark_clean_stop(self.spool.state_dir, self.camera.name, self.state.current.last_segment)
        log.info("camera %s: stopped", self.camera.name)
        return 0

    def _record(self, sink: BufferSink) -> Exception | None:
        """Run the backend until it fails (the error) or is stopped (None)."""
        assert self.backend is not None
        if ended := self.ended.ended():
            return InputEnded(
                f"{ended}; recorded to its end already "
                f"(change cameras.{self.camera.name} to record it again)"
            )
        with self.state.edit() as st:
            st.state = "recording"
        log.info("camera %s: recording with %s", self.camera.name, self.camera.backend)
        try:
            self.backend.record(sink)
        except InputEnded as exc:
            try:
                self.ended.mark(str(exc))
            except OSError as why:
                log.error("camera %s: cannot note that its input ended: %s", self.camera.name, why)
            return exc
        except Exception as exc:
            return exc
        if self.stopping.is_set():
            return None
        return CameraError("backend returned without being stopped")

    def stop(self) -> None:
        self.stopping.set()
        if self.backend is not None:
            self.backend.stop()

    def _prepare(self) -> BufferSink:
        self.buffer.path.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # not parents: a vanished spool mount stays gone
            self.spool.path.mkdir(exist_ok=True)
        ready_dir = self.buffer.camera_dir(self.camera.name)
        (ready_dir / ".open").mkdir(parents=True, exist_ok=True)
        mine = [
            s.seq
            for t in (self.buffer, self.spool)
            for s in t.segments()
            if s.camera == self.camera.name
        ]
        seq = SequenceCounter(
            self.spool.state_dir,
            self.camera.name,
            fallback_dir=self.buffer.state_dir,
            floor=1 + max(mine, default=-1),
        )
        note_start(
            self.spool.path,
            self.spool.state_dir,
            self.camera.name,
            previous_limit=seq.previous_limit,
            starts_at=seq.first,
            fallback=self.buffer.path,
            site=self.config.site,
            node=self.config.node,
        )
        if seq.spool_error:
            log.error(
                "SPOOL FAILED: camera %s: %s; reserving in RAM (%s) and recording on",
                self.camera.name,
                seq.spool_error,
                self.buffer.state_dir,
            )
        with self.state.edit() as st:
            st.spool_failed = seq.spool_error
        return BufferSink(
            self.camera.name,
            self.backend_cls,
            ready_dir=ready_dir,
            seq=seq,
            segment_seconds=self.config.segment_seconds,
            plugins=self.plugins,
            state=self.state,
            losses=self.losses,
        )

    def stall_limit(self) -> float:
        """Seconds without a closed segment before the camera counts as stalled."""
        return 2.5 * self.config.segment_seconds + 5

    def _watch(self, sink: BufferSink) -> None:
        heartbeat = RecorderHeartbeat(sink.open_dir)  # systemd READY/WATCHDOG/STATUS
        while not self.stopping.wait(1.0):
            heartbeat.beat(
                self.state.snapshot()
            )  # READY at the first frame, WATCHDOG while frames come
            idle = time.monotonic() - sink.last_closed
            if self.backend is not None and idle > self.stall_limit():
                log.error(
                    "camera %s stalled: no segment closed in %.0fs; restarting",
                    self.camera.name,
                    idle,
                )
                sink.last_closed = time.monotonic()
                self.backend.kill()

    def _write_state(self) -> None:
        """The state file's writer while the camera runs: saves each change promptly."""
        while not self.stopping.is_set():
            if self.state.wait_changed(timeout=1.0):
                self._save()

    def _save(self) -> None:
        try:
            self.state.save()
        except OSError as exc:
            log.warning("camera %s: cannot write state: %s", self.camera.name, exc)
