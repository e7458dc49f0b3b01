"""Debian's chromium, headless, driven by Selenium through Debian's chromedriver."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

webdriver = pytest.importorskip("selenium.webdriver")


def chromium() -> webdriver.Chrome:
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/bootstrap)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--mute-audio",
                "--autoplay-policy=no-user-gesture-required", "--window-size=1400,1000",
                "--disable-dev-shm-usage"):  # fmt: skip
        opts.add_argument(arg)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(options=opts, service=service)


def artifacts(tmp_path: Path) -> Path:
    """Where screenshots are kept: $LIVECAM_WEB_ARTIFACTS, else the test's tmp dir."""
    where = Path(os.environ.get("LIVECAM_WEB_ARTIFACTS") or tmp_path / "web-artifacts")
    where.mkdir(parents=True, exist_ok=True)
    return where
