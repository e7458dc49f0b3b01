"""The ``smb`` transport: SMB2/3 from Python (smbprotocol), no kernel mount.

Write ``.<name>.part`` beside the target (a fixed name: a retry overwrites its own
leftover), check its size, rename it into place; SMB's rename refuses to replace
an existing file, so nothing is ever overwritten. "Already there" means same size
and, read back only then, the same SHA-256.

Encryption (SMB3) is required by default: a server that cannot encrypt is an
error, never a silent downgrade; ``encrypt: false`` allows plaintext. The password
comes from ``password_file`` only and is read when connecting (so a rotated
password is picked up), never logged or shown.

The connection is kept between publishes in this transport's own pool. After any
network failure (an smbd restart, a cut link) the pool is dropped and the next
publish connects again. smbprotocol's own requests wait without limit, so a
watchdog closes the socket when an attempt exceeds ``timeout``: a silent server
fails the attempt instead of hanging the shipper.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import ntpath
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from livecam import hookimpl
from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.transport import PermanentError, PublishError, TransientError, Transport

CONNECT_TIMEOUT = 10
BLOCK = 1 << 20

# NTSTATUS codes a person must act on: access, space, auth, a missing share.
PERMANENT_STATUS = {
    0xC0000022: "access denied",  # STATUS_ACCESS_DENIED
    0xC000007F: "no space left on the NAS",  # STATUS_DISK_FULL
    0xC0000044: "quota exceeded on the NAS",  # STATUS_QUOTA_EXCEEDED
    0xC00000A2: "the NAS target is read-only",  # STATUS_MEDIA_WRITE_PROTECTED
    0xC000006D: "logon refused (user or password wrong)",  # STATUS_LOGON_FAILURE
    0xC000006A: "wrong password",  # STATUS_WRONG_PASSWORD
    0xC0000071: "password expired",  # STATUS_PASSWORD_EXPIRED
    0xC0000072: "account disabled",  # STATUS_ACCOUNT_DISABLED
    0xC00000CC: "no such share",  # STATUS_BAD_NETWORK_NAME
}


def _smbclient() -> Any:
    try:
        import smbclient
    except ImportError:
        return None
    return smbclient


class SmbTransport(Transport):
    """SMB2/3 via smbprotocol: temp name, size check, rename (see the module doc)."""

    description = "SMB2/3 (smbprotocol), encrypted by default, no kernel mount"
    options: ClassVar = {
        "server": Option(o.string, help="the NAS host name or address"),
        "port": Option(o.integer(1, 65535), 445),
        "share": Option(o.string, help="the share name on the NAS"),
        "path": Option(o.string, "", "directory inside the share"),
        "username": Option(o.string, help="the node's account on the NAS"),
        "password_file": Option(o.path, help="a file holding only the password (mode 0600)"),
        "encrypt": Option(o.boolean, True, "require SMB3 encryption"),
    }

    def __init__(self, options: Any, *, timeout: float):
        super().__init__(options, timeout=timeout)
        self._cache: dict[str, Any] = {}
        self._timed_out = False

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        if _smbclient() is None:
            raise ConfigError(f"{key}.plugin: smb needs smbprotocol (pip install 'livecam[smb]')")
        o.readable_file(str(opts["password_file"]), f"{key}.password_file")
        if not read_password(opts["password_file"]):
            raise ConfigError(f"{key}.password_file: {opts['password_file']} is empty")
        for name in ("server", "share", "username"):
            if not opts[name].strip():
                raise ConfigError(f"{key}.{name}: must not be empty")

    def describe(self) -> str:
        o_ = self.opts
        crypt = "encrypted" if o_["encrypt"] else "NOT encrypted"
        where = posix(o_["share"], o_["path"])
        return f"smb to {o_['username']}@{o_['server']}:{o_['port']}/{where} ({crypt})"

    def _unc(self, remote: str) -> str:
        parts = [self.opts["path"], remote]
        rel = "\\".join(p.replace("/", "\\").strip("\\") for p in parts if p.strip("/"))
        return f"\\\\{self.opts['server']}\\{self.opts['share']}\\{rel}"

    def _session_kwargs(self) -> dict[str, Any]:
        o_ = self.opts
        return {"username": o_["username"], "password": read_password(o_["password_file"]),
                "port": o_["port"], "encrypt": o_["encrypt"] or None,
                "connection_timeout": CONNECT_TIMEOUT, "connection_cache": self._cache}  # fmt: skip

    # --- publish -----------------------------------------------------------------------------

    def publish(self, local: Path, remote: str, *, size: int, digest: str) -> bool:
        """Publish over SMB; False if the same size and SHA-256 are there already.

        Raises PermanentError (logon refused, access denied, disk full, read-only,
        missing share, no encryption, other content under the name) or
        TransientError (network, server restart, timeout).
        """
        smbclient = _smbclient()
        if smbclient is None:
            raise PermanentError("smb: smbprotocol is not installed")
        target = self._unc(remote)
        where = f"smb {self.opts['server']}/{self.opts['share']}/{posix(self.opts['path'], remote)}"
        try:
            with self._watchdog():
                kw = self._session_kwargs()
                smbclient.register_session(self.opts["server"], **kw)
                return self._publish(smbclient, kw, local, target, size, digest, where)
        except PublishError:
            raise
        except Exception as exc:
            self.close()  # a fresh connection next time: the old one may be dead
            raise classify(exc, where, self._timed_out) from None

    def _publish(self, smbclient: Any, kw: dict[str, Any], local: Path, target: str,
                 size: int, digest: str, where: str) -> bool:  # fmt: skip
        directory, name = ntpath.split(target)
        smbclient.makedirs(directory, exist_ok=True, **kw)
        try:
            st = smbclient.stat(target, **kw)
        except OSError as exc:
            # SMBOSError carries ENOENT but is no FileNotFoundError subclass.
            if exc.errno != errno.ENOENT:
                raise
            st = None
        if st is not None:
            if st.st_size == size and self._remote_digest(smbclient, kw, target) == digest:
                return False
            raise PermanentError(f"{where} already exists with other content; not overwritten")
        tmp = ntpath.join(directory, f".{name}.part")
        try:
            with open(local, "rb") as src, smbclient.open_file(tmp, "wb", **kw) as dst:
                shutil.copyfileobj(src, dst, BLOCK)
        except OSError:
            # A partial temp would hold space on a full disk; the session may still work.
            with contextlib.suppress(Exception):
                smbclient.remove(tmp, **kw)
            raise
        written = smbclient.stat(tmp, **kw).st_size
        if written != size:
            raise TransientError(f"{where}: size check failed: {written} of {size} bytes")
        smbclient.rename(tmp, target, **kw)
        return True

    def _remote_digest(self, smbclient: Any, kw: dict[str, Any], target: str) -> str:
        h = hashlib.sha256()
        with smbclient.open_file(target, "rb", **kw) as f:
            while block := f.read(BLOCK):
                h.update(block)
        return h.hexdigest()

    @contextlib.contextmanager
    def _watchdog(self) -> Iterator[None]:
        """Close the sockets if the attempt outlives ``timeout``; waiting calls then fail."""
        self._timed_out = False

        def expire() -> None:
            self._timed_out = True
            for conn in list(self._cache.values()):
                with contextlib.suppress(Exception):
                    conn.transport.close()

        timer = threading.Timer(self.timeout, expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def close(self) -> None:
        smbclient = _smbclient()
        if smbclient is not None and self._cache:
            smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self._cache)
        self._cache.clear()


def read_password(path: Path) -> str:
    """The password: the file's first line, without its newline."""
    lines = path.read_text().splitlines()
    return lines[0] if lines else ""


def posix(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def classify(exc: Exception, where: str, timed_out: bool) -> PublishError:
    """An smbprotocol/smbclient failure as a Permanent or Transient error (no secrets)."""
    if timed_out:
        return TransientError(f"{where}: no answer within the timeout ({type(exc).__name__})")
    status = getattr(exc, "ntstatus", None) or getattr(exc, "status", None)
    if status in PERMANENT_STATUS:
        return PermanentError(f"{where}: {PERMANENT_STATUS[status]}")
    name = type(exc).__name__
    text = str(exc)
    if name == "SMBAuthenticationError" or "SpnegoError" in name:
        return PermanentError(f"{where}: logon refused: {text}")
    if "encryption is required" in text:
        return PermanentError(f"{where}: the server cannot encrypt ({text}); "
                              "set transport.encrypt: false only on a trusted network")  # fmt: skip
    return TransientError(f"{where}: {name}: {text}")


@hookimpl
def livecam_register_transports(register):
    register("smb", SmbTransport)
