"""Why a hole is there: the node's loss records, matched to the holes of the audit.

Also the two things records say that are not holes: when a node ran RAM-only (its
spool failed, then recovered), and where a node began a new sequence (a start with
no sequence state: a reinstalled node, or one whose spool and buffer were both
lost), which splits a camera's segments into epochs, each numbered on its own.

Missing numbers are handled as ranges, never one by one: a restart may skip a
hundred thousand numbers nobody used, and the audit says so in one line.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from livecam.nas.records import LossRecord

TIME_TOLERANCE = 3.0  # seconds: names carry whole seconds, a busy node closes late

NAME_ROUNDING = 1.0  # seconds: a name carries its start truncated to the second

# One frame interval (a frame at 10 fps): a segment may start this much before the
# previous one ends (plus what its name rounds away) before it is a time fault. The
# index does not know a camera's frame rate.
FRAME_INTERVAL = 0.1

Ranges = list[list[int]]  # [[first, last], ...], sorted, disjoint


@dataclass(frozen=True)
class Seg:
    """A segment as the index knows it."""

    seq: int
    start: float
    duration: float | None
    path: str
    epoch: int = 0  # how many new sequences the node began before it (see ``epoch_of``)

    @property
    def end(self) -> float:
        return self.start + (self.duration or 0.0)


@dataclass
class Hole:
    """Missing numbers (``first``..``last``), a time gap or overlap between two
    segments, or a camera silent from ``after`` on (``first``/``last`` None)."""

    kind: str  # "sequence", "time", "overlap", "silent" or "unplayable"
    after: float  # end of the segment before it (a silent hole: of the newest)
    before: float  # start of the segment after it (a silent hole: when audited)
    first: int | None
    last: int | None
    causes: list[dict[str, Any]] = field(default_factory=list)  # {cause, text, ranges}
    unexplained: Ranges = field(default_factory=list)  # numbers no record explains
    fault: str = ""  # what no record explains, besides numbers ("" when all is)

    @property
    def explained(self) -> bool:
        return bool(self.causes) and not self.unexplained and not self.fault

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "first_seq": self.first, "last_seq": self.last,
            "after": iso(self.after), "before": iso(self.before),
            "seconds": round(self.before - self.after, 1), "explained": self.explained,
            "causes": self.causes, "unexplained_ranges": self.unexplained, "fault": self.fault,
        }  # fmt: skip


def explain_seq(
    hole: Hole,
    a: Seg,
    b: Seg,
    evicted: dict[int, LossRecord],
    restarts: list[LossRecord],
    salvaged: set[int],
    *,
    recent: bool,
) -> None:
    """Explain the numbers between ``a`` and ``b``: evicted ones by their records, the
    ones a recorder start skipped by its ``restart`` record, the rest as backlog
    (``recent``) or unexplained."""
    rest: Ranges = [[a.seq + 1, b.seq - 1]]
    inside = (
        range(a.seq + 1, b.seq) if b.seq - a.seq < len(evicted) else sorted(evicted)
    )  # whichever is shorter: a restart may skip 100,000 numbers, a month evict as many
    for seq in (s for s in inside if a.seq < s < b.seq and s in evicted):
        tier, limit = evicted[seq].get("tier") or "?", evicted[seq].get("limit") or "?"
        add_cause(hole, "evicted", f"evicted from the {tier} ({limit} limit)", [[seq, seq]])
        rest = _minus(rest, seq, seq)
    for rec in restarts:
        below = int(rec.get("reserved_below"))
        if not (a.seq < below <= b.seq):
            continue
        last = rec.get("last_seq")
        lo = int(last) + 1 if rec.get("clean") and last is not None else a.seq + 1
        taken = _within(rest, lo, below - 1)
        if not taken:
            continue
        rest = _minus_all(rest, taken)
        if rec.get("clean"):
            add_cause(hole, "restart", "restart after a clean stop: reserved, never used", taken)
        elif b.seq in salvaged and abs(b.start - a.end) <= TIME_TOLERANCE:
            # Nothing is missing in time: the run cut off went on in the segment salvaged.
            why = f"restart after a crash: reserved, never used (seq {b.seq} salvaged)"
            add_cause(hole, "restart", why, taken)
        else:
            why = "restart after a crash or power cut: lost with the RAM buffer or never used"
            add_cause(hole, "power_cut", why, taken)
    if rest and recent:
        add_cause(hole, "backlog", "not yet shipped (the node's backlog)", rest)
    elif rest:
        hole.unexplained = rest
        hole.fault = "no loss record"


def explain_time(hole: Hole, a: Seg, b: Seg, recs: list[LossRecord]) -> None:
    """A gap (or overlap) in time between consecutive numbers ``a`` and ``b``."""
    lo, hi = min(a.end, b.start) - TIME_TOLERANCE, max(a.end, b.start) + TIME_TOLERANCE
    for rec in recs:
        if rec.kind == "clock_step" and (b.seq in rec.sequences or lo <= rec.time <= hi):
            step = f"the node's clock stepped {rec.get('step_seconds'):+.1f}s"
            add_cause(hole, "clock_step", step, [[b.seq, b.seq]])
            return
    if b.start < a.end:  # a segment starts before the previous one ends: a time fault
        hole.fault = f"starts {a.end - b.start:.1f}s before seq {a.seq} ends (no clock step)"
        return
    downs = [r for r in recs if r.kind == "camera_down" and lo <= r.time <= hi]
    if downs:
        why = f"camera down: {len(downs)} restart(s); {downs[0].reason}"
        add_cause(hole, "camera_down", why, [[b.seq, b.seq]])
        return
    stops = [r for r in recs if r.kind == "stopped" and lo <= r.time <= hi]
    if stops or any(r.kind == "restart" and lo <= r.time <= hi for r in recs):
        why = "the recorder was not running (stopped or restarting)"
        if stops:
            why = f"stopped cleanly at {iso(stops[0].time)}, started again"
        add_cause(hole, "restart", why, [[b.seq, b.seq]])
        return
    hole.fault = "no loss record"


def overlaps(a: Seg, b: Seg) -> bool:
    """``b`` starts before ``a`` ends by more than one frame interval and what the
    names round away (whole seconds, unless a name carries a fraction)."""
    rounding = NAME_ROUNDING if a.start % 1 == 0 and b.start % 1 == 0 else 0.0
    return a.end - b.start > FRAME_INTERVAL + rounding


def ram_only(
    recs: list[LossRecord], since: float | None, until: float | None
) -> list[dict[str, Any]]:
    """When the node ran RAM-only (its spool failed, then recovered): nothing lost by
    itself, so no hole; what the buffer then had to evict has its own records."""
    spans: list[dict[str, Any]] = []
    for rec in recs:  # in time order
        if rec.kind == "spool_failed" and (not spans or spans[-1]["to"] is not None):
            spans.append({"from": rec.time, "to": None, "reason": rec.reason})
        elif rec.kind == "spool_recovered" and spans and spans[-1]["to"] is None:
            spans[-1]["to"] = rec.time
    lo, hi = -1e18 if since is None else since, 1e18 if until is None else until
    return [
        {
            "from": iso(s["from"]),
            "to": iso(s["to"]) if s["to"] is not None else None,
            "seconds": round(s["to"] - s["from"], 1) if s["to"] is not None else None,
            "reason": s["reason"],
        }
        for s in spans
        if s["from"] <= hi and (s["to"] is None or s["to"] >= lo)
    ]


def add_cause(hole: Hole, cause: str, text: str, ranges: Ranges) -> None:
    """Give ``hole`` a cause (its numbers merged into a cause of the same text)."""
    for c in hole.causes:
        if c["cause"] == cause and c["text"] == text:
            for first, last in ranges:
                c["ranges"] = _union(c["ranges"], first, last)
            return
    merged: Ranges = []
    for first, last in ranges:
        merged = _union(merged, first, last)
    hole.causes.append({"cause": cause, "text": text, "ranges": merged})


def _union(ranges: Ranges, first: int, last: int) -> Ranges:
    """``ranges`` with ``first``..``last`` added, adjacent ones merged."""
    out: Ranges = []
    for lo, hi in sorted([*ranges, [first, last]]):
        if out and lo <= out[-1][1] + 1:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return out


def _minus(ranges: Ranges, first: int, last: int) -> Ranges:
    out: Ranges = []
    for lo, hi in ranges:
        if lo < first:
            out.append([lo, min(hi, first - 1)])
        if hi > last:
            out.append([max(lo, last + 1), hi])
    return out


def _minus_all(ranges: Ranges, taken: Ranges) -> Ranges:
    for first, last in taken:
        ranges = _minus(ranges, first, last)
    return ranges


def _within(ranges: Ranges, first: int, last: int) -> Ranges:
    """The part of ``ranges`` between ``first`` and ``last``."""
    return [[max(lo, first), min(hi, last)] for lo, hi in ranges if lo <= last and hi >= first]


def count(ranges: Ranges) -> int:
    return sum(hi - lo + 1 for lo, hi in ranges)


def new_sequences(recs: list[LossRecord]) -> list[float]:
    """When this camera's recorder started with no sequence state (the ``restart``
    record of a first start), in time order: where each epoch begins."""
    return sorted(r.time for r in recs if r.kind == "restart" and r.get("reserved_below") is None)


def epoch_of(when: float, starts: list[float]) -> int:
    """The epoch of a segment that started (or a record written) at ``when``: how many
    new sequences began at or before it. Both times come from the node's clock, which
    named the epoch's first segment just after writing its start record."""
    return bisect.bisect_right(starts, when + NAME_ROUNDING)


def iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
