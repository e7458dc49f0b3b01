"""Fixtures: real sshd (rrsync and chrooted SFTP accounts) and smbd on loopback.

The servers live for one test module; each test publishes below its own
directory, so tests do not see each other's files. ``nas`` gives a test one
transport's view: how to configure it, where its files land on the server, and
how to break and mend the server the way a real NAS breaks.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from livecam_plugins.rsync import RsyncTransport
from livecam_plugins.sftp import SftpTransport
from livecam_plugins.smb import SmbTransport

from livecam.options import check_options
from livecam.storage.files import file_digest
from livecam.transport import Item, TransientError, Transport
from tests.conftest import sha256
from tests.core.node import Target
from tests.transports import servers
from tests.transports.servers import Smbd, Sshd

_dirs = itertools.count()


def _temp(path: Path) -> bool:
    """A publish temp: ``.<name>.part``, or one written beside a leftover (``-<hex>``)."""
    return path.name.startswith(".") and re.search(r"\.part(-[0-9a-f]{8})?$", path.name) is not None


class Nas(Target):
    """One transport's target on a real server: ``store`` is its directory there."""

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
        super().__init__(self.store)
        self.transports: list[Transport] = []

    def hidden(self) -> list[Path]:
        """Temp files left on the NAS. The sftp and smb accounts may not remove
        anything (``internal-sftp -P``; Samba's vfs_worm, as the NAS role sets them
        up), so a failed attempt's temp stays there, immutable, for the NAS's
        retention, and on smb every published segment keeps its temp as a second
        name (the transport links instead of renaming): not counted here."""
        left = super().hidden()
        if self.kind == "sftp":
            left = [p for p in left if not (_temp(p) and p.stat().st_mode & 0o777 == 0o444)]
        elif self.kind == "smb":
            left = [p for p in left if not (_temp(p) and p.stat().st_mode & 0o222 == 0)]
        return left

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

    def close(self) -> None:
        for t in self.transports:
            t.close()


def backlog(tmp_path: Path, count: int, size: int = 50_000) -> list[Item]:
    """``count`` segments of two cameras over three days: six remote directories."""
    items = []
    for i in range(count):
        cam, day = f"cam{i % 2}", f"2026-11-{24 + i % 3}"
        path = tmp_path / f"{cam}-20261126T1215{i:02d}Z-{i:06d}.mp4"
        path.write_bytes(os.urandom(size))
        items.append(Item(path, f"lab/node01/{cam}/{day}/{path.name}", size, file_digest(path)))
    return items


class Attempt:
    """Runs ``fn`` in a thread, so a test can break the server while it is in flight."""

    def __init__(self, fn: Callable[[], Any]):
        self.result: Any = None
        self.error: Exception | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        t0 = time.monotonic()
        try:
            self.result = fn()
        except Exception as exc:
            self.error = exc
        self.seconds = time.monotonic() - t0

    def failed_transient(self, timeout: float) -> None:
        """Wait for the attempt; it must have failed as transient, not hung."""
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "publish hung on a dead server or link"
        assert isinstance(self.error, TransientError), (self.result, self.error)


@dataclass
class Span:
    """One rsync run of a transport: when it started and ended, the files it carried."""

    start: float
    end: float = float("inf")
    names: frozenset[str] = frozenset()

    @classmethod
    def of(cls, source: Path) -> Span:
        """A run starting now of the staged tree ``source``."""
        return cls(time.monotonic(), names=frozenset(p.name for p in source.rglob("*.mp4")))


def record_rsync_spans(monkeypatch, t: Any) -> list[Span]:
    """Wrap the ``rsync`` of each of ``t``'s lanes to record each sending run (not
    the dry runs) as a Span."""
    spans: list[Span] = []

    def spy_on(real: Callable[..., Any]) -> Callable[..., Any]:
        def spy(*args, source, **kw):
            span = Span.of(source)
            if "--dry-run" not in args:
                spans.append(span)
            try:
                return real(*args, source=source, **kw)
            finally:
                span.end = time.monotonic()

        return spy

    for lane in t._calls.lanes:
        monkeypatch.setattr(lane, "rsync", spy_on(lane.rsync))
    return spans


def most_at_once(spans: list[Span]) -> int:
    """How many of ``spans`` ran at the same time, at most."""
    edges = sorted([(s.start, 1) for s in spans] + [(s.end, -1) for s in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def record_calls(
    monkeypatch, owner: Any, name: str, before: Callable[[int], None] | None = None
) -> list[tuple]:
    """Wrap ``owner.name`` to record each call's arguments (``before(n)`` runs first
    on the n-th call); the list fills as the code under test calls it."""
    calls: list[tuple] = []
    real = getattr(owner, name)

    def spy(*args, **kw):
        calls.append(args)
        if before is not None:
            before(len(calls))
        return real(*args, **kw)

    monkeypatch.setattr(owner, name, spy)
    return calls


def retry_proves_what_arrived(t: Transport, items: list[Item], nas: Nas, watcher) -> None:
    """After a failed batch: the retry publishes all, and what had arrived before
    the failure is proven by the NAS's checksum (sent=False), not sent again."""
    arrived = set(nas.segments())
    again = dict(t.publish_batch(items))
    assert len(again) == len(items)
    deadline = time.monotonic() + 2  # a fast retry may beat the watcher's next look
    while time.monotonic() < deadline and not all(i.local.name in watcher.seen for i in items):
        time.sleep(0.02)
    assert {i.local.name for i, sent in again.items() if not sent} == arrived
    for item in items:
        assert sha256(nas.segments()[item.local.name]) == sha256(item.local)
        assert watcher.seen[item.local.name] == {item.size}  # never seen partial


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
