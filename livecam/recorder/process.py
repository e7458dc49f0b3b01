"""``livecam record CAMERA``: one camera's process. Turns the camera into ready segments.

It never touches the network. It runs the camera backend, hands it a
``BufferSink`` (``livecam.recorder.sink``) that makes each closed file a ready segment,
and restarts the backend with backoff when it fails or stalls (no segment closed
for a few lengths). A camera whose input ended is not started again while it is
configured the same (``livecam.recorder.ended``). Its state file has one writer,
the ``state-writer`` thread; the backend's threads only change the state in memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time

from livecam import build
from livecam.camera import CameraBackend, CameraError, InputEnded
from livecam.config import Config
from livecam.ops.heartbeat import RecorderHeartbeat
from livecam.ops.lifecycle import Backoff, stop_on_signals
from livecam.pluginhost.manager import Plugins
from livecam.recorder.ended import EndedInputs
from livecam.recorder.sequence import SequenceCounter
from livecam.recorder.sink import BufferSink
from livecam.storage.files import read_json
from livecam.storage.losses import LossWriter, mark_clean_stop, note_start
from livecam.storage.state import RecorderState, StateFile

log = logging.getLogger("livecam.recorder")


class Recorder:
    """Runs one camera until SIGTERM; see the module doc."""

    def __init__(self, config: Config, plugins: Plugins, camera: str):
        self.config = config
        self.plugins = plugins
        self.camera = config.cameras[camera]
        self.disk = build.disk(config, plugins)
        self.buffer, self.spool = self.disk.buffer, self.disk.spool
        self.backend_cls = plugins.cameras.get(self.camera.backend, f"cameras.{camera}.backend")
        self.stopping = threading.Event()
        self._written = threading.Event()  # the state writer's last save is due
        self._noting: threading.Thread | None = None  # writes "stopping" (see stop)
        self.backend: CameraBackend | None = None
        path = self.disk.recorder_state(camera)
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
        self.losses = LossWriter(self.disk, config.site, config.node)
        self.ended = EndedInputs(self.camera, self.disk)

    def run(self) -> int:
        """Record until SIGTERM/SIGINT. Returns the process exit code."""
        stop_on_signals(self.stop)
        if self.camera.test_pattern:  # asked for by name; still never to pass for footage
            log.warning(
                "camera %s: records a TEST PATTERN (%s), not a camera",
                self.camera.name,
                self.camera.test_pattern,
            )
        sink = self.sink = self._prepare()
        sink.salvage()
        self._save()
        writer = threading.Thread(target=self._write_state, daemon=True, name="state-writer")
        writer.start()
        watchdog = threading.Thread(target=self._watch, args=(sink,), daemon=True, name="watchdog")
        watchdog.start()
        # A run that produced segments for a while was healthy: backoff starts afresh.
        backoff = Backoff(healthy_after=3 * self.config.segment_seconds)
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
            delay = backoff.failed(time.monotonic() - started)
            self._failed(error, delay)
            self.stopping.wait(delay)
        self.stopping.set()
        self._written.set()
        with self.state.edit():  # wakes the writer: it saves what is new and ends
            pass
        writer.join()
        if self._noting is not None:
            self._noting.join()  # its "stopping" never lands after "stopped"
        self._release(sink)
        mark_clean_stop(self.losses, self.camera.name, self.state.current.last_segment)
        # Last: a stopping recorder's last segment and records are all written now (the
        # shipper waits for this process to end: livecam.shipper.stop).
        with self.state.edit() as st:
            st.state = "stopped"
        self._save()
        log.info("camera %s: stopped", self.camera.name)
        return 0

    def _release(self, sink: BufferSink) -> None:
        """Give back the numbers reserved and not used: the next start continues on."""
        try:
            sink.seq.release()
        except OSError as exc:  # the next start skips the rest of the block: no harm
            log.error("camera %s: cannot give back its unused numbers: %s", self.camera.name, exc)

    def _failed(self, error: Exception, delay: float) -> None:
        """The camera failed with ``error`` and restarts in ``delay`` seconds: state,
        log, loss record, event."""
        with self.state.edit() as st:
            st.restarts += 1
            st.state = "ended" if isinstance(error, InputEnded) else "restarting"
            st.last_error = f"{type(error).__name__}: {error}"
            restarts = st.restarts
        log.error(
            "camera %s failed: %s; restart %d in %.1fs", self.camera.name, error, restarts, delay
        )
        self.losses.record(
            "camera_down",
            self.camera.name,
            [],
            f"{error}; restart in {delay:.1f}s",
            restarts=restarts,
            delay=delay,
        )
        self.plugins.camera_failed(camera=self.camera.name, error=error, restarts=restarts)

    def _record(self, sink: BufferSink) -> Exception | None:
        """Run the backend until it fails (the error) or is stopped (None)."""
        assert self.backend is not None
        if ended := self.ended.ended():
            return InputEnded(
                f"{ended}; recorded to its end already "
                f"(change cameras.{self.camera.name} to record it again)"
            )
        with self.state.edit() as st:
            st.state = "starting"  # "recording" from its first frame on (_watch)
        log.info("camera %s: starting with %s", self.camera.name, self.camera.backend)
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
        """SIGTERM/SIGINT: finish the open segment and end. The state says ``stopping``
        at once: a shipper stopping at the same time waits for this recorder."""
        self.stopping.set()
        # From a thread: this handler may have interrupted a state edit of this thread.
        self._noting = threading.Thread(target=self._note_stopping, name="stopping", daemon=True)
        self._noting.start()
        if self.backend is not None:
            self.backend.stop()

    def _prepare(self) -> BufferSink:
        self.buffer.path.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # not parents: a vanished spool mount stays gone
            self.spool.path.mkdir(exist_ok=True)
        ready_dir = self.buffer.make_camera_dir(self.camera.name)
        self.disk.open_dir(self.camera.name).mkdir(exist_ok=True)
        mine = [
            s.seq
            for t in (self.buffer, self.spool)
            for s in t.segments()
            if s.camera == self.camera.name
        ]
        seq = SequenceCounter(self.disk, self.camera.name, floor=1 + max(mine, default=-1))
        note_start(
            self.losses, self.camera.name, previous_limit=seq.previous_limit, starts_at=seq.first
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
            # READY at the first frame, WATCHDOG while frames come (no frame: no ping).
            if heartbeat.frames_came(self.state.current.segments):
                self._frames_come()
                heartbeat.beat(self.state.as_dict())
            idle = time.monotonic() - sink.last_closed
            if self.backend is not None and idle > self.stall_limit():
                log.error(
                    "camera %s stalled: no segment closed in %.0fs; restarting",
                    self.camera.name,
                    idle,
                )
                sink.last_closed = time.monotonic()
                self.backend.kill()

    def _frames_come(self) -> None:
        """Frames arrive: a camera that was starting records now."""
        with self.state.edit() as st:
            first = st.state == "starting"
            if first:
                st.state = "recording"
        if first:
            log.info("camera %s: recording (its first frames arrived)", self.camera.name)

    def _note_stopping(self) -> None:
        with self.state.edit() as st:
            st.state = "stopping"

    def _write_state(self) -> None:
        """The state file's writer while the camera runs and stops: saves each change
        promptly (``stopping`` too)."""
        while not self._written.is_set():
            if self.state.wait_changed(timeout=1.0):
                self._save()

    def _save(self) -> None:
        try:
            self.state.save()
        except OSError as exc:
            log.warning("camera %s: cannot write state: %s", self.camera.name, exc)
