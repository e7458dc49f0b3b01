"""The pages in a real browser (chromium via Selenium): the NAS page plays across a
segment boundary, the node page's snapshot changes. Screenshots are kept."""

from __future__ import annotations

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
        browser.get(f"{web.url}/?token={TOKEN}")  # sets the cookie, redirects to /
        files = segment_files(tree, "cam0")
        day = f"{datetime.fromtimestamp(files[0].stat().st_mtime, UTC):%Y-%m-%d}"
        browser.execute_script(
            "const d=document.getElementById('day');d.value=arguments[0];d.onchange()", day
        )
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

        ActionChains(browser).move_to_element_with_offset(
            bar, int((frac - 0.5) * width), 0
        ).click().perform()
        players = "document.querySelectorAll('.player')"
        wait_for(lambda: browser.execute_script(f"return {players}.length") == 2, 10,
                 "a player per camera, side by side")  # fmt: skip

        def state() -> dict[str, Any]:
            return browser.execute_script(
                "const b=document.querySelector('.player[data-key=\"lab/node01/cam0\"]');"
                "const v=[...b.querySelectorAll('video')].find(v=>v.style.display!=='none');"
                "return {t:v.currentTime, paused:v.paused, crossed:+(b.dataset.crossed||0),"
                " at:+(b.dataset.at||0), src:v.currentSrc}"
            )

        wait_for(lambda: state()["t"] > 0.2, 20, "playback started")
        first = state()
        assert first["src"].endswith(seg["url"]) and abs(first["at"] - t) < 2.5, (first, t)
        browser.save_screenshot(str(shots / "nas-playing.png"))
        crossed = wait_for(lambda: (s := state())["crossed"] >= 1 and s["t"] > 0.3 and s, 20,
                           "playback across the segment boundary")  # fmt: skip
        assert crossed["src"].endswith(tl["segments"][2]["url"]) and not crossed["paused"]
        assert crossed["at"] > seg["start"] + seg["duration"]  # time runs on past the cut
        browser.save_screenshot(str(shots / "nas-crossed.png"))
        print(f"screenshots in {shots}")
    finally:
        web.stop()


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
