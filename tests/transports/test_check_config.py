"""`livecam check-config` catches a transport's mistakes with one line naming the key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import write_config
from tests.transports.servers import SMB_PASSWORD


def config(tmp_path, transport: dict) -> str:
    path = write_config(
        tmp_path / "livecam.yaml",
        {
            "cameras": {"cam0": {"pattern": "testsrc2"}},
            "buffer": {"path": str(tmp_path / "buffer")},
            "spool": {"path": str(tmp_path / "spool")},
            "transport": transport,
            "plugin_dirs": [],
        },
    )
    return str(path)


def ssh_transport(tmp_path, plugin: str, **changes) -> dict:
    key = tmp_path / "id"
    key.write_text("not really a key\n")
    key.chmod(0o600)
    known = tmp_path / "known_hosts"
    known.write_text("[nas.lan]:2222 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE\n")
    t = {
        "plugin": plugin,
        "host": "nas.lan",
        "port": 2222,
        "user": "node01",
        "path": "x",
        "identity_file": str(key),
        "known_hosts_file": str(known),
    }
    t.update(changes)
    return {k: v for k, v in t.items() if v is not None}


@pytest.mark.parametrize("plugin", ["rsync", "sftp"])
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"host": None}, "transport.host: required key is missing"),
        ({"identity_file": "/nonexistent/id"}, "transport.identity_file: /nonexistent/id does not"),
        ({"port": 22}, "transport.known_hosts_file: "),  # the pin is for port 2222 only
        ({"host": "other.lan"}, "has no key for [other.lan]:2222"),
        ({"porte": 22}, "transport.porte: unknown key"),
    ],
)
def test_ssh_transport_mistakes(tmp_path, run_livecam, plugin, changes, message):
    cfg = config(tmp_path, ssh_transport(tmp_path, plugin, **changes))
    result = run_livecam("-c", cfg, "check-config")
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_ssh_transport_ok(tmp_path, run_livecam):
    result = run_livecam("-c", config(tmp_path, ssh_transport(tmp_path, "rsync")), "check-config")
    assert result.returncode == 0, result.stderr
    assert "rsync to node01@nas.lan:2222 x" in result.stdout


def test_smb_password_file_checked_and_never_shown(tmp_path, run_livecam):
    t = {
        "plugin": "smb",
        "server": "nas.lan",
        "share": "cams",
        "username": "node01",
        "password_file": str(tmp_path / "missing"),
    }
    result = run_livecam("-c", config(tmp_path, t), "check-config")
    assert result.returncode == 2
    assert "transport.password_file:" in result.stderr
    (tmp_path / "pw").write_text(SMB_PASSWORD + "\n")
    (tmp_path / "pw").chmod(0o600)
    t["password_file"] = str(tmp_path / "pw")
    result = run_livecam("-c", config(tmp_path, t), "check-config")
    assert result.returncode == 0, result.stderr
    assert "(encrypted)" in result.stdout
    assert SMB_PASSWORD not in result.stdout + result.stderr


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
@pytest.mark.parametrize("plugin", ["rsync", "sftp", "smb"])
def test_secret_files_others_can_read_are_refused(tmp_path, run_livecam, plugin, mode):
    if plugin == "smb":
        secret = tmp_path / "pw"
        secret.write_text(SMB_PASSWORD + "\n")
        t = {"plugin": "smb", "server": "nas.lan", "share": "cams", "username": "node01",
             "password_file": str(secret)}  # fmt: skip
        name = "password_file"
    else:
        t = ssh_transport(tmp_path, plugin)
        secret, name = tmp_path / "id", "identity_file"
    cfg = config(tmp_path, t)
    secret.chmod(0o400)
    assert run_livecam("-c", cfg, "check-config").returncode == 0  # owner-only passes
    secret.chmod(mode)
    result = run_livecam("-c", cfg, "check-config")
    assert result.returncode == 2
    assert f"transport.{name}: permissions {mode:04o} for {secret} are too open" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert SMB_PASSWORD not in result.stdout + result.stderr


def test_without_paramiko_the_sftp_plugin_loads_and_check_config_says_so(tmp_path, run_livecam):
    # paramiko made unimportable for the livecam process only: a sitecustomize on
    # PYTHONPATH blocks the import the way a missing package fails it.
    blocker = tmp_path / "no-paramiko"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text("import sys\nsys.modules['paramiko'] = None\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(blocker), *sys.path])))
    probe = [sys.executable, "-c", "import paramiko"]
    assert subprocess.run(probe, capture_output=True).returncode == 0, "paramiko is installed"
    assert subprocess.run(probe, capture_output=True, env=env).returncode != 0, "and now blocked"
    # Imported only when used: the plugin list (which loads every plugin) still works.
    listed = run_livecam("plugins", env=env)
    assert listed.returncode == 0, listed.stderr
    assert "sftp" in listed.stdout
    path = config(tmp_path, ssh_transport(tmp_path, "sftp"))
    result = run_livecam("-c", path, "check-config", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "transport.plugin: sftp needs paramiko" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    # The same config with paramiko present is accepted.
    assert run_livecam("-c", path, "check-config").returncode == 0


@pytest.mark.parametrize("plugin", ["sftp", "smb"])
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"workers": 0}, "transport.workers: must be between 1 and 64, got 0"),
        ({"workers": "many"}, "transport.workers: expected a whole number"),
        ({"window": "lots"}, "transport.window: expected a size"),
        ({"window": "8K"}, "transport.window: must be at least 64K"),
    ],
)
def test_batch_option_mistakes(tmp_path, run_livecam, plugin, changes, message):
    if plugin == "smb":
        (tmp_path / "pw").write_text(SMB_PASSWORD + "\n")
        (tmp_path / "pw").chmod(0o600)
        t = {"plugin": "smb", "server": "nas.lan", "share": "cams", "username": "node01",
             "password_file": str(tmp_path / "pw")}  # fmt: skip
    else:
        t = ssh_transport(tmp_path, plugin)
    assert run_livecam("-c", config(tmp_path, {**t, "workers": 8, "window": "2M"}),
                       "check-config").returncode == 0  # fmt: skip
    result = run_livecam("-c", config(tmp_path, {**t, **changes}), "check-config")
    assert result.returncode == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_sftp_refuses_a_paramiko_whose_internals_moved(tmp_path, run_livecam):
    # One private method removed for the livecam process only (a sitecustomize on
    # PYTHONPATH), as an upgrade that renamed it would.
    patch = tmp_path / "moved"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(
        "import paramiko.sftp_client\ndel paramiko.sftp_client.SFTPClient._read_response\n"
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(patch), *sys.path])))
    path = config(tmp_path, ssh_transport(tmp_path, "sftp"))
    assert run_livecam("-c", path, "check-config").returncode == 0
    result = run_livecam("-c", path, "check-config", env=env)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "paramiko.sftp_client.SFTPClient._read_response" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
