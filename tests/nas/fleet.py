"""A NAS reached over rsync by two nodes, as the Ansible NAS role sets it up.

Real OpenSSH sshd on loopback (a free port), one account ``lcnas-rsync`` (this
suite's own), and one key per node restricted with ``rrsync`` (the NAS role's
options: ``-wo -no-del -no-lock -no-overwrite``) to that node's directory
``<root>/<site>/<node>``: a node can add recordings there and nothing else. The
nodes use ``remote_path: {camera}/{date}/{name}``, as the node role does for
rsync, so the NAS tree is ``<root>/<site>/<node>/<camera>/<date>/<name>``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from tests.transports.servers import (
    RRSYNC_OPTIONS,
    Daemon,
    ensure_user,
    free_port,
    keygen,
    remove_user,
)

USER = "lcnas-rsync"
CLOCK_STEP = '''
"""Test site plugin: once the file {flag!r} exists, this process's naming clock is an
hour ahead, the way an NTP step moves it. Only the naming clock moves: segment names
come from it (``clock.now()``) or pass through it (``clock.at()`` of the frames'
``time.time()``), so stepping ``time.time`` as well would step those names twice.
The machine's real clock is shared and must not be stepped by a test."""
import os
from livecam import hookimpl
import livecam.storage.clock as _clock

FLAG = {flag!r}


@hookimpl
def livecam_segment_closed(segment):
    if os.path.exists(FLAG):
        _clock.offset = lambda: 3600.0  # livecam.storage.clock's test seam
'''


class RsyncNas(Daemon):
    """sshd whose only account writes through rrsync -wo, one directory per node key."""

    def __init__(self, site: str, nodes: list[str]):
        super().__init__()
        Path("/srv").mkdir(exist_ok=True)
        self.base = Path(tempfile.mkdtemp(prefix="livecam-nastest-", dir="/srv"))
        self.base.chmod(0o755)
        self.port = free_port()
        self.dir = self.base / "sshd"
        self.dir.mkdir(mode=0o755)
        self.log = self.dir / "sshd.log"
        self.host_key = keygen(self.dir / "host_ed25519")
        self.root = self.base / "recordings"
        account = ensure_user(USER)
        lines = []
        self.keys: dict[str, Path] = {}
        for node in nodes:
            target = self.root / site / node
            target.mkdir(parents=True)
            for d in (self.root, self.root / site, target):
                os.chown(d, account.pw_uid, account.pw_gid)
            self.keys[node] = keygen(self.base / f"key-{node}")
            pub = self.keys[node].with_suffix(".pub").read_text().strip()
            lines.append(f'command="rrsync {RRSYNC_OPTIONS} {target}",restrict {pub}')
        keys = self.dir / "authorized_keys"
        keys.write_text("\n".join(lines) + "\n")
        self.known_hosts = self.base / "known_hosts"
        key = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} {key[0]} {key[1]}\n")
        self.config = self.dir / "sshd_config"
        self.config.write_text(f"""\
ListenAddress 127.0.0.1
Port {self.port}
HostKey {self.host_key}
PidFile none
AuthorizedKeysFile {keys}
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers {USER}
""")
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)

    def argv(self) -> list[str]:
        return ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config)]

    def start(self) -> None:
        self._spawn("127.0.0.1", self.port)

    def transport(self, node: str) -> dict[str, Any]:
        """The node's YAML ``transport:`` mapping."""
        return {"plugin": "rsync", "host": "127.0.0.1", "port": self.port, "user": USER,
                "path": ".", "identity_file": str(self.keys[node]),
                "known_hosts_file": str(self.known_hosts)}  # fmt: skip

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
        remove_user(USER)
