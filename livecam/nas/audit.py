"""``livecam nas audit``: is every missing second of every camera accounted for?

Per camera, segments are walked in sequence order (the clock may be wrong; the
sequence is not), epoch by epoch: a node that starts with no sequence state (it
was reinstalled) numbers from 0 again, and says so in its first ``restart``
record; the segments it names after that record are a new epoch, walked on their
own, and the step from one epoch to the next is a hole explained as
``new_sequence`` (see ``livecam.nas.explain``). Two kinds of hole are found:

- a **sequence hole**: numbers missing between two segments on the NAS. Each
  missing number is explained by a loss record of its node: ``evicted`` (the
  record names it), ``restart`` (the numbers a recorder reserved before a clean
  stop, or before a crash or power cut, and never published), or, with no record,
  ``backlog`` when the next segment arrived less than ``grace`` ago (the node may
  still be shipping it). Anything else is unexplained.
- a **time gap**: no number missing, but the next segment starts later than the
  previous one ended. Explained by a ``camera_down``, ``restart``, ``stopped`` or
  ``clock_step`` record in that span. An **overlap** (the next segment starts
  before the previous one ends, by more than a frame) is a time fault unless a
  ``clock_step`` record explains it.
- a **silence**: a camera that must exist (seen on the NAS, named in its node's
  records, or listed in the NAS config's ``cameras``) with no footage, or none
  after its newest segment for longer than ``grace``. Explained by a clean stop
  (``stopped``) or a camera down that its node keeps reporting; a node killed and
  never back is unexplained.

A segment that does not play (ffprobe failed) is a hole too, never explained.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from livecam.nas.explain import (
    TIME_TOLERANCE,
    Hole,
    Seg,
    epoch_of,
    explain_seq,
    explain_time,
    iso,
    new_sequences,
    overlaps,
    ram_only,
)
from livecam.nas.records import BadRecord, LossRecord, parse
from livecam.nas.silence import silence

# No segment is longer: a query for a span looks this far before it by the start-time
# index (segments_time) instead of reading every segment of the camera.
MAX_SEGMENT_SECONDS = 86400.0
NEW_SEQUENCE = "the node started with no sequence state (reinstalled): a new sequence"


@dataclass
class CameraAudit:
    """One camera's audit: coverage per day, holes, what the node said."""

    site: str
    node: str
    camera: str
    segments: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    newest: float | None = None
    coverage: list[dict[str, Any]] = field(default_factory=list)
    holes: list[Hole] = field(default_factory=list)
    records: int = 0
    bad_records: list[str] = field(default_factory=list)
    epochs: int = 0  # sequences the node began (more than one: it was reinstalled)
    ram_only: list[dict[str, Any]] = field(default_factory=list)  # spool failed: from, to, why

    @property
    def key(self) -> str:
        return f"{self.site}/{self.node}/{self.camera}"

    @property
    def unexplained(self) -> int:
        return sum(1 for h in self.holes if not h.explained)

    def ratio(self) -> float:
        recorded = sum(d["recorded"] for d in self.coverage)
        elapsed = sum(d["elapsed"] for d in self.coverage)
        return recorded / elapsed if elapsed > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "site": self.site, "node": self.node, "camera": self.camera,
            "segments": self.segments, "first_seq": self.first_seq, "last_seq": self.last_seq,
            "newest_start": iso(self.newest) if self.newest else None,
            "coverage_ratio": round(self.ratio(), 6), "coverage": self.coverage,
            "holes": [h.as_dict() for h in self.holes], "unexplained_gaps": self.unexplained,
            "loss_records": self.records, "bad_loss_records": self.bad_records,
            "ram_only": self.ram_only, "epochs": self.epochs,
        }  # fmt: skip


def cameras(
    conn: sqlite3.Connection,
    site: str | None = None,
    expected: tuple[tuple[str, str, str], ...] = (),
) -> list[tuple[str, str, str]]:
    """Every (site, node, camera) that must exist: segments of it on the NAS, loss
    records of its node naming it, or ``expected`` (the NAS config's ``cameras``)."""
    rows = conn.execute(
        "SELECT site, node, camera FROM segments UNION SELECT site, node, camera FROM"
        " losses WHERE camera IS NOT NULL AND camera != '' AND error IS NULL"
    ).fetchall()
    found = {(r[0], r[1], r[2]) for r in rows} | set(expected)
    return sorted(cam for cam in found if site is None or cam[0] == site)


def segments(
    conn: sqlite3.Connection,
    site: str,
    node: str,
    camera: str,
    since: float | None = None,
    until: float | None = None,
) -> list[Seg]:
    """One camera's segments, epoch by epoch, each in sequence order, one per name (a
    conflict copy is dropped); only those ending at or after ``since`` and starting
    at or before ``until``."""
    restarts = conn.execute(
        "SELECT path, record FROM losses WHERE site=? AND node=? AND camera=?"
        " AND kind='restart' AND error IS NULL",
        (site, node, camera),
    )
    starts = new_sequences([parse(text, path) for path, text in restarts])
    lo = -1e18 if since is None else since
    rows = conn.execute(
        "SELECT seq, start, duration, path FROM segments WHERE site=? AND node=? AND camera=?"
        " AND start >= ? AND start <= ? AND start + COALESCE(duration, 0) >= ? ORDER BY seq, path",
        (site, node, camera, lo - MAX_SEGMENT_SECONDS, 1e18 if until is None else until, lo),
    ).fetchall()
    seen: set[tuple[int, float]] = set()
    out: list[Seg] = []
    for seq, start, duration, path in rows:
        if (seq, start) not in seen:
            seen.add((seq, start))
            out.append(Seg(seq, start, duration, path, epoch_of(start, starts)))
    out.sort(key=lambda seg: (seg.epoch, seg.seq))
    return out


def loss_records(
    conn: sqlite3.Connection, site: str, node: str, camera: str
) -> tuple[list[LossRecord], list[str]]:
    """The node's records about ``camera`` and the problems of unreadable ones."""
    found, bad = [], []
    for path, text, error in conn.execute(
        "SELECT path, record, error FROM losses WHERE site=? AND node=? AND"
        " (camera=? OR camera IS NULL) ORDER BY time",
        (site, node, camera),
    ):
        if error:
            bad.append(error)
            continue
        try:
            found.append(parse(text, path))
        except BadRecord as exc:
            bad.append(str(exc))
    return found, bad


def audit_camera(
    conn: sqlite3.Connection,
    site: str,
    node: str,
    camera: str,
    *,
    since: float | None = None,
    until: float | None = None,
    grace: float = 900.0,
    now: float | None = None,
) -> CameraAudit:
    """Coverage and every hole of one camera, each explained where a record says why."""
    now = time.time() if now is None else now
    result = CameraAudit(site, node, camera)
    segs = segments(conn, site, node, camera, since, until)
    recs, result.bad_records = loss_records(conn, site, node, camera)
    result.records = len(recs)
    result.ram_only = ram_only(recs, since, until)
    if segs:
        _walk(result, segs, recs, now=now, grace=grace)
        result.coverage = _coverage(segs, since, now)
    silent = silence(conn, (site, node, camera), recs, since, until, now=now, grace=grace)
    if silent is not None:
        result.holes.append(silent)
    return result


def _walk(
    result: CameraAudit, segs: list[Seg], recs: list[LossRecord], *, now: float, grace: float
) -> None:
    """The holes between a camera's segments, in sequence order, epoch by epoch."""
    result.segments = len(segs)
    result.first_seq, result.last_seq = segs[0].seq, segs[-1].seq
    result.newest = max(s.start for s in segs)
    result.epochs = len({s.epoch for s in segs})
    for seg in segs:
        if seg.duration is None:
            hole = Hole("unplayable", seg.start, seg.start, seg.seq, seg.seq)
            hole.unexplained, hole.fault = [[seg.seq, seg.seq]], "the file does not play"
            result.holes.append(hole)
    starts = new_sequences(recs)
    by_epoch: dict[int, list[LossRecord]] = {}  # numbers repeat across epochs: their own
    for rec in recs:
        by_epoch.setdefault(epoch_of(rec.time, starts), []).append(rec)
    evicted = {
        e: {seq: r for r in rs if r.kind == "evicted" for seq in r.sequences}
        for e, rs in by_epoch.items()
    }
    salvaged = {
        e: {seq for r in rs if r.kind == "salvaged" for seq in r.sequences}
        for e, rs in by_epoch.items()
    }
    restarts = {
        e: [r for r in rs if r.kind == "restart" and r.get("reserved_below") is not None]
        for e, rs in by_epoch.items()
    }
    for a, b in itertools.pairwise(segs):
        if a.epoch != b.epoch:
            cause = {"cause": "new_sequence", "ranges": [[b.seq, b.seq]], "text": NEW_SEQUENCE}
            result.holes.append(Hole("time", a.end, b.start, b.seq, b.seq, causes=[cause]))
        elif b.seq > a.seq + 1:
            hole = Hole("sequence", a.end, b.start, a.seq + 1, b.seq - 1)
            e = a.epoch
            ev, rs, sv = evicted.get(e, {}), restarts.get(e, []), salvaged.get(e, set())
            explain_seq(hole, a, b, ev, rs, sv, recent=now - b.start < grace)
            result.holes.append(hole)
        elif overlaps(a, b) or b.start - a.end > TIME_TOLERANCE:
            hole = Hole("overlap" if b.start < a.end else "time", a.end, b.start, b.seq, b.seq)
            explain_time(hole, a, b, by_epoch.get(a.epoch, []))
            result.holes.append(hole)


def _coverage(segs: list[Seg], since: float | None, now: float) -> list[dict[str, Any]]:
    """Seconds recorded / seconds elapsed per UTC day, from the first segment (or since)."""
    begin = max(segs[0].start, since) if since is not None else segs[0].start
    recorded: dict[str, float] = {}
    for seg in segs:
        t = max(seg.start, begin)
        while t < seg.end:
            day = datetime.fromtimestamp(t, UTC).replace(hour=0, minute=0, second=0)
            cut = min(seg.end, (day + timedelta(days=1)).timestamp())
            recorded[f"{day:%Y-%m-%d}"] = recorded.get(f"{day:%Y-%m-%d}", 0.0) + cut - t
            t = cut
    day = datetime.fromtimestamp(begin, UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    days = []
    while day.timestamp() < now:
        lo, hi = day.timestamp(), (day + timedelta(days=1)).timestamp()
        elapsed = max(0.0, min(hi, now) - max(lo, begin))
        done = recorded.get(f"{day:%Y-%m-%d}", 0.0)
        days.append(
            {
                "date": f"{day:%Y-%m-%d}",
                "recorded": round(done, 1),
                "elapsed": round(elapsed, 1),
                "ratio": round(min(1.0, done / elapsed), 6) if elapsed else 0.0,
            }
        )
        day += timedelta(days=1)
    return days


def to_json(audits: list[CameraAudit]) -> str:
    return json.dumps(
        {
            "cameras": [a.as_dict() for a in audits],
            "unexplained_gaps": sum(a.unexplained for a in audits),
        },
        indent=1,
    )
