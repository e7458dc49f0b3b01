"""``livecam nas index``: an SQLite index of every segment and loss record below the root.

Incremental by directory: a directory whose mtime is what the index saw last
time has the same entries (segments are written once, under a temp name, then
renamed into place), so only changed directories are listed again and only new
or changed files are probed. A directory's mtime is read *before* it is listed:
a file that lands while the index runs changes it again, and the next run looks.
Each directory is committed on its own, so an interrupted run keeps its work.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from livecam.nas import probe, records, tree
from livecam.nas.config import NasConfig
from livecam.storage.files import file_digest

log = logging.getLogger("livecam.nas.index")

SCHEMA = """
CREATE TABLE IF NOT EXISTS dirs (path TEXT PRIMARY KEY, parent TEXT, mtime_ns INTEGER);
CREATE TABLE IF NOT EXISTS segments (
    path TEXT PRIMARY KEY, dir TEXT NOT NULL, site TEXT NOT NULL, node TEXT NOT NULL,
    camera TEXT NOT NULL, seq INTEGER NOT NULL, start REAL NOT NULL, duration REAL,
    size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, sha256 TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS segments_camera ON segments (site, node, camera, seq);
CREATE INDEX IF NOT EXISTS segments_time ON segments (site, node, camera, start);
CREATE INDEX IF NOT EXISTS segments_dir ON segments (dir);
CREATE TABLE IF NOT EXISTS losses (
    path TEXT PRIMARY KEY, dir TEXT NOT NULL, site TEXT NOT NULL, node TEXT NOT NULL,
    camera TEXT, kind TEXT, time REAL, record TEXT, error TEXT);
CREATE INDEX IF NOT EXISTS losses_dir ON losses (dir);
CREATE TABLE IF NOT EXISTS durations (sha256 TEXT PRIMARY KEY, duration REAL NOT NULL);
"""


@dataclass
class Stats:
    """What one run did."""

    dirs_seen: int = 0
    dirs_listed: int = 0
    added: int = 0
    changed: int = 0
    removed: int = 0
    probed: int = 0
    unplayable: int = 0
    records: int = 0
    seconds: float = 0.0


def connect(db: Path) -> sqlite3.Connection:
    """Open (creating if needed) the index at ``db``."""
    db.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(db, timeout=60)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.executescript(SCHEMA)
    return conn


class Indexer:
    """Brings the index at ``config.db`` up to date with ``config.root``."""

    def __init__(
        self,
        config: NasConfig,
        conn: sqlite3.Connection,
        *,
        full: bool = False,
        under: str = "",
        window: tuple[float, float] | None = None,
    ):
        self.config = config
        self.conn = conn
        self.full = full
        self.under = under.strip("/")
        self.window = window
        self.stats = Stats()
        self.pool = ThreadPoolExecutor(max_workers=config.probe_workers)
        self._local = threading.local()
        self._fresh: dict[str, float] = {}

    def run(self) -> Stats:
        t0 = time.monotonic()
        parent = self.under.rpartition("/")[0] if self.under else None
        try:
            self._visit(self.under, parent)
        finally:
            self.pool.shutdown()
        self.stats.seconds = round(time.monotonic() - t0, 3)
        return self.stats

    def _visit(self, rel: str, parent: str | None) -> None:
        path = self.config.root / rel if rel else self.config.root
        try:
            mtime = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            self._forget(rel)
            return
        self.stats.dirs_seen += 1
        row = self.conn.execute("SELECT mtime_ns FROM dirs WHERE path = ?", (rel,)).fetchone()
        if row is not None and self._outside_window(rel):
            return  # a known day of segments the caller does not need: left for a full run
        if row is not None and row[0] == mtime and not self.full:
            for (child,) in self.conn.execute(
                "SELECT path FROM dirs WHERE parent = ?", (rel,)
            ).fetchall():
                self._visit(child, rel)
            return
        self.stats.dirs_listed += 1
        subdirs, files = tree.listing(path, rel)
        for child in subdirs:
            self._visit(child, rel)
        known_children = {
            r[0] for r in self.conn.execute("SELECT path FROM dirs WHERE parent = ?", (rel,))
        }
        for gone in known_children - set(subdirs):
            self._forget(gone)
        with self.conn:
            self._update_files(rel, files)
            self.conn.execute(
                "INSERT OR REPLACE INTO dirs (path, parent, mtime_ns) VALUES (?, ?, ?)",
                (rel, parent, mtime),
            )

    def _outside_window(self, rel: str) -> bool:
        """A directory named for a UTC date (``{date}`` in ``remote_path``) more than a day
        away from the window, and not one of loss records (a node may write a record
        long after the segments it concerns: those directories are always looked at).

        Only directories the index already knows are ever skipped: a new one is listed,
        so a later run, which descends into the known children of an unchanged
        directory, can never miss it."""
        if self.window is None:
            return False
        day = tree.day_of(rel)
        return day is not None and (
            day + 86400 < self.window[0] - 86400 or day > self.window[1] + 86400
        )

    def _update_files(self, rel: str, files: dict[str, os.stat_result]) -> None:
        known = {
            r["path"]: r
            for r in self.conn.execute(
                "SELECT path, size, mtime_ns FROM segments WHERE dir = ?", (rel,)
            )
        }
        known_records = {
            r[0] for r in self.conn.execute("SELECT path FROM losses WHERE dir = ?", (rel,))
        }
        gone = (set(known) | known_records) - set(files)
        for path in gone:
            self.conn.execute("DELETE FROM segments WHERE path = ?", (path,))
            self.conn.execute("DELETE FROM losses WHERE path = ?", (path,))
        self.stats.removed += len(gone & set(known))
        todo = []
        for file_rel, st in files.items():
            found = tree.parse(file_rel)
            if found is None:
                continue
            if found.is_loss_record:
                if file_rel not in known_records:
                    self._add_record(rel, found)
                continue
            old = known.get(file_rel)
            if old is not None and (old["size"], old["mtime_ns"]) == (st.st_size, st.st_mtime_ns):
                continue
            if old is None:
                self.stats.added += 1
            else:
                self.stats.changed += 1
            todo.append((found, st))
        for found, st, values in self.pool.map(lambda fs: (*fs, self._measure(fs[0])), todo):
            if values is None:
                continue  # vanished while we looked: the directory changed, next run sees it
            duration, digest, error = values
            place = (found.rel, rel, found.site, found.node, found.camera, found.seq, found.start)
            self.conn.execute(
                "INSERT OR REPLACE INTO segments (path, dir, site, node, camera, seq, start,"
                " duration, size, mtime_ns, sha256, error) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (*place, duration, st.st_size, st.st_mtime_ns, digest, error),
            )
            if digest and duration is not None:
                self.conn.execute(
                    "INSERT OR IGNORE INTO durations (sha256, duration) VALUES (?, ?)",
                    (digest, duration),
                )

    def _measure(self, found: tree.Found) -> tuple[float | None, str | None, str | None] | None:
        """(duration, sha256, error) of a segment file; None if it vanished."""
        path = self.config.root / found.rel
        try:
            digest = file_digest(path) if self.config.sha256 else None
        except FileNotFoundError:
            return None
        if digest is not None:
            cached = self._cached_duration(digest)
            if cached is not None:
                return cached, digest, None
        self.stats.probed += 1
        try:
            seconds = probe.duration(path)
            if digest is not None:
                self._fresh[digest] = seconds
            return seconds, digest, None
        except probe.ProbeError as exc:
            if not path.exists():
                return None
            self.stats.unplayable += 1
            log.warning("unplayable segment %s: %s", found.rel, exc)
            return None, digest, str(exc)

    def _cached_duration(self, digest: str) -> float | None:
        """The duration of a file with the same content, probed before (identical bytes
        play identically), from this run or the index."""
        if digest in self._fresh:
            return self._fresh[digest]
        # Probe threads must not share the writer's connection: one of their own each.
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = sqlite3.connect(self.config.db, timeout=60)
        row = conn.execute("SELECT duration FROM durations WHERE sha256 = ?", (digest,)).fetchone()
        return None if row is None else float(row[0])

    def _add_record(self, rel: str, found: tree.Found) -> None:
        kind: str | None = None
        camera: str | None = None
        when: float | None = None
        text: str | None = None
        error: str | None = None
        try:
            rec = records.read(self.config.root / found.rel, found.rel)
            kind, camera, when = rec.kind, rec.camera or None, rec.time  # None: every camera
            text = (self.config.root / found.rel).read_text()
        except records.BadRecord as exc:
            error = str(exc)
            log.warning("unreadable loss record: %s", exc)
        except FileNotFoundError:
            return
        self.stats.records += 1
        self.conn.execute(
            "INSERT OR REPLACE INTO losses (path, dir, site, node, camera, kind, time, record,"
            " error) VALUES (?,?,?,?,?,?,?,?,?)",
            (found.rel, rel, found.site, found.node, camera, kind, when, text, error),
        )

    def _forget(self, rel: str) -> None:
        """A directory went away: drop it and everything the index knew below it."""
        like = rel.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "/%"
        with self.conn:
            for table in ("segments", "losses"):
                removed = self.conn.execute(
                    f"DELETE FROM {table} WHERE dir = ? OR dir LIKE ? ESCAPE '\\'", (rel, like)
                ).rowcount
                if table == "segments":
                    self.stats.removed += removed
            self.conn.execute(
                "DELETE FROM dirs WHERE path = ? OR path LIKE ? ESCAPE '\\'", (rel, like)
            )


def update(
    config: NasConfig,
    *,
    full: bool = False,
    under: str = "",
    window: tuple[float, float] | None = None,
) -> tuple[sqlite3.Connection, Stats]:
    """Open the index and bring it up to date; the open connection and what was done.

    ``under`` (``SITE/NODE``, relative to the root) brings only that subtree up to
    date, and ``window`` (Unix seconds) also leaves out its known days of segments
    outside that span: what an export of that span needs (see ``_outside_window``)."""
    conn = connect(config.db)
    return conn, Indexer(config, conn, full=full, under=under, window=window).run()


def row_dict(row: sqlite3.Row) -> dict[str, Any]:
    return {key: row[key] for key in row.keys()}  # noqa: SIM118 - sqlite3.Row has no items()
