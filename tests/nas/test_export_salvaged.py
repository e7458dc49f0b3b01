"""Export across a salvaged segment: a camera killed mid-segment, its segment kept.

A real node (``livecam run``, 4 s segments, a keyframe every 0.5 s) has cam0's ffmpeg
killed about 2 s into a segment; the recorder salvages what plays of it. ffmpeg
writes each fragment at once when it ends, so a kill seldom lands inside one; to
have that case every time, the salvaged file on the NAS is then cut inside the
media of its last fragment, mid-frame, as a kill during that write leaves it. The
clip across it must hold every whole frame of every segment in the span, in
order, once each: the cut fragment's whole frames too, only the frame the cut
went through missing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest

from tests.core.node import Node, wait_for
from tests.nas.conftest import landed, nas, nfs_node, segment_files
from tests.nas.test_export import frame_md5s, start_of

pytestmark = pytest.mark.slow

CAM = {"size": [160, 120], "fps": 10, "bitrate": "300k", "preset": "ultrafast",
       "keyframe_seconds": "500ms", "pattern": "testsrc2"}  # fmt: skip


def packets(path: Path) -> list[tuple[int, int]]:
    """(byte position, size) of each video packet ffprobe finds, in decoding order."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
         "packet=pos,size", "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return [(int(p["pos"]), int(p["size"])) for p in json.loads(out)["packets"]]


def open_age(node: Node) -> float | None:
    """Seconds since cam0's open segment was created (None: none open right now)."""
    try:
        opened = next((node.buffer / "cam0" / ".open").glob("*"))
        return time.time() - opened.stat().st_ctime
    except (StopIteration, FileNotFoundError):
        return None


def test_export_across_a_salvaged_segment_cut_mid_fragment(tmp_path: Path):
    with nfs_node(tmp_path, cameras={"cam0": CAM}, segment_seconds=4) as (node, share):
        proc = node.start()
        wait_for(lambda: len(node.closed()) >= 2, 40, "two segments closed")
        # Kill the camera about 2 s into its open segment.
        [age] = wait_for(lambda: [a for a in [open_age(node)] if a is not None and a < 1.5],
                         20, "a segment just opened")  # fmt: skip
        time.sleep(2.2 - age)
        pids = wait_for(lambda: node.pids("ffmpeg", "cam0/.open"), 10, "cam0's ffmpeg")
        os.kill(pids[0], signal.SIGKILL)
        wait_for(lambda: "salvaged" in node.log_text(), 30, "the recorder salvaged it")
        mark = len(node.closed())
        wait_for(lambda: len(node.closed()) >= mark + 2, 40, "recording again")
        assert node.stop(proc) == 0
        node.drain()
        root = landed(share, tmp_path / "nasroot")

    records = [json.loads(p.read_text()) for p in root.rglob("loss-*.json")]
    [salvaged] = [r for r in records if r["kind"] == "salvaged"]
    files = segment_files(root, "cam0")
    seqs = [int(p.stem.rsplit("-", 1)[1]) for p in files]
    i = seqs.index(salvaged["sequences"][0])
    assert 0 < i < len(files) - 1, "segments before and after the salvaged one"
    cut = files[i]
    assert 0 < salvaged["detail"]["frames"] < 40, salvaged  # shorter than a whole 4 s segment
    # Cut it mid-frame inside a fragment, after that fragment's keyframe (5 frames a
    # fragment: one every 0.5 s at 10 fps): the last frame that is not a keyframe.
    whole = packets(cut)
    k = max(j for j in range(len(whole)) if j % 5)
    os.truncate(cut, whole[k][0] + whole[k][1] // 2)
    kept = [p for p in whole if p[0] + p[1] <= cut.stat().st_size]
    assert len(kept) == k and k % 5, "cut inside a fragment, after whole frames of it"

    out = tmp_path / "clip.mp4"
    done = nas("export", "lab/node01/cam0", "--root", str(root),
               "--from", start_of(files[i - 1]).isoformat(),
               "--to", (start_of(files[i + 1]) + timedelta(seconds=1.2)).isoformat(),
               "-o", str(out))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "3 segments" in done.stdout, done.stdout
    # The previous segment whole, the salvaged one's whole frames, the next one's
    # frames before its keyframe at 1.5 s (the first after --to at 1.2 s).
    expected = frame_md5s(files[i - 1]) + frame_md5s(cut)[: len(kept)]
    expected += frame_md5s(files[i + 1])[:15]
    got = frame_md5s(out)
    assert len(set(expected)) == len(expected), "the test pattern repeats a frame"
    assert got == expected, f"{len(got)} frames exported, {len(expected)} expected"
