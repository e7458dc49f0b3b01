"""No log level writes a secret or an authentication exchange.

A real node (``livecam run``, ffmpeg cameras) ships to the real server with
``log_level: debug``; its whole log is then searched for the password, the NTLM
messages (as text, hex and base64) and the SSH authentication.
"""

from __future__ import annotations

import base64

import pytest

from tests.core.node import Node, wait_for
from tests.transports import servers

pytestmark = pytest.mark.slow

NTLM = b"NTLMSSP\x00"


def forbidden(password: str) -> list[str]:
    """Strings that would show a secret or an NTLM message in a log."""
    pw = password.encode()
    return [
        password,
        pw.hex(),
        pw.hex().upper(),
        password.encode("utf-16-le").hex(),
        base64.b64encode(pw).decode().rstrip("="),
        "NTLMSSP",
        NTLM.hex(),
        NTLM.hex().upper(),
        base64.b64encode(NTLM).decode()[:8],  # 'TlRMTVNT': any base64 NTLM message
        "4e 54 4c 4d",  # a hex dump with spaces
        "AUTHENTICATE_MESSAGE",
        "CHALLENGE_MESSAGE",
        "NEGOTIATE_MESSAGE",
    ]


@pytest.mark.parametrize("nas", ["smb", "sftp"], indirect=True)
def test_debug_log_holds_no_secret_or_auth_exchange(nas, tmp_path):
    n = Node(tmp_path / "node", nas.options(), log_level="debug")
    try:
        proc = n.start()
        wait_for(lambda: len(nas.segments()) >= 3, 40, "segments published")
        assert n.stop(proc) == 0
    finally:
        n.cleanup()
    log = n.log_text()
    # Debug logging was on, and the node logged in and shipped meanwhile.
    assert " DEBUG livecam" in log, log[-2000:]
    assert "published" in log.lower() or "PUBLISHED" in log
    for text in forbidden(servers.SMB_PASSWORD):
        assert text.lower() not in log.lower(), text
    assert "userauth" not in log.lower()
    key = nas.server.client_key.read_text() if nas.kind == "sftp" else ""
    for line in key.splitlines()[1:-1]:
        assert line not in log
