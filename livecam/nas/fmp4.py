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


def _boxes(data: bytes, start: int, end: int) -> Iterator[tuple[str, int, int, int]]:
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
    """Parse a segment file's boxes (reads everything but the media data)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(min(size, 1 << 16))
        boxes = list(_boxes(head, 0, len(head)))
        if len(boxes) < 2 or boxes[0][0] != "ftyp" or boxes[1][0] != "moov":
            raise Unsupported(f"{path.name}: not a fragmented MP4 (ftyp, moov first)")
        init_end = boxes[1][1] + boxes[1][2]
        init = head[:init_end]
        moov = init[boxes[1][1] : init_end]
        timescale, default_duration = _track(moov)
        fragments = []
        pos = init_end
        while pos + 8 <= size:
            f.seek(pos)
            moof_head = f.read(16)
            (box_size, kind) = struct.unpack_from(">I4s", moof_head)
            if kind != b"moof" or box_size < 8:
                break  # mfra, or the end of what a crash left
            f.seek(pos)
            moof = f.read(box_size)
            mdat_at = pos + box_size
            f.seek(mdat_at)
            mdat_head = f.read(8)
            if len(mdat_head) < 8 or mdat_head[4:8] != b"mdat":
                break
            (mdat_size,) = struct.unpack(">I", mdat_head[:4])
            if mdat_size < 8 or mdat_at + mdat_size > size:
                break  # a fragment cut off by a crash: keep what precedes it
            fragments.append(_fragment(moof, pos, mdat_size, default_duration))
            pos = mdat_at + mdat_size
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
    duration, first_cto = 0, 0
    for i in range(count):
        values = dict(zip(fields, struct.unpack_from(">" + "I" * len(fields), moof, at),
                          strict=True))  # fmt: skip
        at += 4 * len(fields)
        duration += values.get(0x100, default)
        if i == 0 and 0x800 in values:
            cto = values[0x800]
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
    """Write the clip; returns the number of frames' worth of fragments written."""
    first = pieces[0].layout
    for piece in pieces:
        if piece.layout.moov != first.moov:
            raise Unsupported(f"{piece.layout.path.name}: its moov differs from the first's")
    head = first.fragments[pieces[0].start]
    moov = _edit_list(first.moov, head.first_cto) if head.first_cto > 0 else first.moov
    ftyp_end = len(first.init) - len(first.moov)
    out.write(first.init[:ftyp_end] + moov)
    clock, seq, written = 0, 1, 0
    for piece in pieces:
        with open(piece.layout.path, "rb") as src:
            for frag in piece.layout.fragments[piece.start : piece.stop]:
                moof = bytearray(frag.moof)
                struct.pack_into(">I", moof, frag.seq_at, seq)
                if frag.tfdt_version == 1:
                    struct.pack_into(">Q", moof, frag.tfdt_at, clock)
                elif clock < 1 << 32:
                    struct.pack_into(">I", moof, frag.tfdt_at, clock)
                else:
                    raise Unsupported("a 32-bit tfdt overflows")
                out.write(moof)
                out.flush()
                _copy(src, out, frag.offset + len(frag.moof), frag.mdat_size)
                clock += frag.duration
                seq += 1
                written += 1
    return written


def _copy(src: BinaryIO, out: BinaryIO, offset: int, size: int) -> None:
    """Copy ``size`` bytes at ``offset`` of ``src`` to the end of ``out``, in the kernel
    where it can (copy_file_range, sendfile)."""
    done = 0
    try:
        while done < size:
            n = os.copy_file_range(src.fileno(), out.fileno(), size - done, offset + done)
            if n == 0:
                raise Unsupported("the segment got shorter while it was copied")
            done += n
    except OSError:
        src.seek(offset + done)
        remaining = size - done
        while remaining:
            block = src.read(min(remaining, 1 << 20))
            if not block:
                raise Unsupported("the segment got shorter while it was copied") from None
            out.write(block)
            remaining -= len(block)
