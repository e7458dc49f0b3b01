"""Fixtures: real sshd (rrsync and chrooted SFTP accounts) and smbd on loopback.

The servers live for one test module; each test publishes below its own
directory, so tests do not see each other's files. ``nas`` gives a test one
transport's view: how to configure it, where its files land on the server, and
how to break and mend the server the way a real NAS breaks.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import pytest
from livecam_plugins.rsync import RsyncTransport
from livecam_plugins.sftp import SftpTransport
from livecam_plugins.smb import SmbTransport

from livecam.options import check_options
from livecam.transport import Transport
from tests.transports import servers
from tests.transports.servers import Smbd, Sshd

_dirs = itertools.count()


class Nas:
    """One transport's target on a real server, shaped like tests.core.node.Share."""

    def __init__(self, kind: str, server: Any):
        self.kind = kind
        self.server = server
        sub = f"t{os.getpid()}-{next(_dirs)}"
        if kind == "rsync":
            self.store, self.raw = server.rsync_root / sub, server.rsync_options(sub)
            self.cls, self.user = RsyncTransport, servers.RSYNC_USER
        elif kind == "sftp":
            self.store, self.raw = server.sftp_root / sub, server.sftp_options(f"/upload/{sub}")
            self.cls, self.user = SftpTransport, servers.SFTP_USER
        else:
            self.store, self.raw = server.share_root / sub, server.smb_options(sub)
            self.cls, self.user = SmbTransport, servers.SMB_USER
        self.transports: list[Transport] = []

    def options(self) -> dict[str, Any]:
        """The YAML ``transport:`` mapping for this target."""
        return dict(self.raw)

    def transport(self, timeout: float = 30) -> Transport:
        raw = {k: v for k, v in self.raw.items() if k != "plugin"}
        opts = check_options("transport", raw, self.cls.options)
        self.cls.check(opts, "transport")
        t = self.cls(opts, timeout=timeout)
        self.transports.append(t)
        return t

    def segments(self) -> dict[str, Path]:
        return {p.name: p for p in self.store.rglob("*.mp4") if not p.name.startswith(".")}

    def hidden(self) -> list[Path]:
        return [p for p in self.store.rglob(".*") if p.is_file()]

    def close(self) -> None:
        for t in self.transports:
            t.close()


@pytest.fixture(scope="session", autouse=True)
def _test_accounts():
    """The NAS accounts exist for the whole run and are removed after it."""
    yield
    for user in (servers.RSYNC_USER, servers.SFTP_USER, servers.SMB_USER):
        servers.remove_user(user)


@pytest.fixture(scope="module")
def base():
    b = servers.make_base()
    yield b
    servers.cleanup(b)


@pytest.fixture(scope="module")
def sshd(base):
    s = Sshd(base)
    s.start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def smbd(base):
    s = Smbd(base)
    s.start()
    yield s
    s.stop()


@pytest.fixture(params=["rsync", "sftp", "smb"])
def nas(request):
    """One transport against its real server (each test gets its own directory)."""
    kind = request.param
    server = request.getfixturevalue("smbd" if kind == "smb" else "sshd")
    n = Nas(kind, server)
    yield n
    n.close()
    if server.proc is None:  # a test that stopped its server must not break the next
        server.start()
