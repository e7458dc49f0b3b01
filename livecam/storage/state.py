"""Small JSON state files that ``livecam status`` reads: their typed contents and writes.

Runtime state lives in the RAM buffer's state directory, so a healthy node
writes nothing to its SD card; the few facts that must survive a reboot (the
eviction count, sequence reservations) live in the spool's.

A process keeps its state in a dataclass inside a ``StateFile``. Any thread may
change it (under the file's lock); the file itself has one writer, the thread
that calls ``save``, so a write never races another write.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from livecam.storage.files import write_json


def pid_alive(pid: object) -> bool:
    """True if ``pid`` names a running (not zombie) process. Asked with signal 0
    first: in the units' sandbox (``ProtectProc=invisible``) another unit's /proc
    entry is hidden, and a hidden process is alive."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # hidden: it exists, as the signal said
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")  # a zombie is dead


S = TypeVar("S")


class StateFile(Generic[S]):
    """A dataclass ``state`` and the file it is saved to. See the module doc."""

    def __init__(self, path: Path, state: S):
        self.path = path
        self._state = state
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._dirty = True

    @contextmanager
    def edit(self) -> Iterator[S]:
        """Change the state (thread-safe); the next ``save`` writes it."""
        with self._changed:
            yield self._state
            self._dirty = True
            self._changed.notify_all()

    def as_dict(self) -> dict[str, Any]:
        """The state as plain data, as it is written to the file."""
        with self._lock:
            return asdict(self._state)  # type: ignore[call-overload, no-any-return]

    @property
    def current(self) -> S:
        """The live state object (read it; change it only through ``edit``)."""
        return self._state

    def wait_changed(self, timeout: float) -> bool:
        """Wait until the state changed since the last save; False on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._dirty, timeout=timeout)

    def save(self, *, force: bool = False) -> None:
        """Write the file if the state changed (or ``force``). Call from one thread only."""
        with self._lock:
            if not (self._dirty or force):
                return
            data = asdict(self._state)  # type: ignore[call-overload]
            self._dirty = False
        self.path.parent.mkdir(parents=True, exist_ok=True)  # RAM: the buffer's own folder
        write_json(self.path, data)


@dataclass
class LastSuccess:
    time: float
    segment: str
    remote: str
    seconds: float
    lag: float  # seconds from the segment's end to its publish; never negative


@dataclass
class LastError:
    time: float
    segment: str
    message: str
    permanent: bool


@dataclass
class ClockStep:
    """A jump of the wall clock between two segments of one camera."""

    time: float
    seconds: float  # how far the clock jumped: negative is a step back
    segment: str  # the first segment named after the step


@dataclass
class ShipperState:
    """``shipper.json``: what the shipper did since it started."""

    pid: int
    started: float
    transport: str
    state: str = "starting"  # starting, shipping, retrying, alarm, stopped
    published: int = 0
    published_bytes: int = 0
    already_there: int = 0
    records_published: int = 0  # loss records (not segments: counted apart)
    spilled: int = 0
    spilled_bytes: int = 0
    failures: int = 0
    failures_by_kind: dict[str, int] = field(default_factory=dict)  # transient, permanent, conflict
    last_success: LastSuccess | None = None
    last_error: LastError | None = None
    spool_failed: str | None = None  # why the spool cannot be written, while it cannot
    longest_housekeeping: float = 0.0  # seconds, the longest housekeeping pass so far


@dataclass
class RecorderState:
    """``recorder-<camera>.json``: what one camera's recorder did since it started."""

    camera: str
    backend: str
    pid: int
    started: float
    state: str = "starting"  # starting, recording, restarting, ended, stopping, stopped
    segments: int = 0
    restarts: int = 0
    dropped_frames: int = 0
    bad_segments: int = 0
    salvaged: int = 0
    clock_steps: int = 0
    last_clock_step: ClockStep | None = None
    spool_failed: str | None = None  # why sequence numbers are reserved in RAM, while they are
    last_segment: str | None = None
    last_closed_at: float | None = None
    last_error: str | None = None
