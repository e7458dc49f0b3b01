"""Per-camera sequence numbers that survive restarts and power cuts.

Numbers are reserved on disk in blocks (``<spool>/.livecam/seq-<cam>`` holds the
limit), so a camera writes the reservation once per ``block`` segments (every 8
hours at 30 s) instead of once per segment: the SD card is spared. Every
reservation is mirrored in the RAM buffer's state directory, which lives as long
as the boot.

- A clean stop gives back the rest of its block (``release``: the limit becomes
  the next number), so the next start continues without a jump.
- A start after a crash (the RAM copy still there) begins at the limit: the rest
  of the crashed run's block (at most ``block`` numbers) is skipped, since the
  node cannot tell which of them that run used.
- When the spool cannot be written (a failed SD card goes read-only), the
  reservation is kept in RAM only and numbers continue from the spool's limit
  upward. So a start that finds no RAM copy (after a reboot) but a spool limit
  begins ``ram_blocks`` blocks above it: what RAM-only runs of the last boot may
  have used (up to 100 000 segments, 35 days at 30 s) is never handed out again.
  The spool cannot say whether such a run happened (it could not be written).

Numbers stay unique and increasing; gaps are harmless (the NAS audit reports each
as one range, explained by the start's ``restart`` record).
"""

from __future__ import annotations

import time
from pathlib import Path

from livecam.storage.layout import NodeDisk

SPOOL_RETRY = 30.0  # seconds between attempts to reserve on a failed spool again


class SequenceCounter:
    """One camera's sequence numbers; see the module doc."""

    def __init__(
        self,
        disk: NodeDisk,
        camera: str,
        *,
        floor: int = 0,
        block: int = 1000,
        ram_blocks: int = 100,
    ):
        self.disk = disk
        self.file, self.fallback = disk.sequence_files(camera)
        self.block = block
        #: Why the spool could not take the reservation, while it cannot.
        self.spool_error: str | None = None
        self._retry_at = time.monotonic() + SPOOL_RETRY
        spooled, in_ram = _read_limit(self.file), _read_limit(self.fallback)
        #: The reservation's end before this start (None: a first start, or a reinstall).
        self.previous_limit = max(spooled, in_ram) or None
        # No RAM copy (a reboot, a wiped buffer) but a spool limit: RAM-only runs of the
        # last boot may have used numbers above it. With the copy, all it reserved is below.
        rebooted = spooled + ram_blocks * block if spooled and not in_ram else 0
        self._next = max(rebooted, spooled, in_ram, floor)
        self._reserve()
        if self.spool_error is not None:  # RAM-only: continue right above the spool's limit
            self._next = max(spooled, in_ram, floor)
            self._reserve()
        #: The first number this run hands out.
        self.first = self._next

    def _reserve(self) -> None:
        self._limit = self._next + self.block
        self._store()

    def _store(self) -> None:
        """Write the limit to the spool, and to RAM whatever the spool did (a restart
        in this boot continues from there). Raises OSError when RAM refuses too."""
        placed = self.disk.write_state(self.file.name, f"{self._limit}\n", mirror=True)
        if placed.spool_error is None:
            self.spool_error = None
        else:
            why = placed.spool_error
            self.spool_error = f"cannot reserve sequence numbers in {self.file}: {why}"
        if "buffer" in placed.errors:
            raise placed.errors["buffer"]

    def release(self) -> None:
        """Give back the numbers reserved but not handed out (at a clean stop, once no
        segment can close any more): the next start continues from here. Raises
        OSError when RAM refuses the write (the old, higher limit then stays there)."""
        self._limit = self._next
        self._store()

    def take(self) -> int:
        if self._next >= self._limit:
            self._reserve()
        elif self.spool_error is not None and time.monotonic() >= self._retry_at:
            # Put the RAM reservation back on the spool once it can be written again.
            self._retry_at = time.monotonic() + SPOOL_RETRY
            self._store()
        value = self._next
        self._next += 1
        return value


def _read_limit(path: Path) -> int:
    """A reservation file's limit; 0 when missing, unreadable or torn by a crash."""
    try:
        return int(path.read_text().strip() or 0)
    except (OSError, ValueError):
        return 0
