"""One fragment of a fragmented MP4 (a ``moof`` and its ``mdat``): reading its boxes, and
keeping the complete frames of one a crash cut off.

A salvaged segment (its camera or recorder killed mid-segment) ends wherever the
crash left it, often inside the media data of its last fragment. The frames whose
bytes are all there still play (ffmpeg decodes them, and the salvage counted them),
so that fragment is kept with its sample table trimmed to them: the ``trun`` lists
only the complete samples, and the ``mdat`` holds only their bytes.
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Iterator
from dataclasses import dataclass


class Unsupported(Exception):
    """Not a layout the fragment join handles; use ffmpeg instead."""


@dataclass(frozen=True)
class Fragment:
    """One ``moof`` and the media after it, as a clip copies them."""

    offset: int  # of the moof in the segment file
    moof: bytes  # as it goes into a clip (trimmed, for a fragment cut off)
    media_at: int  # where in the file the bytes to copy after ``moof`` begin
    media_size: int
    mdat_header: bytes  # written before those bytes ("": they begin with the mdat's own)
    decode_time: int  # tfdt, in the track's timescale
    duration: int  # sum of its samples' durations
    first_cto: int  # composition offset of its first sample (B-frames: > 0)
    tfdt_at: int  # offsets inside ``moof`` of the fields rewritten
    tfdt_version: int
    seq_at: int


def boxes(data: bytes | mmap.mmap, start: int, end: int) -> Iterator[tuple[str, int, int, int]]:
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


def child(data: bytes, start: int, end: int, kind: str) -> tuple[int, int, int]:
    """(offset, size, header size) of the first ``kind`` box in ``data[start:end]``."""
    for k, pos, size, header in boxes(data, start, end):
        if k == kind:
            return pos, size, header
    raise Unsupported(f"no {kind} box")


@dataclass(frozen=True)
class _Run:
    """Where a moof's parts are, and its sample table (field k of sample i is
    ``values[i * len(fields) + k]``)."""

    traf_at: int
    trun_at: int
    trun_end: int
    tflags: int
    count: int
    entries_at: int
    fields: list[int]
    values: tuple[int, ...]
    default_duration: int
    tfdt_at: int
    tfdt_version: int
    seq_at: int

    def column(self, bit: int) -> tuple[int, ...]:
        n = len(self.fields)
        return self.values[self.fields.index(bit) :: n] if bit in self.fields else ()


def _run(moof: bytes, trex_duration: int) -> _Run:
    mfhd = child(moof, 8, len(moof), "mfhd")
    trafs = [b for b in boxes(moof, 8, len(moof)) if b[0] == "traf"]
    if len(trafs) != 1:
        raise Unsupported(f"{len(trafs)} track fragments in one moof")
    _, tpos, tsize, theader = trafs[0]
    start, end = tpos + theader, tpos + tsize
    tfhd = child(moof, start, end, "tfhd")
    tfdt = child(moof, start, end, "tfdt")
    trun = child(moof, start, end, "trun")
    flags = int.from_bytes(moof[tfhd[0] + 9 : tfhd[0] + 12], "big")
    at = tfhd[0] + 16 + (8 if flags & 0x1 else 0) + (4 if flags & 0x2 else 0)
    default = struct.unpack_from(">I", moof, at)[0] if flags & 0x8 else trex_duration
    tflags = int.from_bytes(moof[trun[0] + 9 : trun[0] + 12], "big")
    (count,) = struct.unpack_from(">I", moof, trun[0] + 12)
    at = trun[0] + 16 + (4 if tflags & 0x1 else 0) + (4 if tflags & 0x4 else 0)
    fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if tflags & bit]
    values = struct.unpack_from(f">{count * len(fields)}I", moof, at) if fields else ()
    return _Run(
        traf_at=tpos,
        trun_at=trun[0],
        trun_end=trun[0] + trun[1],
        tflags=tflags,
        count=count,
        entries_at=at,
        fields=fields,
        values=values,
        default_duration=default,
        tfdt_at=tfdt[0] + 12,
        tfdt_version=moof[tfdt[0] + 8],
        seq_at=mfhd[0] + 12,
    )


def _fragment(
    moof: bytes, offset: int, run: _Run, count: int, media: tuple[int, int, bytes]
) -> Fragment:
    version = run.tfdt_version
    decode_time = struct.unpack_from(">Q" if version == 1 else ">I", moof, run.tfdt_at)[0]
    durations = run.column(0x100)[:count] or (run.default_duration,) * count
    ctos = run.column(0x800)
    first_cto = (ctos[0] - (1 << 32) if ctos[0] >= 1 << 31 else ctos[0]) if ctos else 0
    media_at, media_size, mdat_header = media
    return Fragment(
        offset=offset,
        moof=moof,
        media_at=media_at,
        media_size=media_size,
        mdat_header=mdat_header,
        decode_time=decode_time,
        duration=sum(durations),
        first_cto=first_cto,
        tfdt_at=run.tfdt_at,
        tfdt_version=version,
        seq_at=run.seq_at,
    )


def parse(moof: bytes, offset: int, mdat_size: int, trex_duration: int) -> Fragment:
    """A whole fragment: ``moof`` at ``offset``, then an ``mdat`` of ``mdat_size`` bytes."""
    run = _run(moof, trex_duration)
    return _fragment(moof, offset, run, run.count, (offset + len(moof), mdat_size, b""))


def cut(
    moof: bytes, offset: int, payload_at: int, available: int, trex_duration: int
) -> Fragment | None:
    """The complete samples of a fragment whose ``mdat`` payload (at ``payload_at``) has
    only ``available`` bytes in the file; None if not one sample is whole (or the
    sample table gives no sizes, or the data does not follow the moof directly)."""
    run = _run(moof, trex_duration)
    sizes = run.column(0x200)
    if not sizes or not run.tflags & 0x1 or run.tfdt_at > run.trun_at:
        return None
    (data_offset,) = struct.unpack_from(">i", moof, run.trun_at + 16)
    if offset + data_offset != payload_at:
        return None
    keep, total = 0, 0
    while keep < len(sizes) and total + sizes[keep] <= available:
        total += sizes[keep]
        keep += 1
    if keep == 0:
        return None
    # The sample table without the samples that are not all there; every size it is
    # part of, and the data offset (the moof got shorter), to match.
    cut_at = run.entries_at + keep * len(run.fields) * 4
    new = bytearray(moof[:cut_at] + moof[run.trun_end :])
    shorter = len(moof) - len(new)
    for at in (0, run.traf_at, run.trun_at):
        struct.pack_into(">I", new, at, struct.unpack_from(">I", new, at)[0] - shorter)
    struct.pack_into(">I", new, run.trun_at + 12, keep)
    struct.pack_into(">i", new, run.trun_at + 16, len(new) + 8)
    header = struct.pack(">I4s", 8 + total, b"mdat")
    return _fragment(bytes(new), offset, run, keep, (payload_at, total, header))
