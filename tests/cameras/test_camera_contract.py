"""The contract every camera backend keeps, checked on real recordings (see conftest)."""

from __future__ import annotations

from livecam.segment import Segment
from tests.cameras.conftest import FPS, RECORD_SECONDS, SEGMENT_SECONDS, Recording

# Enough closed segments to check anything: a backend that records nothing fails
# every test below, not only the two that count.
MIN_SEGMENTS = int(RECORD_SECONDS / SEGMENT_SECONDS) - 1


def test_recorder_stops_cleanly(recording: Recording):
    assert recording.exit_code == 0, recording.log
    assert len(recording.segments) >= MIN_SEGMENTS, recording.log


def test_segments_play_alone_from_zero(recording: Recording):
    assert len(recording.segments) >= MIN_SEGMENTS, recording.log
    for name, probe in recording.probes.items():
        assert probe["codec"] == "h264", name
        assert (probe["width"], probe["height"]) == (160, 120), name
        assert probe["frames"] > 0, name
        assert abs(probe["start"]) < 0.001, f"{name} starts at {probe['start']}s"
        assert len(recording.numbers[name]) == probe["frames"], name


def test_segments_close_on_time(recording: Recording):
    assert len(recording.segments) >= MIN_SEGMENTS, recording.log
    # The last one ends early: it is closed by the stop, not by the clock. The
    # keyframe interval equals the segment length, so the others are one segment
    # long to within a frame (a split lands on the keyframe nearest the clock).
    for seg in recording.segments[:-1]:
        duration = recording.probes[seg.name]["duration"]
        assert abs(duration - SEGMENT_SECONDS) <= 1.5 / FPS, f"{seg.name}: {duration}s"


def test_frames_consecutive_across_boundaries(recording: Recording):
    frames = [n for seg in recording.segments for n in recording.numbers[seg.name]]
    assert frames, recording.log
    first = frames[0]
    assert frames == list(range(first, first + len(frames))), "a frame lost or repeated"
    total = sum(p["frames"] for p in recording.probes.values())
    assert total == len(frames)


def test_segments_visible_only_when_closed(recording: Recording):
    assert len(recording.segments) >= MIN_SEGMENTS, recording.log
    assert recording.seen_unplayable == []
    assert recording.stray_files == []
    assert list(recording.open_dir.iterdir()) == []


def test_names_sort_in_time_order(recording: Recording):
    assert len(recording.segments) >= MIN_SEGMENTS, recording.log
    segments = [Segment.from_path(p) for p in recording.segments]
    assert all(segments), [p.name for p in recording.segments]
    assert [s.seq for s in segments] == sorted(s.seq for s in segments)
    assert [s.start for s in segments] == sorted(s.start for s in segments)
    firsts = [recording.numbers[p.name][0] for p in recording.segments]
    assert firsts == sorted(firsts)
