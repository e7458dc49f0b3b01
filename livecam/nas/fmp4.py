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
import mmap
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class Unsupported(Exception):
    """Not a layout this module joins; use ffmpeg instead."""


@dataclass(frozen=True)
class Fragment:
    """One ``moof`` and the ``mdat`` after it, in a segment file."""

    offset: int  # of the moof
    moof: bytes
    mdat_size: int
    decode_time: int  # tfdt, in the track's timescale
    duration: int  # sum of its samples' durations
    first_cto: int  # composition offset of its first sample (B-frames: > 0)
    tfdt_at: int  # offsets inside ``moof`` of the fields rewritten
    tfdt_version: int
    seq_at: int


@dataclass(frozen=True)
class Layout:
    """A segment file: its init part (ftyp + moov), timescale and fragments."""

    path: Path
    init: bytes
    moov: bytes
    timescale: int
    fragments: list[Fragment]


def _boxes(data: bytes | mmap.mmap, start: int, end: int) -> Iterator[tuple[str, int, int, int]]:
    """(type, offset, size, header size) of each box in ``data[start:end]``."""
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", data, pos)
        header = 8
        if size == 1:
            if pos + 16 > end:
                return
            (size,) = struct.unpack_from(">Q", data, pos + 8)
            header = 16
        elif size == 0:
            size = end - pos
        if size < header or pos + size > end:
            return  # cut off (a salvaged segment ends mid-box): stop before it
        yield kind.decode("latin-1"), pos, size, header
        pos += size


def _child(data: bytes, start: int, end: int, kind: str) -> tuple[int, int, int]:
    for k, pos, size, header in _boxes(data, start, end):
        if k == kind:
            return pos, size, header
    raise Unsupported(f"no {kind} box")


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
    tops = _boxes(data, 0, size)
    ftyp, moov_box = next(tops, None), next(tops, None)
    if ftyp is None or moov_box is None or (ftyp[0], moov_box[0]) != ("ftyp", "moov"):
        raise Unsupported(f"{path.name}: not a fragmented MP4 (ftyp, moov first)")
    init_end = moov_box[1] + moov_box[2]
    init = data[:init_end]
    moov = init[moov_box[1] :]
    timescale, default_duration = _track(moov)
    fragments = []
    moof_at = moof_end = -1
    # _boxes stops before a box cut off by a crash: what precedes it is kept.
    for kind, pos, box_size, _ in tops:
        if kind == "moof":
            moof_at, moof_end = pos, pos + box_size
        elif kind == "mdat" and pos == moof_end:
            moof = data[moof_at:moof_end]
            fragments.append(_fragment(moof, moof_at, box_size, default_duration))
        else:
            break  # mfra, or a box no fragment has
    if not fragments:
        raise Unsupported(f"{path.name}: no complete fragment")
    return Layout(path, init, moov, timescale, fragments)


def _track(moov: bytes) -> tuple[int, int]:
    """(timescale, trex default sample duration) of the moov's only track."""
    traks = [b for b in _boxes(moov, 8, len(moov)) if b[0] == "trak"]
    if len(traks) != 1:
        raise Unsupported(f"{len(traks)} tracks")
    _, pos, size, header = traks[0]
    mdia = _child(moov, pos + header, pos + size, "mdia")
    mdhd = _child(moov, mdia[0] + mdia[2], mdia[0] + mdia[1], "mdhd")
    version = moov[mdhd[0] + 8]
    at = mdhd[0] + 8 + 4 + (16 if version == 1 else 8)
    (timescale,) = struct.unpack_from(">I", moov, at)
    mvex = _child(moov, 8, len(moov), "mvex")
    trex = _child(moov, mvex[0] + 8, mvex[0] + mvex[1], "trex")
    (default_duration,) = struct.unpack_from(">I", moov, trex[0] + 8 + 4 + 8)
    return timescale, default_duration


def _fragment(moof: bytes, offset: int, mdat_size: int, trex_duration: int) -> Fragment:
    mfhd = _child(moof, 8, len(moof), "mfhd")
    trafs = [b for b in _boxes(moof, 8, len(moof)) if b[0] == "traf"]
    if len(trafs) != 1:
        raise Unsupported(f"{len(trafs)} track fragments in one moof")
    _, tpos, tsize, theader = trafs[0]
    start, end = tpos + theader, tpos + tsize
    tfhd = _child(moof, start, end, "tfhd")
    tfdt = _child(moof, start, end, "tfdt")
    trun = _child(moof, start, end, "trun")
    flags = int.from_bytes(moof[tfhd[0] + 9 : tfhd[0] + 12], "big")
    at = tfhd[0] + 16 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
    default = struct.unpack_from(">I", moof, at)[0] if flags & 0x8 else trex_duration
    version = moof[tfdt[0] + 8]
    decode_time = struct.unpack_from(">Q" if version == 1 else ">I", moof, tfdt[0] + 12)[0]
    tflags = int.from_bytes(moof[trun[0] + 9 : trun[0] + 12], "big")
    (count,) = struct.unpack_from(">I", moof, trun[0] + 12)
    at = trun[0] + 16 + (4 if tflags & 0x1 else 0) + (4 if tflags & 0x4 else 0)
    fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if tflags & bit]
    # One unpack for the whole sample table: field k of sample i is values[i*n + k].
    n = len(fields)
    values = struct.unpack_from(f">{count * n}I", moof, at) if n else ()
    durations = values[fields.index(0x100) :: n] if 0x100 in fields else [default] * count
    duration = sum(durations)
    first_cto = 0
    if 0x800 in fields and count:
        cto = values[fields.index(0x800)]
        first_cto = cto - (1 << 32) if cto >= 1 << 31 else cto
    return Fragment(offset, moof, mdat_size, decode_time, duration, first_cto,
                    tfdt[0] + 12, version, mfhd[0] + 12)  # fmt: skip


def _edit_list(moov: bytes, media_time: int) -> bytes:
    """``moov`` with an edit list that starts the track at ``media_time`` (so it plays
    from 0 when its first frame is shown after its decode time)."""
    trak = next(b for b in _boxes(moov, 8, len(moov)) if b[0] == "trak")
    _, pos, size, header = trak
    if any(b[0] == "edts" for b in _boxes(moov, pos + header, pos + size)):
        return moov  # the segments carry their own
    elst = struct.pack(">I4sIIIiI", 28, b"elst", 0, 1, 0, media_time, 0x00010000)
    edts = struct.pack(">I4s", 8 + len(elst), b"edts") + elst
    tkhd = _child(moov, pos + header, pos + size, "tkhd")
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


def write(pieces: list[Piece], out: BinaryIO) -> int:
    """Write the clip; returns the number of fragments written."""
    first = pieces[0].layout
    for piece in pieces:
        if piece.layout.moov != first.moov:
            raise Unsupported(f"{piece.layout.path.name}: its moov differs from the first's")
    head = first.fragments[pieces[0].start]
    moov = _edit_list(first.moov, head.first_cto) if head.first_cto > 0 else first.moov
    ftyp_end = len(first.init) - len(first.moov)
    out.write(first.init[:ftyp_end] + moov)
    out.flush()
    clock, seq = 0, 1
    for piece in pieces:
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
                media = frag.offset + len(frag.moof) - base
                _put(out.fileno(), [moof, data[media : media + frag.mdat_size]])
                clock += frag.duration
                seq += 1
    return seq - 1


@contextlib.contextmanager
def _mapped(path: Path, frags: list[Fragment]) -> Iterator[tuple[memoryview, int]]:
    """The part of ``path`` that holds ``frags``, mapped and read in (``MAP_POPULATE``);
    and the file offset where that part begins.

    Copying out of the mapping costs one copy, from the segment's page cache to the
    clip's: fewer than ``cat`` (read into a buffer, write out of it) and, measured,
    fewer than ``copy_file_range``, which on a file system without shared extents
    copies through a pipe at ``cat``'s speed (docs/benchmarks.md). Segments on the NAS
    are written once and never truncated (a file cut shorter under a mapping would
    fault), and the file's size is checked against its fragments first."""
    base = frags[0].offset // mmap.ALLOCATIONGRANULARITY * mmap.ALLOCATIONGRANULARITY
    end = frags[-1].offset + len(frags[-1].moof) + frags[-1].mdat_size
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
