"""rsync and sftp: a NAS whose host key is not pinned is a permanent error at run
time too (docs/transports.md: `StrictHostKeyChecking=yes` against
`known_hosts_file` only; sftp's `RejectPolicy`), not only in check-config. The
changed-key case is tests/transports/test_contract.py."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from livecam.storage.files import file_digest
from livecam.transport import PermanentError
from tests.conftest import sha256


@pytest.mark.parametrize("nas", ["rsync", "sftp"], indirect=True)
def test_a_host_key_not_pinned_at_run_time_is_permanent(nas, tmp_path):
    t = nas.transport()  # check-config passed: the host was pinned then
    seg = tmp_path / "cam0-20261126T121530Z-000001.mp4"
    seg.write_bytes(os.urandom(100_000))
    remote = f"lab/node01/cam0/2026-11-26/{seg.name}"
    known = nas.server.known_hosts
    pinned = known.read_text()
    # The file now pins another host only (a NAS moved to a new address, say).
    known.write_text("[192.0.2.7]:22 " + " ".join(pinned.split()[1:]) + "\n")
    try:
        with pytest.raises(PermanentError, match=r"(?i)host key|known_hosts") as err:
            t.publish(seg, remote, size=seg.stat().st_size, digest=file_digest(seg))
        assert "\n" not in str(err.value)
        assert not nas.segments() and not nas.hidden()
    finally:
        known.write_text(pinned)
    assert t.publish(seg, remote, size=seg.stat().st_size, digest=file_digest(seg)) is True
    assert sha256(nas.segments()[seg.name]) == sha256(seg)


# Runs in a private mount namespace where /root (the user's home, as ssh and
# paramiko find it through the password database) is a directory the test
# planted: its ~/.ssh must change nothing.
_CHILD = """
import importlib, json, sys
from pathlib import Path
from livecam.options import check_options
from livecam.storage.files import file_digest
from livecam.transport import PermanentError
spec = json.loads(sys.argv[1])
cls = getattr(importlib.import_module(spec["module"]), spec["cls"])
opts = check_options("transport", spec["raw"], cls.options)
t = cls(opts, timeout=20)
seg = Path(spec["seg"])
try:
    t.publish(seg, spec["remote"], size=seg.stat().st_size, digest=file_digest(seg))
    print("published")
except PermanentError as exc:
    print("permanent:", exc)
finally:
    t.close()
"""


@pytest.mark.parametrize("nas", ["rsync", "sftp"], indirect=True)
def test_nothing_from_the_users_ssh_directory_leaks_in(nas, tmp_path):
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True, mode=0o700)
    # A config that would send every connection nowhere, were it read.
    (home / ".ssh" / "config").write_text(
        "Host *\n  ProxyCommand /bin/false\n  Port 1\n  User nobody\n"
    )
    known = nas.server.known_hosts
    pinned = known.read_text()

    def run(seg_name: str) -> str:
        seg = tmp_path / seg_name
        seg.write_bytes(os.urandom(50_000))
        raw = {k: v for k, v in nas.raw.items() if k != "plugin"}
        spec = {
            "module": nas.cls.__module__,
            "cls": nas.cls.__name__,
            "raw": raw,
            "seg": str(seg),
            "remote": f"lab/node01/cam0/2026-11-26/{seg.name}",
        }
        # Everything else of the real home stays (Python itself may live there).
        script = (
            'for e in /root/* /root/.[!.]*; do n=${e##*/}; [ -e "$e" ] && [ "$n" != .ssh ] '
            '&& { [ -d "$e" ] && mkdir -p "$1/$n" || touch "$1/$n"; } '
            '&& mount --bind "$e" "$1/$n"; done; '
            'mount --rbind "$1" /root && shift && exec "$@"'
        )
        cmd = ["unshare", "-m", "sh", "-c", script, "_", str(home)]
        control = subprocess.run(
            [*cmd, "ssh", "-G", "127.0.0.1"], capture_output=True, text=True, check=True
        )
        # The control: in that namespace ssh does read the planted config.
        assert "proxycommand /bin/false" in control.stdout
        out = subprocess.run(
            [*cmd, sys.executable, "-c", _CHILD, json.dumps(spec, default=str)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    # 1. ~/.ssh/config is not read: the publish goes where the options say.
    assert run("cam0-20261126T121530Z-000001.mp4") == "published"
    assert "cam0-20261126T121530Z-000001.mp4" in nas.segments()
    # 2. ~/.ssh/known_hosts is not consulted: it holds the NAS's real key while
    # known_hosts_file pins another host only, and the publish is refused.
    (home / ".ssh" / "known_hosts").write_text(pinned)
    known.write_text("[192.0.2.7]:22 " + " ".join(pinned.split()[1:]) + "\n")
    try:
        said = run("cam0-20261126T121531Z-000002.mp4")
    finally:
        known.write_text(pinned)
    assert said.startswith("permanent:") and re.search(r"(?i)host key|known_hosts", said), said
    assert "cam0-20261126T121531Z-000002.mp4" not in nas.segments()
