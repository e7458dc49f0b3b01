"""The audit as a person reads it, and as Prometheus scrapes it (node_exporter textfile)."""

from __future__ import annotations

import os
import time
from pathlib import Path

from livecam.nas.audit import CameraAudit
from livecam.nas.explain import Hole, iso


def text(audits: list[CameraAudit], now: float | None = None) -> str:
    """One block per camera: coverage per day, then every hole with its explanation."""
    now = time.time() if now is None else now
    lines = []
    for a in audits:
        age = f", newest {now - a.newest:.0f}s ago" if a.newest else ""
        lines.append(f"{a.key}: {a.segments} segments, seq {a.first_seq}-{a.last_seq}{age}, "
                     f"{a.records} loss records")  # fmt: skip
        for day in a.coverage:
            lines.append(f"  {day['date']}: coverage {100 * day['ratio']:.1f}% "
                         f"({day['recorded']:.0f}s of {day['elapsed']:.0f}s)")  # fmt: skip
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
    """One line: where the hole is, and why (or UNEXPLAINED)."""
    if hole.kind == "unplayable":
        return f"UNEXPLAINED seq {hole.first} at {iso(hole.after)}: the file does not play"
    if hole.kind == "sequence":
        n = hole.last - hole.first + 1
        where = (f"seq {hole.first}" if n == 1 else f"seq {hole.first}-{hole.last}") + (
            f" ({n} missing, {iso(hole.after)} to {iso(hole.before)})")  # fmt: skip
    else:
        where = (f"time gap before seq {hole.first} ({hole.before - hole.after:+.1f}s, "
                 f"{iso(hole.after)} to {iso(hole.before)})")  # fmt: skip
    why = "; ".join(f"{c['text']} [{_seqs(c['seqs'])}]" for c in hole.causes)
    if hole.unexplained:
        why = (why + "; " if why else "") + f"no loss record [{_seqs(hole.unexplained)}]"
        return f"UNEXPLAINED {where}: {why}"
    return f"hole {where}: {why}"


def _seqs(seqs: list[int]) -> str:
    if len(seqs) == 1:
        return f"seq {seqs[0]}"
    return f"{len(seqs)} seqs {min(seqs)}-{max(seqs)}"


def prometheus(audits: list[CameraAudit], now: float | None = None) -> str:
    """Metrics in the Prometheus text format, one series per camera."""
    now = time.time() if now is None else now
    out = [
        "# HELP livecam_nas_unexplained_gaps Holes no loss record explains.",
        "# TYPE livecam_nas_unexplained_gaps gauge",
    ]
    out += [f"livecam_nas_unexplained_gaps{{{_labels(a)}}} {a.unexplained}" for a in audits]
    out += ["# HELP livecam_nas_explained_gaps Holes explained by loss records.",
            "# TYPE livecam_nas_explained_gaps gauge"]  # fmt: skip
    for a in audits:
        counts: dict[str, int] = {}
        for hole in a.holes:
            for cause in {c["cause"] for c in hole.causes} if hole.explained else ():
                counts[cause] = counts.get(cause, 0) + 1
        out += [f'livecam_nas_explained_gaps{{{_labels(a)},cause="{c}"}} {n}'
                for c, n in sorted(counts.items())]  # fmt: skip
    out += ["# HELP livecam_nas_coverage_ratio Seconds recorded / seconds elapsed over the audit.",
            "# TYPE livecam_nas_coverage_ratio gauge"]  # fmt: skip
    out += [f"livecam_nas_coverage_ratio{{{_labels(a)}}} {a.ratio():.6f}" for a in audits]
    out += ["# HELP livecam_nas_newest_segment_timestamp_seconds Start of the newest segment.",
            "# TYPE livecam_nas_newest_segment_timestamp_seconds gauge"]  # fmt: skip
    out += [f"livecam_nas_newest_segment_timestamp_seconds{{{_labels(a)}}} {a.newest:.0f}"
            for a in audits if a.newest]  # fmt: skip
    out += ["# HELP livecam_nas_audit_timestamp_seconds When the audit ran.",
            "# TYPE livecam_nas_audit_timestamp_seconds gauge",
            f"livecam_nas_audit_timestamp_seconds {now:.0f}"]  # fmt: skip
    return "\n".join(out) + "\n"


def _labels(a: CameraAudit) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return f'site="{esc(a.site)}",node="{esc(a.node)}",camera="{esc(a.camera)}"'


def write_textfile(path: Path, body: str) -> None:
    """Replace ``path`` atomically (node_exporter must never read half a file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(body)
    os.replace(tmp, path)
