"""The README's first command: `livecam run --demo` on a fresh checkout records,
ships to ./livecam-demo/nas, and runs with a working spool (not RAM-only)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import livecam_cmd

pytestmark = pytest.mark.slow

DEMO_BUFFER = Path("/dev/shm/livecam-demo")  # fixed by livecam/demo.yaml


def cameras(nas: Path) -> dict[str, int]:
    """Segments on the demo's NAS per camera (loss records live beside them)."""
    return {cam: len(list(nas.rglob(f"{cam}-*.mp4"))) for cam in ("cam0", "cam1")}


def test_the_demo_records_ships_and_has_a_spool_in_a_fresh_directory(tmp_path):
    shutil.rmtree(DEMO_BUFFER, ignore_errors=True)
    try:
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
    finally:
        shutil.rmtree(DEMO_BUFFER, ignore_errors=True)
