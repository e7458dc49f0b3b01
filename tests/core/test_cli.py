"""The command line's rough edges a newcomer hits first."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from livecam import build
from livecam import config as configmod
from livecam.ops import status as statusmod
from tests.conftest import livecam_cmd, write_config
from tests.core.node import Node, wait_for


def small_config(tmp_path: Path, **camera: object) -> Path:
    return write_config(
        tmp_path / "livecam.yaml",
        {
            "node": "node01",
            "cameras": {"cam0": {"backend": "ffmpeg", "pattern": "testsrc2", **camera}},
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
    cfg, plugins = build.load(small_config(tmp_path))
    state = cfg.buffer.path / ".livecam" / "shipper.json"
    state.parent.mkdir(parents=True)
    success = {"time": time.time(), "segment": "s", "remote": "r", "seconds": 0.1, "lag": -3.2}
    state.write_text(json.dumps({"state": "stopped", "last_success": success}))
    shown = statusmod.gather(cfg, build.disk(cfg, plugins))["shipper"]["last_success"]
    assert shown["segment"] == "s", "the state file was read"
    assert shown["lag"] == 0.0


def status_of(node: Node) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        livecam_cmd("-c", str(node.config_file), "status"),
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_status_tells_health_in_its_exit_code(tmp_path):
    """0 while every camera records and the shipper runs, 1 (and what is wrong, in its
    last line) when anything is down; --json answers 0 either way (its data says)."""
    node = Node(tmp_path / "node", {"plugin": "local", "path": str(tmp_path / "nas")})
    try:
        never = status_of(node)
        assert never.returncode == 1, never.stdout
        assert never.stdout.splitlines()[-1] == (
            "NOT OK: camera cam0 never started; camera cam1 never started; shipper never started;"
            f" buffer directory {node.buffer} does not exist;"
            f" spool directory {node.spool} does not exist"
        )
        proc = node.start()
        wait_for(lambda: len(list((tmp_path / "nas").rglob("cam1-*.mp4"))) >= 2, 60, "shipping")
        healthy = status_of(node)
        assert healthy.returncode == 0, healthy.stdout
        assert healthy.stdout.splitlines()[-1] == "OK: every camera records, shipping"
        assert node.stop(proc) == 0
        stopped = status_of(node)
        assert stopped.returncode == 1
        assert "camera cam0 stopped" in stopped.stdout and "shipper stopped" in stopped.stdout
        as_json = subprocess.run(
            livecam_cmd("-c", str(node.config_file), "status", "--json"),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert as_json.returncode == 0 and json.loads(as_json.stdout)["shipper"]["state"] == (
            "stopped"
        )
    finally:
        node.cleanup()


def test_under_systemd_every_log_line_carries_its_journal_priority(tmp_path, monkeypatch):
    """sd-daemon(3): ``<N>`` before each line, no timestamp of our own, only when
    stderr is the journal's stream ($JOURNAL_STREAM names its device and inode)."""
    import logging

    from livecam.ops import logs

    path = tmp_path / "stderr"
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        for journal in (f"{st.st_dev}:{st.st_ino}", "1:2"):  # ours, then another stream's
            monkeypatch.setenv("JOURNAL_STREAM", journal)
            root.handlers = []
            logs.setup(logging.INFO, stream=stream)
            log = logging.getLogger("livecam.shipper")
            log.info("published x")
            log.warning("EVICTED y")
            try:
                raise ValueError("boom")
            except ValueError:
                log.exception("ERROR z")
            stream.flush()
    root.handlers, root.level = kept
    lines = path.read_text().splitlines()
    cut = next(i for i, line in enumerate(lines) if not line.startswith("<"))
    journal, terminal = lines[:cut], lines[cut:]
    assert journal[0].startswith("<6>INFO livecam.shipper[") and "published x" in journal[0]
    assert journal[1].startswith("<4>WARNING livecam.shipper[")
    assert journal[2].startswith("<3>ERROR livecam.shipper[")
    assert len(journal) > 4 and all(line.startswith("<3>") for line in journal[2:])  # traceback
    assert terminal[0][:4].isdigit() and " INFO livecam.shipper[" in terminal[0]  # a timestamp
