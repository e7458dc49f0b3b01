"""Storage tiers: the RAM buffer and the disk spool, each a directory of ready segments.

The directories are the queue. A segment is ready in a tier when it lies at
``<tier>/<camera>/<name>.mp4``, and a loss record at ``<tier>/_losses/loss-*.json``
(or, left by an older livecam, ``<tier>/livecam-losses/livecam-losses-*.mp4``: see
``livecam.storage.segment``); anything whose name starts with a dot (the
recorder's ``.open/``, a spill in progress, state) is not. A crash or a power cut
therefore loses no queue state: a restarted shipper simply scans the tiers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

from livecam.storage.files import fsync_dir, replacing
from livecam.storage.segment import Segment, oldest_first

log = logging.getLogger("livecam.tiers")

STATE_DIR = ".livecam"


class Tier:
    """A directory of per-camera segment folders with a size limit.

    ``max_bytes`` caps what the tier holds; ``min_free_bytes`` keeps that much
    free on its filesystem; ``high_water`` (a fraction of ``max_bytes``) is where
    the shipper starts moving segments out (spilling, for the buffer).
    """

    def __init__(
        self,
        role: str,
        path: Path,
        *,
        max_bytes: int,
        min_free_bytes: int = 0,
        high_water: float = 1.0,
    ):
        self.role = role
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.min_free_bytes = min_free_bytes
        self.high_water = high_water
        self._durable: set[str] = set()  # camera folders whose names this process made durable

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.role} {self.path}>"

    @property
    def state_dir(self) -> Path:
        return self.path / STATE_DIR

    def camera_dir(self, camera: str) -> Path:
        """Where ``camera``'s ready segments lie in this tier (it may not exist yet)."""
        return self.path / camera

    def make_camera_dir(self, camera: str, *, durable: bool = False) -> Path:
        """``camera_dir``, made if missing; never the tier itself (a vanished spool
        is an error, not a new folder on the root disk).

        ``durable``: its name in the tier survives a power cut too (fsync of the
        tier's folder), checked when this call made it and the first time this
        process asks, so a crash between a mkdir and its fsync is mended by the next
        start. A file fsynced into a folder whose own name is not durable is lost
        with the folder."""
        d = self.camera_dir(camera)
        try:
            d.mkdir()
        except FileExistsError:
            if not durable or camera in self._durable:
                return d
        if durable:
            fsync_dir(self.path)
            self._durable.add(camera)
        return d

    def holds(self, segment: Segment) -> bool:
        """True if ``segment`` lies in this tier."""
        return segment.path.parent.parent == self.path

    def segments(self) -> list[Segment]:
        """Ready segments of every camera, oldest first (``segment.oldest_first``)."""
        found = []
        try:
            cams = [d for d in os.scandir(self.path) if d.is_dir() and not d.name.startswith(".")]
        except OSError:  # vanished, or a failing disk: nothing here to ship
            return []
        for cam in cams:
            try:
                entries = list(os.scandir(cam.path))
            except OSError:
                continue
            for entry in entries:
                if entry.name.startswith(".") or not entry.is_file():
                    continue
                seg = Segment.from_path(Path(entry.path))
                if seg is not None:
                    found.append(seg)
        return oldest_first(found)

    def used_bytes(self) -> int:
        """Bytes of every file below the tier's camera folders, open files included."""
        total = 0
        for root, dirs, files in os.walk(self.path):  # a vanished tier walks as empty
            if root == str(self.path):
                dirs[:] = [d for d in dirs if d != STATE_DIR]
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    total += os.lstat(os.path.join(root, name)).st_size
        return total

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def bytes_to_free(self, incoming: int = 0) -> tuple[int, str]:
        """How many bytes must go so ``incoming`` more fit, and which limit says so."""
        over_max = self.used_bytes() + incoming - self.max_bytes
        under_floor = self.min_free_bytes - (self.free_bytes() - incoming)
        if under_floor > 0 and under_floor >= over_max:
            return under_floor, "min_free_bytes"
        if over_max > 0:
            return over_max, "max_bytes"
        return 0, ""

    def above_high_water(self) -> bool:
        return self.used_bytes() > self.high_water * self.max_bytes

    def accept(self, segment: Segment) -> Segment:
        """Copy ``segment`` in durably (copy, fsync file, rename, fsync dir); return the copy.

        The caller deletes the source afterwards. A crash at any point leaves
        either no copy (only a dot-named temp file) or a complete one; an OSError
        removes the temp file before it is raised.
        """
        dest_dir = self.make_camera_dir(segment.camera, durable=True)
        tmp = dest_dir / f".{segment.name}.part"
        dest = dest_dir / segment.name
        # No space, an I/O error: ``replacing`` leaves no partial behind.
        with open(segment.path, "rb") as src, replacing(dest, durable=True, temp=tmp) as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
            dst.flush()  # before the times: a later write would set them anew
            shutil.copystat(segment.path, tmp)  # the recording's times, not the copy's
        return segment.at(dest)

    def discard_partials(self) -> None:
        """Remove spill temp files left by a crash (never complete, never shipped)."""
        for cam in self.path.glob("*/"):
            for tmp in cam.glob(".*.part"):
                log.info("removing partial copy %s left by a crash", tmp)
                try:
                    tmp.unlink(missing_ok=True)
                except OSError as exc:  # a read-only spool: the copy stays, never shipped
                    log.error("cannot remove %s: %s", tmp, exc)
