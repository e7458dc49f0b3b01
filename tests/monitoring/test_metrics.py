"""Metrics rendering: `promtool check metrics` clean, every required family, from status."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from livecam.ops import metrics as textfile
from livecam.ops import prometheus as metrics
from tests.conftest import write_config

STATUS = {
    "node": "node01",
    "site": 'lab "west"\\1',
    "time": 1700000000.5,
    "spool_failed": "spool /var/lib/livecam/spool is mounted read-only",
    "cameras": {
        "cam0": {"state": "recording", "segments": 12, "restarts": 1, "dropped_frames": 3,
                 "last_closed_at": 1699999990.25, "started": 1699999000.0, "clock_steps": 2},
        "cam1": {"state": "dead", "segments": 0, "last_closed_at": None,
                 "started": 1699999500.0},
        "cam2": {"state": "never started"},
    },
    "tiers": {
        "buffer": {"segments": 1, "bytes": 1000, "max_bytes": 2000, "oldest_age": 3.5},
        "spool": {"segments": 0, "bytes": 0, "max_bytes": 10_000, "oldest_age": None},
    },
    "shipper": {
        "state": "alarm", "transport": "rsync to nas:/srv", "lag": 42.0,
        "backlog_segments": 2, "backlog_bytes": 3000, "published": 7, "published_bytes": 7000,
        "failures_by_kind": {"transient": 4, "conflict": 1},
        "last_error": {"permanent": True, "message": "host key changed", "time": 1.0},
        "last_success": {"time": 1699999900.0},
        "evicted_by": {"cam0/spool": 2}, "evicted_bytes": 2000,
    },
}  # fmt: skip

REQUIRED = {
    "livecam_camera_up", "livecam_segments_closed_total",
    "livecam_last_segment_timestamp_seconds", "livecam_dropped_frames_total",
    "livecam_camera_restarts_total", "livecam_tier_bytes", "livecam_tier_max_bytes",
    "livecam_tier_segments", "livecam_tier_oldest_age_seconds",
    "livecam_published_segments_total", "livecam_published_bytes_total",
    "livecam_publish_failures_total", "livecam_evicted_segments_total",
    "livecam_shipper_lag_seconds", "livecam_shipper_alarm", "livecam_info",
    "livecam_spool_failed", "livecam_clock_steps_total",
}  # fmt: skip


def samples(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def render(status=STATUS) -> str:
    return metrics.render(status, segment_seconds=30, version="0.1.0")


@pytest.mark.skipif(not shutil.which("promtool"), reason="needs promtool")
def test_promtool_check_metrics_finds_nothing_to_complain_about():
    text = render()
    assert "livecam_camera_up" in text
    result = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True,
                            text=True, timeout=30)  # fmt: skip
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_every_required_family_is_there_with_help_and_type():
    text = render()
    for name in REQUIRED:
        assert f"# HELP {name} " in text and f"# TYPE {name} " in text, name
    assert all(name.endswith("_total") for name in REQUIRED if f"# TYPE {name} counter" in text)


def test_values_come_from_status():
    got = samples(render())
    assert got['livecam_camera_up{camera="cam0"}'] == 1
    assert got['livecam_camera_up{camera="cam1"}'] == 0
    assert got['livecam_segments_closed_total{camera="cam0"}'] == 12
    assert got['livecam_last_segment_timestamp_seconds{camera="cam0"}'] == 1699999990.25
    # never closed one since its recorder started: the start counts, so the alert ages
    assert got['livecam_last_segment_timestamp_seconds{camera="cam1"}'] == 1699999500.0
    assert 'livecam_last_segment_timestamp_seconds{camera="cam2"}' not in got
    assert got['livecam_tier_oldest_age_seconds{tier="spool"}'] == 0
    assert got['livecam_publish_failures_total{kind="transient"}'] == 4
    assert got['livecam_publish_failures_total{kind="permanent"}'] == 0
    assert got['livecam_publish_failures_total{kind="conflict"}'] == 1
    assert got['livecam_evicted_segments_total{camera="cam0",tier="spool"}'] == 2
    assert got['livecam_evicted_segments_total{camera="cam2",tier="buffer"}'] == 0
    assert got["livecam_shipper_alarm"] == 1 and got["livecam_shipper_up"] == 1
    assert got["livecam_shipper_lag_seconds"] == 42
    assert got["livecam_segment_seconds"] == 30
    assert got["livecam_spool_failed"] == 1
    assert got['livecam_clock_steps_total{camera="cam0"}'] == 2
    assert got['livecam_clock_steps_total{camera="cam1"}'] == 0
    healthy = samples(render({**STATUS, "spool_failed": None}))
    assert healthy["livecam_spool_failed"] == 0


def test_label_values_are_escaped():
    text = render()
    assert 'site="lab \\"west\\"\\\\1"' in text


def test_a_status_missing_keys_still_renders():
    text = metrics.render({"cameras": {"cam0": None}, "shipper": "?"}, segment_seconds=2,
                          version="x")  # fmt: skip
    got = samples(text)
    assert got['livecam_camera_up{camera="cam0"}'] == 0
    assert got["livecam_shipper_up"] == 0


def test_status_prometheus_and_the_writer_from_the_command_line(run_livecam, tmp_path):
    config = write_config(tmp_path / "livecam.yaml", {
        "node": "n1", "cameras": {"cam0": {"backend": "ffmpeg", "pattern": "testsrc2"}},
        "buffer": {"path": str(tmp_path / "buffer")}, "spool": {"path": str(tmp_path / "spool")},
        "transport": {"plugin": "local", "path": str(tmp_path / "nas")}, "plugin_dirs": [],
    })  # fmt: skip
    out = run_livecam("-c", str(config), "status", "--prometheus")
    assert out.returncode == 0, out.stderr
    got = samples(out.stdout)
    assert got['livecam_camera_up{camera="cam0"}'] == 0  # never started
    assert got["livecam_shipper_up"] == 0

    # The writer refuses a file that is not in RAM: one line, exit code 2.
    disk = tmp_path / "livecam.prom"
    refused = run_livecam("-c", str(config), "metrics", "--textfile", str(disk))
    assert refused.returncode == 2 and not disk.exists()
    assert "not a RAM filesystem" in refused.stderr and len(refused.stderr.splitlines()) == 1


def test_textfile_is_replaced_atomically_in_ram(tmp_path):
    ram = Path(tempfile.mkdtemp(prefix="lcmon-", dir="/dev/shm"))
    try:
        target = ram / "livecam.prom"
        textfile.check_textfile(target)
        textfile.write_textfile(target, "a 1\n")
        textfile.write_textfile(target, "a 2\n")
        assert target.read_text() == "a 2\n"
        assert [p.name for p in ram.iterdir()] == ["livecam.prom"]  # no temp file left
        assert oct(target.stat().st_mode & 0o777) == "0o644"
    finally:
        shutil.rmtree(ram)
