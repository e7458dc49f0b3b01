"""Who may see the pages: a token from a 0600 file, or a trusted reverse proxy's header.

A browser sends the token as the password of HTTP Basic auth (any user name), a
script as ``Authorization: Bearer TOKEN``; ``?token=TOKEN`` once sets an HttpOnly
cookie and redirects to the same page without it. With ``--trust-proxy-header
NAME`` a request is let in when it carries that header (the proxy authenticated
the user and sets it; it must strip it from what clients send).
"""

from __future__ import annotations

import base64
import hmac
import os
import stat
from pathlib import Path

from livecam.options import ConfigError

COOKIE = "livecam_token"


def read_token(path: Path) -> str:
    """The token in ``path``; ConfigError (one line) if it is missing, empty or readable
    by anyone but its owner."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise ConfigError(f"--token-file: {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(
                f"--token-file: {path} is readable by group or others "
                f"(mode {stat.S_IMODE(mode):04o}); chmod 600 it"
            )
        token = f.read().decode("utf-8", "replace").strip()
    if len(token) < 8:
        raise ConfigError(f"--token-file: {path}: the token must be at least 8 characters")
    return token


def _same(given: str, token: str) -> bool:
    return hmac.compare_digest(given.encode(), token.encode())


def allowed(
    headers: dict[str, str], cookies: dict[str, str], token: str | None, proxy_header: str | None
) -> bool:
    """True if this request carries the credentials (``headers`` with lower-case names)."""
    if proxy_header is not None and headers.get(proxy_header.lower(), "").strip():
        return True
    if token is None:
        return False
    if _same(cookies.get(COOKIE, ""), token):
        return True
    scheme, _, value = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        return _same(value.strip(), token)
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (ValueError, UnicodeDecodeError):
            return False
        return _same(decoded.partition(":")[2], token)
    return False
