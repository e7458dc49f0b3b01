"""smb with ``encrypt: true`` (the default) never downgrades (docs/transports.md, "smb").

Against a real smbd that cannot encrypt (``server smb encrypt = off``) the
transport must refuse in one line, permanently, and send no file data: the
server's own log shows the node logged on (so the refusal was exercised) and
never connected to the share (no tree connect, so no file request was possible).
Against the suite's smbd that offers encryption, the session the node ships
over is encrypted, as smbd itself reports it.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from livecam_plugins.smb import SmbTransport

from livecam.options import check_options
from livecam.storage.files import file_digest
from livecam.transport import PermanentError
from tests.conftest import sha256
from tests.core.node import Node, wait_for
from tests.transports import servers
from tests.transports.servers import Smbd

NAME = "cam0-20261126T121530Z-{:06d}.mp4"
TREE_CONNECT = "connect to service nas"
LOGON = "Auth: [SMB2"


@pytest.fixture(scope="module")
def plain_smbd() -> Iterator[Smbd]:
    """An smbd that cannot encrypt at all, logging logons and tree connects."""
    base = servers.make_base()
    s = Smbd(base, encrypt="off", log_level=2)
    s.start()
    yield s
    s.stop()
    servers.cleanup(base)


def transport(server: Smbd, sub: str, **extra) -> SmbTransport:
    raw = {k: v for k, v in {**server.smb_options(sub), **extra}.items() if k != "plugin"}
    opts = check_options("transport", raw, SmbTransport.options)
    SmbTransport.check(opts, "transport")
    return SmbTransport(opts, timeout=20)


def segment(tmp_path: Path, seq: int = 1) -> Path:
    path = tmp_path / NAME.format(seq)
    path.write_bytes(os.urandom(200_000))
    return path


def publish(t: SmbTransport, local: Path) -> bool:
    remote = f"lab/node01/cam0/2026-11-26/{local.name}"
    return t.publish(local, remote, size=local.stat().st_size, digest=file_digest(local))


class Log:
    """What smbd logged since this object was made."""

    def __init__(self, server: Smbd):
        assert server.log is not None
        self.path, self.start = server.log, server.log.stat().st_size

    def text(self) -> str:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace")


def files_below(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


def ciphers(server: Smbd) -> list[str]:
    """The encryption cipher of each session of the test user, as smbd reports it
    ("-" for a plaintext session)."""
    out = subprocess.run(
        ["smbstatus", "-s", str(server.config), "-b", "--json"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    sessions = json.loads(out).get("sessions", {}).values()
    return [s["encryption"]["cipher"] for s in sessions if s["username"] == servers.SMB_USER]


def test_encrypt_true_refuses_a_server_that_cannot_encrypt_and_sends_nothing(plain_smbd, tmp_path):
    sub = f"enc-{os.getpid()}"
    t = transport(plain_smbd, sub)  # encrypt: true is the default
    assert t.opts["encrypt"] is True
    seg = segment(tmp_path)
    log = Log(plain_smbd)
    try:
        # Twice on the same transport: a retry must not slip through on the
        # unencrypted session the first attempt negotiated.
        for attempt in (1, 2):
            with pytest.raises(PermanentError) as err:
                publish(t, seg)
            message = str(err.value)
            assert "\n" not in message, message
            assert "cannot encrypt" in message and "encrypt: false" in message, message
            wait_for(lambda n=attempt: log.text().count(LOGON) >= n, 10, "smbd logged the logon")
    finally:
        t.close()
    text = log.text()
    assert text.count(LOGON) == 2, text  # the node reached the server each time
    assert TREE_CONNECT not in text, text  # ... and never opened the share
    assert not (plain_smbd.share_root / sub).exists()  # not even a directory
    # Control: the same server and log see a tree connect and the file when the
    # node allows plaintext, so the two checks above could have failed.
    plain = transport(plain_smbd, sub, encrypt=False)
    try:
        assert publish(plain, seg) is True
        assert ciphers(plain_smbd) == ["-"]  # smbd lists a plaintext session as such
    finally:
        plain.close()
    wait_for(lambda: TREE_CONNECT in log.text(), 10, "smbd logged the tree connect")
    # The share is append-only, as the role sets it up: the temp stays as a
    # second (dot-)name of the published file.
    below = files_below(plain_smbd.share_root / sub)
    (arrived,) = [p for p in below if p.is_file() and not p.name.startswith(".")]
    assert sha256(arrived) == sha256(seg)


def test_the_node_refuses_to_ship_to_a_server_that_cannot_encrypt(plain_smbd, tmp_path):
    """``livecam ship``: one PERMANENT line naming the cause, the alarm in status,
    the segment kept on the node, nothing on the share."""
    sub = f"ship-{os.getpid()}"
    n = Node(tmp_path / "node", {**plain_smbd.smb_options(sub)}, retry={"permanent": "60s"})
    seg = n.buffer / "cam0" / NAME.format(7)
    seg.parent.mkdir(parents=True)
    seg.write_bytes(os.urandom(200_000))
    log = Log(plain_smbd)
    try:
        proc = n.start("ship")
        line = wait_for(
            lambda: [ln for ln in n.log_text().splitlines() if "PERMANENT" in ln],
            30,
            "the shipper logged a permanent error",
        )
        assert n.stop(proc) == 0
    finally:
        n.cleanup()
    assert len(line) == 1, line  # one attempt, then the long permanent wait
    assert "cannot encrypt" in line[0] and "encrypt: false" in line[0], line
    status = n.status()["shipper"]
    assert status["last_error"]["permanent"] is True, json.dumps(status)
    assert "cannot encrypt" in status["last_error"]["message"], json.dumps(status)
    assert [p.name for p in n.local_segments("buffer") + n.local_segments("spool")] == [seg.name]
    text = log.text()
    assert LOGON in text and TREE_CONNECT not in text, text
    assert not (plain_smbd.share_root / sub).exists()


def test_the_session_to_a_server_that_offers_encryption_is_encrypted(smbd, tmp_path):
    """smbd's own session list shows the node's session encrypted while it ships."""
    t = transport(smbd, f"on-{os.getpid()}")
    try:
        assert publish(t, segment(tmp_path)) is True
        listed = ciphers(smbd)
    finally:
        t.close()
    assert listed, "smbd lists the node's session"
    assert all(c not in ("", "-") for c in listed), listed  # e.g. AES-128-GCM
