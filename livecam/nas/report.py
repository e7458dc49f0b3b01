"""The audit as a person reads it, and as Prometheus scrapes it (node_exporter textfile)."""

from __future__ import annotations

import time
from pathlib import Path

from livecam.nas.audit import CameraAudit
from livecam.nas.explain import Hole, iso
from livecam.ops.prometheus import Family, exposition
from livecam.storage.files import atomic_write


def text(audits: list[CameraAudit], now: float | None = None) -> str:
    """One block per camera: coverage per day, then every hole with its explanation."""
    now = time.time() if now is None else now
    lines = []
    for a in audits:
        age = f", newest {now - a.newest:.0f}s ago" if a.newest else ""
        lines.append(
            f"{a.key}: {a.segments} segments"
            + (f", seq {a.first_seq}-{a.last_seq}{age}" if a.segments else "")
            + f", {a.records} loss records"
        )
        for day in a.coverage:
            lines.append(
                f"  {day['date']}: coverage {100 * day['ratio']:.1f}% "
                f"({day['recorded']:.0f}s of {day['elapsed']:.0f}s)"
            )
        for span in a.ram_only:
            until = (
                f"to {span['to']} ({span['seconds']:.0f}s)"
                if span["to"]
                else "on (no recovery yet)"
            )
            lines.append(f"  ran RAM-only from {span['from']} {until}: {span['reason']}")
        for hole in a.holes:
            lines.append("  " + describe(hole))
        for bad in a.bad_records:
            lines.append(f"  unreadable loss record: {bad}")
    total = sum(a.unexplained for a in audits)
    holes = sum(len(a.holes) for a in audits)
    lines.append(f"{len(audits)} cameras, {holes} holes, {total} unexplained")
    return "\n".join(lines)


def describe(hole: Hole) -> str:
    """One line: where the hole is, how much time it is, and why (or UNEXPLAINED).
    Numbers are ranges ("seq 4-6"), never listed one by one."""
    span = f"{iso(hole.after)} to {iso(hole.before)}"
    lost = f"{max(0.0, hole.before - hole.after):.1f}s not recorded"
    if hole.kind == "unplayable":
        return f"UNEXPLAINED seq {hole.first} at {iso(hole.after)}: the file does not play"
    if hole.kind == "sequence" and hole.first is not None and hole.last is not None:
        n = hole.last - hole.first + 1
        numbers = f"{n} number" + ("s" if n > 1 else "")
        where = f"{_seqs([[hole.first, hole.last]])} ({numbers}; {lost}, {span})"
    elif hole.kind == "overlap":
        where = f"overlap at seq {hole.first} ({hole.after - hole.before:.1f}s, {span})"
    elif hole.kind == "silent":
        where = f"silent since {iso(hole.after)} ({lost}, to {iso(hole.before)})"
    else:
        where = f"time gap before seq {hole.first} ({lost}, {span})"
    whys = [c["text"] + (f" [{_seqs(c['ranges'])}]" if c["ranges"] else "") for c in hole.causes]
    if hole.unexplained:
        whys.append(f"{hole.fault or 'no loss record'} [{_seqs(hole.unexplained)}]")
    elif hole.fault:
        whys.append(hole.fault)
    why = "; ".join(whys)
    return f"{'hole' if hole.explained else 'UNEXPLAINED'} {where}: {why}"


def _seqs(ranges: list[list[int]], most: int = 4) -> str:
    """``seq 4-6, 9`` (at most ``most`` ranges shown, then how many more)."""
    shown = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in ranges[:most]]
    more = f" and {len(ranges) - most} more ranges" if len(ranges) > most else ""
    return "seq " + ", ".join(shown) + more


def prometheus(audits: list[CameraAudit], now: float | None = None) -> str:
    """Metrics in the Prometheus text format, one series per camera (docs/nas.md)."""
    now = time.time() if now is None else now
    unexplained = Family("livecam_nas_unexplained_gaps", "gauge", "Holes no loss record explains.")
    explained = Family("livecam_nas_explained_gaps", "gauge", "Holes explained by loss records.")
    coverage = Family(
        "livecam_nas_coverage_ratio",
        "gauge",
        "Seconds recorded / seconds elapsed over the audit.",
    )
    newest = Family(
        "livecam_nas_newest_segment_timestamp_seconds", "gauge", "Start of the newest segment."
    )
    ran = Family("livecam_nas_audit_timestamp_seconds", "gauge", "When the audit ran.")
    for a in audits:
        where = {"site": a.site, "node": a.node, "camera": a.camera}
        unexplained.add(a.unexplained, **where)
        for cause, n in sorted(_explained(a).items()):
            explained.add(n, **where, cause=cause)
        # Six decimals of a ratio and whole seconds of a time: more digits are noise.
        coverage.add(round(a.ratio(), 6), **where)
        if a.newest:
            newest.add(round(a.newest), **where)
    ran.add(round(now))
    return exposition([unexplained, explained, coverage, newest, ran])


def _explained(a: CameraAudit) -> dict[str, int]:
    """Explained holes by cause (a hole with several causes counts once for each)."""
    counts: dict[str, int] = {}
    for hole in a.holes:
        for cause in {c["cause"] for c in hole.causes} if hole.explained else ():
            counts[cause] = counts.get(cause, 0) + 1
    return counts


def write_textfile(path: Path, body: str) -> None:
    """Replace ``path`` atomically (node_exporter must never read half a file), readable
    by node_exporter, which runs as another user."""
    atomic_write(path, body, mode=0o644)
