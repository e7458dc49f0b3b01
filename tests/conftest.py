"""Shared helpers for every test: real ffprobe, digests, config files."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.groups import LONGEST_FIRST, group_of

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(os.environ.get("LIVECAM_BIN", REPO / ".venv" / "bin"))


def ffprobe(path: Path) -> dict[str, Any]:
    """Frames, duration and first timestamp of the video stream, decoded for real."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries",
         "stream=nb_read_frames,codec_name,width,height:format=duration,start_time",
         "-of", "json", str(path)],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    data = json.loads(out)
    stream = data["streams"][0]
    return {
        "frames": int(stream["nb_read_frames"]),
        "codec": stream["codec_name"],
        "width": stream["width"],
        "height": stream["height"],
        "duration": float(data["format"]["duration"]),
        "start": float(data["format"].get("start_time", 0.0)),
    }


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_config(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def command_lines() -> Iterator[tuple[int, str]]:
    """(pid, command line with spaces) of every process that can be read now."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        yield int(entry), raw.replace(b"\0", b" ").decode(errors="replace")


def livecam_cmd(*args: str) -> list[str]:
    return [str(VENV_BIN / "livecam"), *args]


@pytest.fixture
def run_livecam():
    """Run a livecam command to completion; returns CompletedProcess (text)."""

    def run(*args: str, timeout: float = 60, **kw: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            livecam_cmd(*args), capture_output=True, text=True, timeout=timeout, **kw
        )

    return run


# --- the suites side by side (tests/groups.py), and no silent skip ----------------------------


def pytest_itemcollected(item: pytest.Item) -> None:
    # Marked as each test is collected: xdist's worker reads the marks in its own
    # pytest_collection_modifyitems, which can run before this file's.
    item.add_marker(pytest.mark.xdist_group(group_of(item.nodeid)))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {group: i for i, group in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(group_of(item.nodeid), len(rank)))


# LIVECAM_TEST_LOCKS=1: take each group's lock (``/tmp/lc-lock-<group>``, as
# ``flock /tmp/lc-lock-<group> pytest -n0 tests/<suite>/...`` does) before its first
# test and hold it to the end of the session (its servers live until then), so a
# whole run can go on beside someone working on one suite. Off by default: a run
# started under ``flock`` would wait for itself.
_held: dict[str, Any] = {}


def pytest_runtest_setup(item: pytest.Item) -> None:
    group = group_of(item.nodeid)  # the group's lock only: a second one could deadlock
    os.environ["LIVECAM_TEST_GROUP"] = group  # for what a group keeps per machine
    if os.environ.get("LIVECAM_TEST_LOCKS") != "1":
        return
    if group not in _held:
        _held[group] = lock = open(f"/tmp/lc-lock-{group}", "a")  # noqa: SIM115
        fcntl.flock(lock, fcntl.LOCK_EX)


# A test that skipped proved nothing: the run fails when one skips, but for these,
# which exist for the other S3 store (each store's own test covers the same promise).
ALLOWED_SKIPS = {
    "tests/s3/test_contract.py::test_quota_exceeded_is_permanent[seaweedfs]":
        "SeaweedFS answers InternalError over its quota: test_full.py covers it",
    "tests/s3/test_full.py::test_over_quota_is_transient_named_and_recovers[rgw]":
        "RGW's quota is QuotaExceeded: test_contract.py covers it",
    "tests/s3/test_link.py::test_link_cut_in_front_of_rgw_mid_batch_then_restored[seaweedfs]":
        "SeaweedFS runs inside the namespace: test_link_cut_mid_batch_then_restored",
}  # fmt: skip

_skipped: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        nodeid = report.nodeid.split("@", 1)[0]  # xdist adds "@group"
        if nodeid not in ALLOWED_SKIPS:
            _skipped.append(nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if hasattr(session.config, "workerinput"):
        return  # an xdist worker: the controller sees every report and decides
    if _skipped and exitstatus == 0 and not session.config.getoption("collectonly"):
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _skipped:
        terminalreporter.section("skipped tests fail the run", red=True)
        for nodeid in _skipped:
            terminalreporter.line(f"SKIPPED, NOT ALLOWED: {nodeid}")
        terminalreporter.line(
            "a skipped test proves nothing: install what it needs (scripts/bootstrap) and run"
            " as root; only tests/conftest.py's ALLOWED_SKIPS may skip"
        )
