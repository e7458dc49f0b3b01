"""State files: many threads change the state, one writes the file."""

from __future__ import annotations

import json
import threading

from livecam.storage.state import RecorderState, StateFile


def test_changes_from_many_threads_are_all_counted_and_the_file_stays_whole(tmp_path):
    path = tmp_path / "recorder-cam0.json"
    state = StateFile(path, RecorderState(camera="cam0", backend="ffmpeg", pid=1, started=0.0))
    stop = threading.Event()
    seen: list[int] = []

    def writer() -> None:  # the one writer, as in the recorder
        while not stop.is_set():
            if state.wait_changed(timeout=0.1):
                state.save()
                seen.append(json.loads(path.read_text())["dropped_frames"])

    def dropper() -> None:  # e.g. an encoder thread reporting dropped frames
        for _ in range(2000):
            with state.edit() as st:
                st.dropped_frames += 1

    w = threading.Thread(target=writer)
    w.start()
    droppers = [threading.Thread(target=dropper) for _ in range(4)]
    for t in droppers:
        t.start()
    for t in droppers:
        t.join()
    stop.set()
    w.join()
    state.save()
    assert seen, "the writer saved while the others changed the state"
    assert seen == sorted(seen), "each save is a consistent snapshot"
    data = json.loads(path.read_text())
    assert data["dropped_frames"] == 8000
    assert set(data) == {
        "camera",
        "backend",
        "pid",
        "started",
        "state",
        "segments",
        "restarts",
        "dropped_frames",
        "bad_segments",
        "salvaged",
        "clock_steps",
        "last_clock_step",
        "spool_failed",
        "last_segment",
        "last_closed_at",
        "last_error",
    }
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "no temp file left"
