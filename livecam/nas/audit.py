"""``livecam nas audit``: is every missing second of every camera accounted for?

Per camera, segments are walked in sequence order (the clock may be wrong; the
sequence is not). Two kinds of hole are found:

- a **sequence hole**: numbers missing between two segments on the NAS. Each
  missing number is explained by a loss record of its node: ``evicted`` (the
  record names it), ``restart`` (the numbers a recorder reserved before a clean
  stop, or before a crash or power cut, and never published), or, with no record,
  ``backlog`` when the next segment arrived less than ``grace`` ago (the node may
  still be shipping it). Anything else is unexplained.
- a **time gap**: no number missing, but the next segment starts later than the
  previous one ended (or earlier: the clock went back). Explained by a
  ``camera_down``, ``restart`` or ``clock_step`` record in that span.

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

from livecam.nas.records import BadRecord, LossRecord, parse

TIME_TOLERANCE = 3.0  # seconds: names carry whole seconds, a busy node closes late
# No segment is longer: a query for a span looks this far before it by the start-time
# index (segments_time) instead of reading every segment of the camera.
MAX_SEGMENT_SECONDS = 86400.0


@dataclass(frozen=True)
class Seg:
    """A segment as the index knows it."""

    seq: int
    start: float
    duration: float | None
    path: str

    @property
    def end(self) -> float:
        return self.start + (self.duration or 0.0)


@dataclass
class Hole:
    """Missing numbers (``first``..``last``) or a time gap between two segments."""

    kind: str  # "sequence", "time" or "unplayable"
    after: float  # end of the segment before it
    before: float  # start of the segment after it
    first: int
    last: int
    causes: list[dict[str, Any]] = field(default_factory=list)  # {cause, text, seqs}
    unexplained: list[int] = field(default_factory=list)

    @property
    def explained(self) -> bool:
        return bool(self.causes) and not self.unexplained

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "first_seq": self.first, "last_seq": self.last,
            "after": iso(self.after), "before": iso(self.before),
            "seconds": round(self.before - self.after, 1), "explained": self.explained,
            "causes": self.causes, "unexplained_seqs": self.unexplained,
        }  # fmt: skip


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
        }  # fmt: skip


def cameras(conn: sqlite3.Connection, site: str | None = None) -> list[tuple[str, str, str]]:
    """Every (site, node, camera) the index holds segments of."""
    query = "SELECT DISTINCT site, node, camera FROM segments"
    rows = conn.execute(query + (" WHERE site = ?" if site else "") + " ORDER BY 1, 2, 3",
                        (site,) if site else ()).fetchall()  # fmt: skip
    return [(r[0], r[1], r[2]) for r in rows]


def segments(
    conn: sqlite3.Connection, site: str, node: str, camera: str,
    since: float | None = None, until: float | None = None,
) -> list[Seg]:  # fmt: skip
    """One camera's segments in sequence order, one per number (a conflict copy is dropped);
    only those ending at or after ``since`` and starting at or before ``until``."""
    lo = -1e18 if since is None else since
    rows = conn.execute(
        "SELECT seq, start, duration, path FROM segments WHERE site=? AND node=? AND camera=?"
        " AND start >= ? AND start <= ? AND start + COALESCE(duration, 0) >= ? ORDER BY seq, path",
        (site, node, camera, lo - MAX_SEGMENT_SECONDS, 1e18 if until is None else until, lo),
    ).fetchall()  # fmt: skip
    out: list[Seg] = []
    for r in rows:
        if not out or out[-1].seq != r[0]:
            out.append(Seg(r[0], r[1], r[2], r[3]))
    return out


def loss_records(
    conn: sqlite3.Connection, site: str, node: str, camera: str
) -> tuple[list[LossRecord], list[str]]:
    """The node's records about ``camera`` and the problems of unreadable ones."""
    found, bad = [], []
    for path, text, error in conn.execute(
        "SELECT path, record, error FROM losses WHERE site=? AND node=? AND"
        " (camera=? OR camera IS NULL) ORDER BY time", (site, node, camera),
    ):  # fmt: skip
        if error:
            bad.append(error)
            continue
        try:
            found.append(parse(text, path))
        except BadRecord as exc:
            bad.append(str(exc))
    return found, bad


def audit_camera(
    conn: sqlite3.Connection, site: str, node: str, camera: str, *,
    since: float | None = None, until: float | None = None, grace: float = 900.0,
    now: float | None = None,
) -> CameraAudit:  # fmt: skip
    """Coverage and every hole of one camera, each explained where a record says why."""
    now = time.time() if now is None else now
    result = CameraAudit(site, node, camera)
    segs = segments(conn, site, node, camera, since, until)
    recs, result.bad_records = loss_records(conn, site, node, camera)
    result.records = len(recs)
    if not segs:
        return result
    result.segments = len(segs)
    result.first_seq, result.last_seq = segs[0].seq, segs[-1].seq
    result.newest = max(s.start for s in segs)
    evicted = {seq: r for r in recs if r.kind == "evicted" for seq in r.sequences}
    restarts = [r for r in recs if r.kind == "restart" and r.get("reserved_below") is not None]
    for seg in segs:
        if seg.duration is None:
            result.holes.append(Hole("unplayable", seg.start, seg.start, seg.seq, seg.seq,
                                     unexplained=[seg.seq]))  # fmt: skip
    for a, b in itertools.pairwise(segs):
        if b.seq > a.seq + 1:
            hole = Hole("sequence", a.end, b.start, a.seq + 1, b.seq - 1)
            for seq in range(a.seq + 1, b.seq):
                _explain_seq(hole, seq, a, b, evicted, restarts, recent=now - b.start < grace)
            result.holes.append(hole)
        elif abs(b.start - a.end) > TIME_TOLERANCE:
            hole = Hole("time", a.end, b.start, b.seq, b.seq)
            _explain_time(hole, a, b, recs)
            result.holes.append(hole)
    result.coverage = _coverage(segs, since, now)
    return result


def _explain_seq(
    hole: Hole, seq: int, a: Seg, b: Seg, evicted: dict[int, LossRecord],
    restarts: list[LossRecord], *, recent: bool,
) -> None:  # fmt: skip
    if seq in evicted:
        rec = evicted[seq]
        tier, limit = rec.get("tier") or "?", rec.get("limit") or "?"
        _add(hole, "evicted", f"evicted from the {tier} ({limit} limit)", seq)
        return
    for rec in restarts:
        below = int(rec.get("reserved_below"))
        if a.seq < below <= b.seq and seq < below:
            last = rec.get("last_seq")
            if rec.get("clean") and last is not None and seq <= int(last):
                continue  # closed before the clean stop: the restart did not take it
            if rec.get("clean"):
                _add(hole, "restart", "reserved before a clean stop, never used", seq)
            else:
                _add(hole, "power_cut", "lost at a crash or power cut (reserved, unpublished)",
                     seq)  # fmt: skip
            return
    if recent:
        _add(hole, "backlog", "not yet shipped (the node's backlog)", seq)
        return
    hole.unexplained.append(seq)


def _explain_time(hole: Hole, a: Seg, b: Seg, recs: list[LossRecord]) -> None:
    lo, hi = min(a.end, b.start) - TIME_TOLERANCE, max(a.end, b.start) + TIME_TOLERANCE
    for rec in recs:
        if rec.kind == "clock_step" and (b.seq in rec.sequences or lo <= rec.time <= hi):
            _add(hole, "clock_step", f"the node's clock stepped {rec.get('step_seconds'):+.1f}s",
                 b.seq)  # fmt: skip
            return
    if b.start < a.end:
        hole.unexplained.append(b.seq)  # time went back with no clock step recorded
        return
    downs = [r for r in recs if r.kind == "camera_down" and lo <= r.time <= hi]
    if downs:
        _add(hole, "camera_down", f"camera down: {len(downs)} restart(s); {downs[0].reason}",
             b.seq)  # fmt: skip
        return
    if any(r.kind == "restart" and lo <= r.time <= hi for r in recs):
        _add(hole, "restart", "the recorder was not running (stopped or restarting)", b.seq)
        return
    hole.unexplained.append(b.seq)


def _add(hole: Hole, cause: str, text: str, seq: int) -> None:
    for c in hole.causes:
        if c["cause"] == cause and c["text"] == text:
            c["seqs"].append(seq)
            return
    hole.causes.append({"cause": cause, "text": text, "seqs": [seq]})


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
        days.append({"date": f"{day:%Y-%m-%d}", "recorded": round(done, 1),
                     "elapsed": round(elapsed, 1),
                     "ratio": round(min(1.0, done / elapsed), 6) if elapsed else 0.0})  # fmt: skip
        day += timedelta(days=1)
    return days


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def to_json(audits: list[CameraAudit]) -> str:
    return json.dumps(
        {"cameras": [a.as_dict() for a in audits],
         "unexplained_gaps": sum(a.unexplained for a in audits)}, indent=1,
    )  # fmt: skip
