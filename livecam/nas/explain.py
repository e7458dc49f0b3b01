"""Why a hole is there: the node's loss records, matched to the holes of the audit.

Also the two things records say that are not holes: when a node ran RAM-only (its
spool failed, then recovered), and where a node began a new sequence (a start with
no sequence state: a reinstalled node, or one whose spool and buffer were both
lost), which splits a camera's segments into epochs, each numbered on its own.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from livecam.nas.records import LossRecord

TIME_TOLERANCE = 3.0  # seconds: names carry whole seconds, a busy node closes late

NAME_ROUNDING = 1.0  # seconds: a name carries its start truncated to the second


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


def explain_seq(
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


def explain_time(hole: Hole, a: Seg, b: Seg, recs: list[LossRecord]) -> None:
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
        {"from": iso(s["from"]), "to": iso(s["to"]) if s["to"] is not None else None,
         "seconds": round(s["to"] - s["from"], 1) if s["to"] is not None else None,
         "reason": s["reason"]}
        for s in spans if s["from"] <= hi and (s["to"] is None or s["to"] >= lo)
    ]  # fmt: skip


def _add(hole: Hole, cause: str, text: str, seq: int) -> None:
    for c in hole.causes:
        if c["cause"] == cause and c["text"] == text:
            c["seqs"].append(seq)
            return
    hole.causes.append({"cause": cause, "text": text, "seqs": [seq]})


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
