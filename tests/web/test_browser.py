"""The pages in a real browser (chromium via Selenium): the NAS page plays across a
segment boundary, the node page's snapshot changes. Screenshots are kept."""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tests.core.node import Node, Share, wait_for
from tests.nas.conftest import nas, recorded, segment_files, tree  # noqa: F401 - fixtures
from tests.web.browser import artifacts, chromium
from tests.web.server import TOKEN, Web, token_file
from tests.web.test_node import CAMERAS
from tests.web.test_node import node as node

pytestmark = pytest.mark.slow


@pytest.fixture
def browser() -> Iterator[Any]:
    driver = chromium()
    try:
        yield driver
    finally:
        driver.quit()


def test_nas_page_plays_across_a_segment_boundary(
    tree: Path,  # noqa: F811 - the fixture
    tmp_path: Path,
    browser: Any,
) -> None:
    segment_files(tree, "cam0")[6].unlink()  # a hole the audit explains (not yet shipped)
    assert nas("nas", "index", "--root", str(tree)).returncode == 0
    web = Web("nas", "--root", str(tree), "--token-file", str(token_file(tmp_path)))
    shots = artifacts(tmp_path)
    try:
        files = segment_files(tree, "cam0")
        day = f"{datetime.fromtimestamp(files[0].stat().st_mtime, UTC):%Y-%m-%d}"
        # Sets the cookie and redirects to /?day=DAY: the page opens on that day.
        browser.get(f"{web.url}/?token={TOKEN}&day={day}")
        assert browser.current_url == f"{web.url}/?day={day}"
        assert browser.execute_script("return document.getElementById('day').value") == day
        wait_for(lambda: browser.execute_script(
            "return [...document.querySelectorAll('.bar')].filter(b=>b.dataset.segments>0).length"
        ) == 2, 20, "both timelines drawn")  # fmt: skip
        browser.find_element("id", "fit").click()
        bar = browser.find_element("css selector", '.camera[data-key="lab/node01/cam0"] .bar')
        holes = bar.find_elements("css selector", ".hole")
        assert len(holes) == 1 and "explained" in holes[0].get_attribute("class")
        assert "not yet shipped" in holes[0].get_attribute("title")
        browser.save_screenshot(str(shots / "nas-timeline.png"))
        # Click 1 s before the end of cam0's second segment.
        tl = browser.execute_script("return cams['lab/node01/cam0'].tl")
        seg = tl["segments"][1]
        t = seg["start"] + seg["duration"] - 1.0
        view = browser.execute_script("return view")
        frac = (t - view["from"]) / (view["to"] - view["from"])
        width = bar.size["width"]
        from selenium.webdriver import ActionChains

        browser.execute_script(WATCH_FRAMES)

        ActionChains(browser).move_to_element_with_offset(
            bar, int((frac - 0.5) * width), 0
        ).click().perform()
        players = "document.querySelectorAll('.player')"
        wait_for(lambda: browser.execute_script(f"return {players}.length") == 2, 10,
                 "a player per camera, side by side")  # fmt: skip
        wait_for(lambda: len(state(browser, "lab/node01/cam0")["frames"]) > 3, 20,
                 "playback started")  # fmt: skip
        first = state(browser, "lab/node01/cam0")
        assert first["mode"] == "mse" and abs(first["at"] - t) < 2.5, (first, t)
        browser.save_screenshot(str(shots / "nas-playing.png"))
        for key in ("lab/node01/cam0", "lab/node01/cam1"):
            crossed = wait_for(lambda k=key: (s := state(browser, k))["map"][1:]
                               and s["t"] > s["map"][1]["m0"] + 1.0 and s,
                               30, f"{key}: playback 1 s past a segment boundary")  # fmt: skip
            assert not crossed["paused"] and crossed["at"] > crossed["map"][0]["start"] + 1
            seam = seamless(crossed)
            print(f"{key}: the seam at media time {seam['boundary']:.3f} s: {seam}")
        browser.save_screenshot(str(shots / "nas-crossed.png"))

        # Across the hole: playback goes on from the last frame before it to the first
        # after it, and the time shown jumps over it.
        before, after = tl["segments"][5], tl["segments"][6]
        assert after["seq"] == before["seq"] + 2  # the removed segment between them
        browser.execute_script(
            "window.__since = performance.now(); for (const a of"
            " [...Object.values(window.__frames), ...Object.values(window.__waiting)])"
            " a.length = 0; playAll(arguments[0])",
            before["start"] + before["duration"] - 1,
        )
        key = "lab/node01/cam0"
        jumped = wait_for(lambda: (s := state(browser, key))["map"][1:]
                          and s["map"][0]["seq"] == before["seq"]
                          and s["t"] > s["map"][1]["m0"] + 1.0 and s,
                          30, "playback 1 s past the hole")  # fmt: skip
        seam = seamless(jumped)
        assert jumped["map"][1]["seq"] == after["seq"] and jumped["at"] > after["start"] + 0.5
        print(f"{key}: across the hole at media time {seam['boundary']:.3f} s: {seam}")
        print(f"screenshots in {shots}")
    finally:
        web.stop()


# Installed before the click: for every player's <video>, each frame the compositor
# presents (requestVideoFrameCallback: wall time, media time, frame count) and every
# "waiting" once playback has moved (the element ran out of data).
WATCH_FRAMES = """
window.__frames = {}; window.__waiting = {}; window.__since = 0;
new MutationObserver(() => {
  for (const b of document.querySelectorAll('.player')) {
    const v = b.querySelector('video'), k = b.dataset.key;
    if (v.__watched) continue; v.__watched = true;
    const f = window.__frames[k] = [], w = window.__waiting[k] = [];
    // Once playback has moved on by a frame: not the start's own wait for data.
    v.addEventListener('waiting', () => {
      if (f.length && f[f.length - 1][1] > f[0][1]) w.push(v.currentTime); });
    // A callback can come late with an earlier frame's time: frames before __since
    // (a new playback's start) are not this playback's.
    const cb = (now, m) => { if (now >= window.__since) f.push([now, m.mediaTime,
                             m.presentedFrames]); v.requestVideoFrameCallback(cb); };
    v.requestVideoFrameCallback(cb);
  }
}).observe(document.getElementById('players'), {childList: true});
"""


def state(browser: Any, key: str) -> dict[str, Any]:
    """What one camera's player shows: its video element, the media-to-wall time map,
    and what the page saw of it (frames, waits, played ranges)."""
    return browser.execute_script(
        'const k=arguments[0],b=document.querySelector(`.player[data-key="${k}"]`),'
        "v=b.querySelector('video'),pl=[];"
        "for(let i=0;i<v.played.length;i++)pl.push([v.played.start(i),v.played.end(i)]);"
        "return {t:v.currentTime, paused:v.paused, mode:b.dataset.mode, at:+(b.dataset.at||0),"
        " map:cams[k].player.map, played:pl, frames:window.__frames[k]||[],"
        " waiting:window.__waiting[k]||[]}",
        key,
    )


def seamless(s: dict[str, Any]) -> dict[str, float]:
    """Assert playback ran through the first segment boundary without a gap: the
    element played one unbroken media range across it, never waited for data near
    it, and presented frames on both sides of it whose media times are one frame
    apart and whose wall times are no further apart than the page's usual frame
    interval allows. Returns the figures."""
    boundary = s["map"][0]["m1"]
    frames = sorted(s["frames"])
    # A new playback restarts the element's presented-frame count: frames the old
    # one presented while the new one was being set up (a busy machine) are not it.
    restarts = [i for i in range(1, len(frames)) if frames[i][2] < frames[i - 1][2]]
    frames = frames[restarts[-1] :] if restarts else frames
    assert len(frames) > 10, "the page saw frames presented"
    walls = [b[0] - a[0] for a, b in itertools.pairwise(frames)]
    medias = sorted({round(f[1], 4) for f in frames})
    interval = statistics.median(b - a for a, b in itertools.pairwise(medias))
    usual = statistics.median(walls) / 1000
    before = [f for f in frames if f[1] < boundary - 0.001]
    after = [f for f in frames if f[1] >= boundary - 0.001]
    assert before and after, ("frames shown on both sides of the boundary", boundary, frames)
    last, first = before[-1], after[0]
    step, wall = first[1] - last[1], (first[0] - last[0]) / 1000
    assert 0 < step <= 1.5 * interval, ("no media jump at the seam", last, first, interval)
    ranges = [r for r in s["played"] if r[0] <= boundary <= r[1]]
    assert len(ranges) == 1 and ranges[0][1] > boundary + 0.5, ("played through", s["played"])
    assert not [w for w in s["waiting"] if abs(w - boundary) < 0.5], ("waited", s["waiting"])
    # The wall gap is what a viewer sees: at most two frame intervals, or no longer than
    # the worst gap between two other frames of the same page (on a loaded machine
    # every frame is late now and then, not only the one at the seam).
    others = [w / 1000 for w, a in zip(walls, frames, strict=False) if a is not last]
    assert wall <= max(2 * interval, max(others)), (wall, interval, usual, max(others))
    return {"boundary": boundary, "frame_interval": interval, "media_step": step,
            "wall_gap": wall, "usual_wall_gap": usual}  # fmt: skip


def test_node_page_snapshot_changes(
    node: tuple[Node, Share],
    tmp_path: Path,
    browser: Any,
) -> None:
    assert CAMERAS["cam0"]["snapshot_seconds"] == "1s"
    n, _ = node
    proc = n.start()
    web = Web("node", "-c", str(n.config_file), "--token-file", str(token_file(tmp_path)))
    shots = artifacts(tmp_path)
    try:
        wait_for((n.buffer / "cam0" / ".snapshot.jpg").exists, 60, "a first snapshot")
        browser.get(f"{web.url}/?token={TOKEN}")
        img = "document.querySelector('#cam-cam0 img')"
        wait_for(lambda: browser.execute_script(f"return {img}.naturalWidth") > 0, 20,
                 "the snapshot shown")  # fmt: skip
        one = browser.find_element("css selector", "#cam-cam0 img").screenshot_as_png
        browser.save_screenshot(str(shots / "node-1.png"))
        time.sleep(6)  # the page refreshes every 5 s, the camera every 1 s
        two = browser.find_element("css selector", "#cam-cam0 img").screenshot_as_png
        browser.save_screenshot(str(shots / "node-2.png"))
        assert one != two
        assert "recording" in browser.find_element("id", "cam-cam0").text
    finally:
        web.stop()
        n.stop(proc)
