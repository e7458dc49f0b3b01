"""``livecam export``: one MP4 of a span of one camera, without re-encoding.

ffmpeg's concat demuxer joins the segments with stream copy (``-c copy``): every
frame is the camera's own, the timestamps run on across each boundary, and the
clip starts at 0. It starts at the keyframe at or before ``--from`` (a clip cannot
start between keyframes without decoding) and ends at the keyframe at or after
``--to`` (the frame before it is the last one), or with the last segment. A hole
in the span is joined over; the command names every hole it spans.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from livecam.nas import fmp4, fragments, probe, readahead
from livecam.nas.audit import audit_camera, cameras, segments
from livecam.nas.explain import TIME_TOLERANCE, Hole, Seg, iso

# Seconds a segment may reach into the span and still not be part of it: neighbours named
# by their first frames' times (to the millisecond) may touch by a few milliseconds.
SLIVER = 0.02


class ExportError(Exception):
    """The span cannot be exported (no such camera, nothing recorded, ffmpeg failed)."""


@dataclass
class Clip:
    """What an export wrote."""

    camera: str
    out: Path
    segments: list[Seg]
    inpoint: float
    outpoint: float | None
    holes: list[Hole] = field(default_factory=list)
    uncovered: list[str] = field(default_factory=list)  # span ends no segment covers


def resolve(conn: sqlite3.Connection, spec: str) -> tuple[str, str, str]:
    """``SITE/NODE/CAMERA`` (or an unambiguous ``NODE/CAMERA`` or ``CAMERA``) in the index."""
    want = [p for p in spec.strip("/").split("/") if p]
    if not 1 <= len(want) <= 3:
        raise ExportError(f"{spec!r}: give a camera as SITE/NODE/CAMERA")
    found = [c for c in cameras(conn) if list(c[3 - len(want) :]) == want]
    if len(found) == 1:
        return found[0]
    if not found:
        raise ExportError(f"{spec}: no such camera in the index (try 'livecam nas audit')")
    names = ", ".join("/".join(c) for c in found)
    raise ExportError(f"{spec}: several cameras match ({names}); give SITE/NODE/CAMERA")


def output_paths(out: Path, cams: list[tuple[str, str, str]]) -> list[Path]:
    """``-o clip.mp4`` for one camera; ``clip-SITE-NODE-CAMERA.mp4`` each for several."""
    if len(cams) == 1:
        return [out]
    return [out.with_name(f"{out.stem}-{'-'.join(c)}{out.suffix or '.mp4'}") for c in cams]


def export(
    conn: sqlite3.Connection,
    root: Path,
    cam: tuple[str, str, str],
    start: float,
    end: float,
    out: Path,
    *,
    grace: float = 900.0,
) -> Clip:
    """Write ``out``: camera ``cam`` from ``start`` to ``end`` (Unix seconds)."""
    if end <= start:
        raise ExportError("--to must be later than --from")
    playable = [s for s in segments(conn, *cam) if s.duration is not None]
    chosen = [s for s in playable if s.end > start + SLIVER and s.start < end - SLIVER]
    if not chosen:
        raise ExportError(f"{'/'.join(cam)}: nothing recorded between {iso(start)} and {iso(end)}")
    first, last = chosen[0], chosen[-1]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    try:
        inpoint, outpoint = _join(root, chosen, start - first.start, end - last.start, tmp)
    except fragments.Unsupported:
        inpoint = _keyframe_at_or_before(root / first.path, start - first.start)
        floor = inpoint if first is last else 0
        outpoint = _keyframe_after(root / last.path, end - last.start, floor)
        _concat(root, chosen, inpoint, outpoint, tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    audit = audit_camera(conn, *cam, since=first.start, until=last.start, grace=grace)
    # A hole is spanned when it lies between the first and the last segment joined (by
    # time: sequence numbers start again after a reinstall).
    lo, hi = first.start - TIME_TOLERANCE, last.end + TIME_TOLERANCE
    near = [h for h in audit.holes if h.after >= lo and h.before <= hi]
    holes = [h for h in near if h.kind != "unplayable" or first.start < h.after < last.end]
    uncovered = []
    if first.start > start + 1:
        uncovered.append(f"nothing recorded from {iso(start)} to {iso(first.start)}")
    if last.end < end - 1:
        uncovered.append(f"nothing recorded from {iso(last.end)} to {iso(end)}")
    return Clip("/".join(cam), out, chosen, inpoint, outpoint, holes, uncovered)


def _join(
    root: Path, segs: list[Seg], offset_from: float, offset_to: float, out: Path
) -> tuple[float, float | None]:
    """Join fragmented segments fragment by fragment (``fmp4``); (inpoint, outpoint) in
    seconds into the first and the last segment. Unsupported: use ffmpeg.

    The first and the last segment's boxes are read first (they decide where the clip
    starts and stops); every other segment's just before its media is copied, while
    the files ahead are being read from disk (``readahead``)."""
    paths = [root / seg.path for seg in segs]
    readahead.will_need(paths[-1])
    files = readahead.read_ahead(paths)
    head = fmp4.read(next(files))
    tail = fmp4.read(paths[-1]) if len(paths) > 1 else head

    def rel(layout: fmp4.Layout, i: int) -> float:
        frags = layout.fragments
        return (frags[i].decode_time - frags[0].decode_time) / layout.timescale

    begin = max(
        (i for i in range(len(head.fragments)) if rel(head, i) <= offset_from + 1e-6), default=0
    )
    floor = begin if len(paths) == 1 else 0
    stop = next(
        (i for i in range(floor + 1, len(tail.fragments)) if rel(tail, i) > offset_to + 1e-6), None
    )
    end = len(tail.fragments) if stop is None else stop

    def pieces() -> Iterator[fmp4.Piece]:
        if len(paths) == 1:
            yield fmp4.Piece(head, begin, end)
            return
        yield fmp4.Piece(head, begin, len(head.fragments))
        for path in itertools.islice(files, len(paths) - 2):
            layout = fmp4.read(path)
            yield fmp4.Piece(layout, 0, len(layout.fragments))
        yield fmp4.Piece(tail, 0, end)

    with open(out, "wb") as f:
        fmp4.write(pieces(), f)
    return rel(head, begin), None if stop is None else rel(tail, stop)


def _keyframe_at_or_before(path: Path, offset: float) -> float:
    """The file timestamp of the last keyframe at most ``offset`` seconds into the video."""
    if offset <= 0:
        return 0.0
    first, keys = probe.keyframes(path)
    return max((pts for pts, _ in keys if pts - first <= offset + 1e-6), default=0.0)


def _keyframe_after(path: Path, offset: float, floor: float) -> float | None:
    """Where to stop: the first keyframe more than ``offset`` seconds into the video
    (and after the timestamp ``floor``); None: at the file's end.

    The concat demuxer stops at a *decoding* time, so this is the keyframe's: every
    packet decoded before it belongs to the frames shown before it (closed GOPs)."""
    first, keys = probe.keyframes(path)
    after = [dts for pts, dts in keys if pts - first > offset + 1e-6 and pts > floor + 1e-6]
    return min(after, default=None)


def _concat(root: Path, segs: list[Seg], inpoint: float, outpoint: float | None, tmp: Path) -> None:
    import tempfile  # only this fallback needs it: not imported at every export's start

    with tempfile.TemporaryDirectory(prefix="livecam-export-") as work:
        listing = Path(work) / "segments.ffconcat"
        lines = ["ffconcat version 1.0"]
        for i, seg in enumerate(segs):
            quoted = str((root / seg.path).resolve()).replace("'", "'\\''")
            lines.append(f"file '{quoted}'")
            if i == 0 and inpoint > 0:
                lines.append(f"inpoint {inpoint:.6f}")
            if i == len(segs) - 1 and outpoint is not None:
                lines.append(f"outpoint {outpoint:.6f}")
        listing.write_text("\n".join(lines) + "\n")
        argv = ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
                "-f", "concat", "-safe", "0", "-i", str(listing),
                "-map", "0:v:0", "-c", "copy", "-movflags", "+faststart",
                "-f", "mp4", str(tmp)]  # fmt: skip
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            tmp.unlink(missing_ok=True)
            raise ExportError(f"ffmpeg failed: {exc}") from None
        if done.returncode != 0:
            tmp.unlink(missing_ok=True)
            detail = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise ExportError(f"ffmpeg failed: {detail}")
