"""Joining fragmented MP4 segments by their fragments: a stream copy at the speed of a copy.

livecam's ffmpeg backend writes fragmented MP4 (``ftyp moov (moof mdat)* mfra``),
one fragment per keyframe interval, every fragment's data offsets relative to its
own ``moof``. Segments of one camera share one ``moov`` (same codec, same
parameters), so one clip is: the first segment's ``ftyp``+``moov``, then the
chosen fragments of every segment, each ``moof`` copied with two fields
rewritten: its sequence number and its decode time (``tfdt``), which runs on from
the previous fragment's end. The media bytes (``mdat``) are copied untouched.

A clip starts at a fragment, so at a keyframe; when its first frame is shown
after its decode time (B-frames), an edit list makes the clip play from 0.

Anything else (segments that differ in their ``moov``, more than one track, a
64-bit-less ``tfdt`` overflowing) raises ``Unsupported``: the caller then lets
ffmpeg's concat demuxer do it.
"""

from __future__ import annotations

import contextlib
import itertools
import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from livecam.nas.fragments import Fragment, Unsupported, boxes, child, cut, parse


@dataclass(frozen=True)
class Layout:
    """A segment file: its init part (ftyp + moov), timescale and fragments."""

    path: Path
    init: bytes
    moov: bytes
    timescale: int
    fragments: list[Fragment]


def read(path: Path) -> Layout:
    """Parse a segment file's boxes: it is mapped, and only its boxes are touched (the
    pages of the media data are not read)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < 16:
            raise Unsupported(f"{path.name}: too short for a segment ({size} bytes)")
        with mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as data:
            return _layout(path, data, size)


def _layout(path: Path, data: mmap.mmap, size: int) -> Layout:
    tops = boxes(data, 0, size)
    ftyp, moov_box = next(tops, None), next(tops, None)
    if ftyp is None or moov_box is None or (ftyp[0], moov_box[0]) != ("ftyp", "moov"):
        raise Unsupported(f"{path.name}: not a fragmented MP4 (ftyp, moov first)")
    init_end = moov_box[1] + moov_box[2]
    init = data[:init_end]
    moov = init[moov_box[1] :]
    timescale, default_duration = _track(moov)
    fragments = []
    moof_at = moof_end = -1
    # boxes() stops before a box cut off by a crash: what precedes it is kept.
    for kind, pos, box_size, _ in tops:
        if kind == "moof":
            moof_at, moof_end = pos, pos + box_size
        elif kind == "mdat" and pos == moof_end:
            fragments.append(parse(data[moof_at:moof_end], moof_at, box_size, default_duration))
            moof_at = -1
        else:
            break  # mfra, or a box no fragment has
    if moof_at >= 0 and data[moof_end + 4 : moof_end + 8] == b"mdat":
        # The last fragment's media was cut off (a salvaged segment): its whole frames.
        payload = moof_end + (16 if struct.unpack_from(">I", data, moof_end)[0] == 1 else 8)
        last = cut(data[moof_at:moof_end], moof_at, payload, size - payload, default_duration)
        fragments += [last] if last is not None else []
    if not fragments:
        raise Unsupported(f"{path.name}: no complete fragment")
    return Layout(path, init, moov, timescale, fragments)


def _track(moov: bytes) -> tuple[int, int]:
    """(timescale, trex default sample duration) of the moov's only track."""
    traks = [b for b in boxes(moov, 8, len(moov)) if b[0] == "trak"]
    if len(traks) != 1:
        raise Unsupported(f"{len(traks)} tracks")
    _, pos, size, header = traks[0]
    mdia = child(moov, pos + header, pos + size, "mdia")
    mdhd = child(moov, mdia[0] + mdia[2], mdia[0] + mdia[1], "mdhd")
    version = moov[mdhd[0] + 8]
    at = mdhd[0] + 8 + 4 + (16 if version == 1 else 8)
    (timescale,) = struct.unpack_from(">I", moov, at)
    mvex = child(moov, 8, len(moov), "mvex")
    trex = child(moov, mvex[0] + 8, mvex[0] + mvex[1], "trex")
    (default_duration,) = struct.unpack_from(">I", moov, trex[0] + 8 + 4 + 8)
    return timescale, default_duration


def _edit_list(moov: bytes, media_time: int) -> bytes:
    """``moov`` with an edit list that starts the track at ``media_time`` (so it plays
    from 0 when its first frame is shown after its decode time)."""
    trak = next(b for b in boxes(moov, 8, len(moov)) if b[0] == "trak")
    _, pos, size, header = trak
    if any(b[0] == "edts" for b in boxes(moov, pos + header, pos + size)):
        return moov  # the segments carry their own
    elst = struct.pack(">I4sIIIiI", 28, b"elst", 0, 1, 0, media_time, 0x00010000)
    edts = struct.pack(">I4s", 8 + len(elst), b"edts") + elst
    tkhd = child(moov, pos + header, pos + size, "tkhd")
    cut = tkhd[0] + tkhd[1]
    new = bytearray(moov[:cut] + edts + moov[cut:])
    struct.pack_into(">I", new, 0, len(new))
    struct.pack_into(">I", new, pos, size + len(edts))
    return bytes(new)


@dataclass(frozen=True)
class Piece:
    """The fragments of one segment that go into a clip, by index (``stop`` excluded)."""

    layout: Layout
    start: int
    stop: int


def write(pieces: Iterable[Piece], out: BinaryIO) -> int:
    """Write the clip; returns the number of fragments written.

    ``pieces`` may be produced as the clip reaches them (a generator that reads each
    segment's boxes just before its media is copied): a segment whose ``moov``
    differs raises ``Unsupported`` there, leaving ``out`` incomplete."""
    rest = iter(pieces)
    lead = next(rest)
    first = lead.layout
    head = first.fragments[lead.start]
    moov = _edit_list(first.moov, head.first_cto) if head.first_cto > 0 else first.moov
    ftyp_end = len(first.init) - len(first.moov)
    out.write(first.init[:ftyp_end] + moov)
    out.flush()
    clock, seq = 0, 1
    for piece in itertools.chain([lead], rest):
        if piece.layout.moov != first.moov:
            raise Unsupported(f"{piece.layout.path.name}: its moov differs from the first's")
        frags = piece.layout.fragments[piece.start : piece.stop]
        with _mapped(piece.layout.path, frags) as (data, base):
            for frag in frags:
                moof = bytearray(frag.moof)
                struct.pack_into(">I", moof, frag.seq_at, seq)
                if frag.tfdt_version == 1:
                    struct.pack_into(">Q", moof, frag.tfdt_at, clock)
                elif clock < 1 << 32:
                    struct.pack_into(">I", moof, frag.tfdt_at, clock)
                else:
                    raise Unsupported("a 32-bit tfdt overflows")
                media = frag.media_at - base
                _put(out.fileno(), [moof, frag.mdat_header, data[media : media + frag.media_size]])
                clock += frag.duration
                seq += 1
    return seq - 1


@contextlib.contextmanager
def _mapped(path: Path, frags: list[Fragment]) -> Iterator[tuple[memoryview, int]]:
    """The part of ``path`` that holds ``frags``, mapped and read in (``MAP_POPULATE``);
    and the file offset where that part begins.

    Copying out of the mapping costs one copy, from the segment's page cache to the
    clip's, as ``copy_file_range`` does (GNU ``cat`` 9 uses it); measured, it is 15-20 %
    faster than ``copy_file_range``, which on a file system without shared extents
    splices through a pipe (docs/benchmarks.md). Segments on the NAS
    are written once and never truncated (a file cut shorter under a mapping would
    fault), and the file's size is checked against its fragments first."""
    base = frags[0].offset // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
    end = frags[-1].media_at + frags[-1].media_size
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < end:
            raise Unsupported(f"{path.name}: the segment got shorter since it was read")
        flags = mmap.MAP_SHARED | mmap.MAP_POPULATE
        with mmap.mmap(f.fileno(), end - base, flags, mmap.PROT_READ, offset=base) as data:
            view = memoryview(data)
            try:
                yield view, base
            finally:
                view.release()


def _put(fd: int, parts: list[bytes | bytearray | memoryview]) -> None:
    """Write ``parts`` in one ``writev``, finishing a short write."""
    views = [memoryview(p) for p in parts]
    while views:
        done = os.writev(fd, views)
        while views and done >= len(views[0]):
            done -= len(views.pop(0))
        if views:
            views[0] = views[0][done:]
