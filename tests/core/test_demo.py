"""The README's first command: `livecam run --demo` on a fresh checkout records,
ships to ./livecam-demo/nas, and runs with a working spool (not RAM-only); all of it
under ./livecam-demo, so a demo in another directory shares nothing with it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import livecam_cmd

pytestmark = pytest.mark.slow


def cameras(nas: Path) -> dict[str, int]:
    """Segments on the demo's NAS per camera (loss records live beside them)."""
    return {cam: len(list(nas.rglob(f"{cam}-*.mp4"))) for cam in ("cam0", "cam1")}


def test_the_demo_records_ships_and_has_a_spool_in_a_fresh_directory(tmp_path):
    shm_before = set(Path("/dev/shm").iterdir())
    proc = subprocess.Popen(
        livecam_cmd("run", "--demo"),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    nas = tmp_path / "livecam-demo" / "nas"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not all(cameras(nas).values()):
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, log = proc.communicate(timeout=30)
    assert proc.returncode == 0, log
    shipped = cameras(nas)
    assert all(shipped.values()), (shipped, log)  # both cameras' segments arrived
    assert (tmp_path / "livecam-demo" / "spool").is_dir()
    status = subprocess.run(
        livecam_cmd("status", "--demo", "--json"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert json.loads(status.stdout)["spool_failed"] is None
    assert "SPOOL FAILED" not in log
    # Every path of it under ./livecam-demo: nothing machine-wide, so a second
    # checkout's demo starts from nothing, and its status says the tiers are not there.
    demo = tmp_path / "livecam-demo"
    assert {p.name for p in demo.iterdir()} >= {"buffer", "spool", "nas"}
    made = set(Path("/dev/shm").iterdir()) - shm_before  # other tests may make their own
    assert not [p for p in made if p.name.startswith("livecam")], made
    other = tmp_path / "other-checkout"
    other.mkdir()
    elsewhere = subprocess.run(
        livecam_cmd("status", "--demo"), cwd=other, capture_output=True, text=True, timeout=30
    )
    assert elsewhere.returncode == 1
    assert f"buffer directory {other}/livecam-demo/buffer does not exist" in elsewhere.stdout
    assert "cam0-" not in elsewhere.stdout, elsewhere.stdout
