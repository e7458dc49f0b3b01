"""The node's disk, owned in one place: the two tiers, where every state file and
record lies, and the one rule for what must outlive a reboot.

::

    <buffer>/                      RAM (tmpfs): a healthy node writes only here
        <camera>/<segment>.mp4     ready segments (``livecam.storage.tiers``)
        <camera>/.open/            the recorder's unfinished files
        <camera>/.snapshot.jpg     the camera's newest frame (``livecam.storage.snapshot``)
        .livecam/shipper.json      runtime state: the shipper's and each
        .livecam/recorder-<camera>.json   recorder's (``livecam.storage.state``)
        _losses/                   loss records while the spool cannot take them
    <spool>/                       disk: spilled segments, and what a reboot must not lose
        <camera>/<segment>.mp4
        .livecam/seq-<camera>      sequence reservations, evictions.json, ended-<camera>.json,
                                   stopped-<camera>.json (each mirrored or kept in RAM
                                   while the spool fails: ``durably``)
        _losses/                   loss records (``livecam.storage.losses``); a node
                                   upgraded may hold old-named ones in livecam-losses/

Readers (``livecam status``, the web page) and writers (the recorder, the shipper)
find every path here; nothing else spells a state file's name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from livecam.storage.files import atomic_write, fsync_dir, read_json
from livecam.storage.segment import LOSSES as LOSSES  # the loss records' folder in each tier
from livecam.storage.snapshot import NAME as SNAPSHOT
from livecam.storage.tiers import STATE_DIR, Tier

T = TypeVar("T")

OPEN = ".open"


@dataclass(frozen=True)
class Placed(Generic[T]):
    """Where ``NodeDisk.durably`` put something: ``value`` as the writer returned it
    in ``tier`` (the first tier that took it; None: none did), and why each tier
    that refused did (``errors``, by role)."""

    value: T | None
    tier: str | None
    errors: dict[str, OSError] = field(default_factory=dict)

    @property
    def spool_error(self) -> OSError | None:
        return self.errors.get("spool")


class NodeDisk:
    """The RAM buffer and the disk spool of one node, and every path on them."""

    def __init__(self, buffer: Tier, spool: Tier):
        self.buffer = buffer
        self.spool = spool

    def __repr__(self) -> str:
        return f"<NodeDisk buffer={self.buffer.path} spool={self.spool.path}>"

    # --- runtime state: RAM ----------------------------------------------------------

    def recorder_state(self, camera: str) -> Path:
        return self.buffer.state_dir / f"recorder-{camera}.json"

    def shipper_state(self) -> Path:
        return self.buffer.state_dir / "shipper.json"

    def open_dir(self, camera: str) -> Path:
        """Where ``camera``'s backend writes unfinished files (never shipped)."""
        return self.buffer.camera_dir(camera) / OPEN

    def snapshot(self, camera: str) -> Path:
        return self.buffer.camera_dir(camera) / SNAPSHOT

    # --- what a reboot must not lose: the spool, else RAM -------------------------

    def sequence_files(self, camera: str) -> tuple[Path, Path]:
        """``camera``'s sequence reservation: (on the spool, its copy in RAM)."""
        return self._both(f"seq-{camera}")

    def ledger_files(self) -> tuple[Path, Path]:
        """The eviction ledger: (on the spool, its copy in RAM)."""
        return self._both("evictions.json")

    def ended_notes(self, camera: str) -> tuple[Path, Path]:
        """Where a note that ``camera``'s input ended lies: (spool, RAM)."""
        return self._both(f"ended-{camera}.json")

    def stop_marker(self, camera: str) -> Path:
        """The note that ``camera``'s recorder stopped cleanly (the spool only: only
        a reboot can wipe the fact, and a RAM copy would outlive nothing)."""
        return self.spool.state_dir / f"stopped-{camera}.json"

    def ledger(self) -> dict[str, Any]:
        """The eviction ledger with the highest count of its copies ({} if none)."""
        records = [read_json(p) for p in self.ledger_files()]
        return max(records, key=lambda r: int(r.get("count", 0)))

    def _both(self, name: str) -> tuple[Path, Path]:
        return self.spool.state_dir / name, self.buffer.state_dir / name

    def durably(
        self, folder: str, write: Callable[[Path], T], *, mirror: bool = False
    ) -> Placed[T]:
        """The one rule for what must outlive a reboot yet never stop the node:
        ``write(directory)`` into the spool's ``folder`` (``write`` fsyncs what it
        writes), and when the spool refuses (an OSError: a failed SD card, a
        vanished disk) into the RAM buffer's, which keeps it while the node runs.
        With ``mirror`` into the buffer's too, whatever the spool did. Never raises
        an OSError: the answer says which tier took it and why the others did not.

        ``folder`` is made when missing, never the tier itself (a vanished spool
        mount must not reappear on the root disk), and its name made durable (fsync
        of the tier's folder, every time: these writes are rare, and a crash between
        an earlier mkdir and its fsync is mended): what ``write`` fsyncs into a
        folder whose own name is not durable is lost with the folder."""
        value: T | None = None
        took: str | None = None
        errors: dict[str, OSError] = {}
        for tier in (self.spool, self.buffer):
            if took is not None and not mirror:
                break
            directory = tier.path / folder
            try:
                directory.mkdir(exist_ok=True)
                fsync_dir(tier.path)
                result = write(directory)
            except OSError as exc:
                errors[tier.role] = exc
                continue
            if took is None:
                value, took = result, tier.role
        return Placed(value, took, errors)

    def write_state(self, name: str, data: str, *, mirror: bool = False) -> Placed[Path]:
        """Replace the state file ``name`` (one of the names above) with ``data``,
        fsynced, by the rule of ``durably``; the answer's value is its path."""

        def write(directory: Path) -> Path:
            atomic_write(directory / name, data, durable=True)
            return directory / name

        return self.durably(STATE_DIR, write, mirror=mirror)
