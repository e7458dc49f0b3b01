"""The command line's rough edges a newcomer hits first."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from livecam import config as configmod
from livecam import status as statusmod
from tests.conftest import livecam_cmd, write_config


def small_config(tmp_path: Path, **camera: object) -> Path:
    return write_config(
        tmp_path / "livecam.yaml",
        {
            "node": "node01",
            "cameras": {"cam0": {"backend": "ffmpeg", **camera}},
            "buffer": {"path": str(tmp_path / "buffer")},
            "spool": {"path": str(tmp_path / "spool")},
            "transport": {"plugin": "local", "path": str(tmp_path / "nas")},
            "plugin_dirs": [],
        },
    )


def test_plugins_lists_what_is_installed_without_a_config_file(tmp_path, run_livecam):
    assert not configmod.DEFAULT_PATH.exists(), "this test needs no /etc/livecam/livecam.yaml"
    env = {k: v for k, v in os.environ.items() if k != "LIVECAM_CONFIG"}
    result = run_livecam("plugins", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    assert "registers camera backend ffmpeg" in result.stdout
    assert "registers transport rsync" in result.stdout
    assert "registers tier buffer" in result.stdout
    # A config named but missing is still an error: the user asked for that file.
    result = run_livecam("-c", str(tmp_path / "absent.yaml"), "plugins")
    assert result.returncode == 2 and "config file not found" in result.stderr


@pytest.mark.parametrize("command", [["status", "--json"], ["status"], ["plugins"]])
def test_output_into_a_closed_pipe_ends_without_a_traceback(tmp_path, command):
    cfg = small_config(tmp_path)
    args = ["-c", str(cfg)] if command[0] == "status" else []  # plugins: no config at all
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader is gone before livecam writes: as `| head -c 10` can be
    try:
        result = subprocess.run(
            livecam_cmd(*args, *command),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            cwd=tmp_path,
        )
    finally:
        os.close(write_end)
    assert result.returncode == 1, "the write failed on the closed pipe"
    assert "Traceback" not in result.stderr and "BrokenPipeError" not in result.stderr
    assert result.stderr == "", result.stderr


def test_status_piped_into_head_ends_without_a_traceback(tmp_path):
    cfg = small_config(tmp_path)
    # And through a real shell pipeline: head gets its 10 bytes, no traceback on stderr.
    shell = subprocess.run(
        f"{livecam_cmd()[0]} -c {cfg} status --json | head -c 10",
        shell=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shell.stdout == '{\n  "node"'[:10]
    assert "Traceback" not in shell.stderr, shell.stderr


def test_check_config_fails_when_the_cameras_ffmpeg_is_not_installed(tmp_path, run_livecam):
    cfg = small_config(tmp_path)
    assert run_livecam("-c", str(cfg), "check-config").returncode == 0
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    result = run_livecam("-c", str(cfg), "check-config", env={**os.environ, "PATH": str(empty)})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cameras.cam0.ffmpeg: 'ffmpeg' is not an executable on PATH" in lines[0]
    cfg = small_config(tmp_path, ffmpeg="/opt/nowhere/ffmpeg")
    result = run_livecam("-c", str(cfg), "check-config")
    assert result.returncode == 2 and "cameras.cam0.ffmpeg: '/opt/nowhere/ffmpeg'" in result.stderr


@pytest.mark.parametrize(
    "args", [[], ["run"], ["record"], ["ship"], ["status"], ["check-config"], ["plugins"]]
)
def test_help_shows_no_rst_markup(run_livecam, args):
    result = run_livecam(*args, "--help")
    assert result.returncode == 0, result.stderr
    assert "usage: livecam" in result.stdout
    assert "``" not in result.stdout and ":param" not in result.stdout, result.stdout


def test_status_never_shows_a_negative_lag(tmp_path):
    cfg, plugins = configmod.load(small_config(tmp_path))
    state = cfg.buffer.path / ".livecam" / "shipper.json"
    state.parent.mkdir(parents=True)
    success = {"time": time.time(), "segment": "s", "remote": "r", "seconds": 0.1, "lag": -3.2}
    state.write_text(json.dumps({"state": "stopped", "last_success": success}))
    shown = statusmod.gather(cfg, plugins)["shipper"]["last_success"]
    assert shown["segment"] == "s", "the state file was read"
    assert shown["lag"] == 0.0
