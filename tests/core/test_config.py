"""A bad config gets one clear line naming the key, exit code 2, and nothing starts."""

from __future__ import annotations

import pytest

from livecam.options import ConfigError, parse_bitrate, parse_duration, parse_size
from tests.conftest import write_config


def good(tmp_path) -> dict:
    return {
        "node": "node01",
        "cameras": {"cam0": {"backend": "ffmpeg", "pattern": "testsrc2", "size": [320, 240]}},
        "buffer": {"path": str(tmp_path / "buffer")},
        "spool": {"path": str(tmp_path / "spool")},
        "transport": {"plugin": "nfs", "path": str(tmp_path / "nas")},
        "plugin_dirs": [],
    }


def change(config: dict, dotted: str, value) -> dict:
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node.setdefault(key, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return config


class _Delete:
    """The key is removed (its repr is fixed, so every xdist worker names the test alike)."""

    def __repr__(self) -> str:
        return "<deleted>"


DELETE = _Delete()

# (what to change, value, words the one-line error must contain)
BAD = [
    ("spool.max_bytes", "20Q", ["spool.max_bytes", "size such as"]),
    ("buffer.max_bytes", -5, ["buffer.max_bytes", "negative"]),
    ("segment_seconds", "thirty", ["segment_seconds", "duration"]),
    ("segment_seconds", 0, ["segment_seconds", "longer than zero"]),
    ("spill_after", "5 parsecs", ["spill_after", "duration"]),
    ("retry.initial", "2m", ["retry.initial", "retry.max"]),
    ("cameras", {}, ["cameras", "at least one camera"]),
    ("cameras", DELETE, ["cameras", "at least one camera"]),
    ("cameras.cam0.backend", "webcam9000", ["cameras.cam0.backend", "webcam9000", "ffmpeg"]),
    ("cameras.../etc", {}, ["cameras.../etc", "letters, digits"]),
    ("cameras.cam0.size", [1280], ["cameras.cam0.size", "[width, height]"]),
    ("cameras.cam0.fps", "fast", ["cameras.cam0.fps", "whole number"]),
    ("cameras.cam0.bitrate", "5 megs", ["cameras.cam0.bitrate", "bit rate"]),
    ("cameras.cam0.colour", "blue", ["cameras.cam0.colour", "unknown key", "bitrate"]),
    ("cameras.cam0.input", "/dev/video0", ["cameras.cam0.input", "-i"]),
    # No silent test picture: an ffmpeg camera names its input, or asks for a pattern.
    ("cameras.cam0.pattern", DELETE, ["cameras.cam0.input", "missing", "pattern: testsrc2"]),
    ("cameras.cam0.input", "-f v4l2 -i /dev/video0", ["cameras.cam0.pattern", "not both"]),
    ("transport.plugin", "carrier-pigeon", ["transport.plugin", "carrier-pigeon", "nfs"]),
    ("transport", DELETE, ["transport", "required"]),
    ("transport.path", DELETE, ["transport.path", "required"]),
    ("transport.fstypes", [], ["transport.fstypes", "at least one"]),
    ("transport.hostname", "nas", ["transport.hostname", "unknown key"]),
    ("remote_path", "{site}/{cam}/{name}", ["remote_path", "{cam}", "{camera}"]),
    ("remote_path", "{site}/{node}", ["remote_path", "{name}"]),
    ("remote_path", "../{name}", ["remote_path", ".."]),
    ("colour", "blue", ["colour", "unknown key", "transport"]),
    ("buffer.path", "SAME", ["spool.path", "differ"]),
    ("log_level", "loud", ["log_level", "debug"]),
]


@pytest.mark.parametrize(("key", "value", "words"), BAD, ids=[f"{k}={v!r}" for k, v, _ in BAD])
def test_bad_config_gets_one_clear_line_and_exit_2(tmp_path, run_livecam, key, value, words):
    config = good(tmp_path)
    if key.startswith("cameras.../"):
        config["cameras"] = {"../etc": {}}
    else:
        if value == "SAME":
            value = config["spool"]["path"]
        change(config, key, value)
    path = write_config(tmp_path / "livecam.yaml", config)
    result = run_livecam("-c", str(path), "check-config")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith(f"livecam: error: {path}: ")
    for word in words:
        assert word in lines[0], lines[0]
    # check-config creates nothing even on a good config, so "nothing starts" is
    # proven by the commands that would start something: each refuses with the
    # same line before it creates a tier, a state file or a child.
    for command in (["run"], ["record", "cam0"], ["ship"]):
        started = run_livecam("-c", str(path), *command, timeout=30)
        assert started.returncode == 2, (command, started.stdout + started.stderr)
        assert started.stderr.strip() == lines[0], (command, started.stderr)
    for tier in ("buffer", "spool", "nas"):
        assert not (tmp_path / tier).exists(), f"{tier} created on a bad config"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("cameras: [unclosed", ["not valid YAML", ":1"]),
        ("- just\n- a list\n", ["mapping"]),
        ("", ["mapping"]),
    ],
)
def test_unparsable_files(tmp_path, run_livecam, text, words):
    path = tmp_path / "livecam.yaml"
    path.write_text(text)
    result = run_livecam("-c", str(path), "check-config")
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    for word in words:
        assert word in result.stderr


def test_missing_file_names_the_ways_to_give_one(tmp_path, run_livecam):
    result = run_livecam("-c", str(tmp_path / "nope.yaml"), "status")
    assert result.returncode == 2
    assert "config file not found" in result.stderr and "--demo" in result.stderr


def test_config_found_from_the_environment(tmp_path, run_livecam):
    import os

    path = write_config(tmp_path / "env.yaml", good(tmp_path))
    env = {**os.environ, "LIVECAM_CONFIG": str(path)}
    result = run_livecam("check-config", env=env)
    assert result.returncode == 0, result.stderr
    assert f"{path}: OK" in result.stdout
    # -c wins over the environment, after the subcommand as well as before it.
    other = write_config(tmp_path / "other.yaml", good(tmp_path))
    result = run_livecam("check-config", "-c", str(other), env=env)
    assert f"{other}: OK" in result.stdout


def test_good_config_fills_documented_defaults(tmp_path):
    from livecam import build

    cfg, _ = build.load(write_config(tmp_path / "c.yaml", good(tmp_path)))
    assert cfg.segment_seconds == 30
    assert cfg.spill_after == 30  # one segment length
    assert cfg.spool.max_bytes == 10 * 1024**3 and cfg.spool.min_free_bytes == 1024**3
    assert cfg.buffer.max_bytes == 200 * 1024**2
    assert cfg.retry_initial == 1 and cfg.retry_max == 60
    assert cfg.remote_path == "{site}/{node}/{camera}/{date}/{name}"
    assert cfg.cameras["cam0"].options["bitrate"] == 5_000_000
    assert cfg.transport["fstypes"] == ["nfs", "nfs4"]


def test_units():
    assert parse_size("200M") == 200 * 1024**2
    assert parse_size("10G") == 10 * 1024**3
    assert parse_size("1.5K") == 1536
    assert parse_size(4096) == 4096
    assert parse_bitrate("5M") == 5_000_000 and parse_bitrate("800k") == 800_000
    assert parse_duration("30s") == 30 and parse_duration("5m") == 300
    assert parse_duration("500ms") == 0.5 and parse_duration(2) == 2.0
    for bad in ("20Q", "M", "", "1..5G", True):
        with pytest.raises(ConfigError):
            parse_size(bad)
    for bad in ("thirty", "5 parsecs", "-1s", False):
        with pytest.raises(ConfigError):
            parse_duration(bad)


def test_demo_config_is_valid(run_livecam, tmp_path):
    result = run_livecam("--demo", "check-config", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "cam0 (ffmpeg, TEST PATTERN testsrc2), cam1 (ffmpeg, TEST PATTERN smptebars)" in (
        result.stdout
    )
    # The demo's config says so itself, to whoever copies it.
    from livecam import config as configmod

    demo = configmod.DEMO_PATH.read_text()
    assert "TEST PATTERNS, not cameras" in demo
    assert "pattern: testsrc2" in demo and "pattern: smptebars" in demo


def test_a_test_pattern_camera_is_named_as_such(tmp_path, run_livecam):
    """check-config, status and status --json say which camera records a test pattern,
    and name no real camera so."""
    import json

    config = good(tmp_path)
    config["cameras"]["door"] = {"backend": "ffmpeg", "input": "-f v4l2 -i /dev/video0"}
    path = write_config(tmp_path / "livecam.yaml", config)
    checked = run_livecam("-c", str(path), "check-config")
    assert checked.returncode == 0, checked.stderr
    assert "cameras: cam0 (ffmpeg, TEST PATTERN testsrc2), door (ffmpeg)" in checked.stdout
    text = run_livecam("-c", str(path), "status").stdout
    lines = {line.split()[0]: line for line in text.splitlines() if line.startswith("  ")}
    assert "TEST PATTERN testsrc2" in lines["cam0"], text
    assert "TEST PATTERN" not in lines["door"], text
    data = json.loads(run_livecam("-c", str(path), "status", "--json").stdout)
    assert data["cameras"]["cam0"]["test_pattern"] == "testsrc2"
    assert data["cameras"]["door"]["test_pattern"] is None
