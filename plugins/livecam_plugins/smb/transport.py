"""The smb transport: the session and its connection pool, the watchdog, and
smbprotocol's failures classed."""

from __future__ import annotations

import contextlib
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.transport import PermanentError, PublishError, TransientError, answers
from livecam.transport.protocol import Directories
from livecam.transport.stores import BATCH_OPTIONS, StoreTransport
from livecam_plugins.smb.store import SmbStore, load_smbclient
from livecam_plugins.smb.upstream import upstream_problems

CONNECT_TIMEOUT = 10

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

# The probe's question: an SMB2 NEGOTIATE (dialects 2.0.2 to 3.0.2, no login), after
# the 4-byte direct-TCP length. A server answers with an SMB2 header (\xfeSMB).
_HEADER = b"\xfeSMB" + struct.pack("<HHIHHIIQIIQ16s", 64, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, b"")
_DIALECTS = (0x0202, 0x0210, 0x0300, 0x0302)
_BODY = struct.pack("<HHHHI16sQ", 36, len(_DIALECTS), 1, 0, 0, b"livecam-probe", 0)
_BODY += struct.pack(f"<{len(_DIALECTS)}H", *_DIALECTS)
NEGOTIATE = struct.pack(">I", len(_HEADER) + len(_BODY)) + _HEADER + _BODY


def read_password(path: Path) -> str:
    """The password: the file's first line, without its newline."""
    lines = path.read_text().splitlines()
    return lines[0] if lines else ""


class SmbTransport(StoreTransport):
    """SMB2/3 via smbprotocol: the publish protocol over one session (see the package doc)."""

    description = "SMB2/3 (smbprotocol), encrypted by default, no kernel mount"
    options: ClassVar = {
        "server": Option(o.string, help="the NAS host name or address"),
        "port": Option(o.integer(1, 65535), 445),
        "share": Option(o.string, help="the share name on the NAS"),
        "path": Option(o.string, "", "directory inside the share"),
        "username": Option(o.string, help="the node's account on the NAS"),
        "password_file": Option(o.path, help="a file holding only the password (mode 0600)"),
        "encrypt": Option(o.boolean, True, "require SMB3 encryption"),
        **BATCH_OPTIONS,
    }
    batch_size: ClassVar[int] = 128

    def __init__(self, options: Any, *, timeout: float):
        super().__init__(options, timeout=timeout)
        self._cache: dict[str, Any] = {}
        self._timed_out = False
        self._conn: Any = None
        self.dirs = Directories()  # forgotten on a new connection
        self.renames_refused = False  # the share is append-only: link (forgotten likewise)
        self.credit_lock = threading.Lock()
        self.window = self.new_window()

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        if load_smbclient() is None:
            raise ConfigError(f"{key}.plugin: smb needs smbprotocol (pip install 'livecam[smb]')")
        if problems := upstream_problems():
            raise ConfigError(f"{key}.plugin: {problems}")
        o.secret_file(str(opts["password_file"]), f"{key}.password_file")
        if not read_password(opts["password_file"]):
            raise ConfigError(f"{key}.password_file: {opts['password_file']} is empty")
        for name in ("server", "share", "username"):
            if not opts[name].strip():
                raise ConfigError(f"{key}.{name}: must not be empty")

    def reachable(self, timeout: float) -> bool:
        """Whether the NAS's smbd answers an SMB2 NEGOTIATE (no login): see
        Transport.reachable."""
        return answers(
            self.opts["server"], self.opts["port"], timeout, hello=NEGOTIATE, expect=b"\xfeSMB"
        )

    def describe(self) -> str:
        o_ = self.opts
        crypt = "encrypted" if o_["encrypt"] else "NOT encrypted"
        where = "/".join(p.strip("/") for p in (o_["share"], o_["path"]) if p.strip("/"))
        return f"smb to {o_['username']}@{o_['server']}:{o_['port']}/{where} ({crypt})"

    def stores(self, count: int) -> list[SmbStore]:
        """Connect (or reuse the connection); ``count`` stores on its session. Raises
        PublishError."""
        smbclient = load_smbclient()
        if smbclient is None:
            raise PermanentError("smb: smbprotocol is not installed")
        if problems := upstream_problems():
            raise PermanentError(f"smb: {problems}")
        self._timed_out = False
        o_ = self.opts
        kw = {
            "username": o_["username"],
            "password": read_password(o_["password_file"]),
            "port": o_["port"],
            "encrypt": o_["encrypt"] or None,
            "connection_timeout": CONNECT_TIMEOUT,
            "connection_cache": self._cache,
        }
        try:
            with self._watchdog(self.timeout):
                session = smbclient.register_session(o_["server"], **kw)
        except Exception as exc:
            self.close()
            raise self.classify(exc, f"smb {o_['server']}/{o_['share']}") from None
        if session.connection is not self._conn:  # a new connection: forget
            self._conn, self.dirs = session.connection, Directories()
            self.window = self.new_window()
            self.renames_refused = False
        return [SmbStore(self, kw) for _ in range(count)]

    def attempt(self, store: Any, limit: float) -> contextlib.AbstractContextManager[None]:
        return self._watchdog(limit)

    def after_failure(self, error: BaseException) -> None:
        self.close()  # a fresh connection next time: the old one may be dead

    def classify(self, error: BaseException, where: str) -> PublishError:
        """An smbprotocol/smbclient failure as a Permanent or Transient error (no
        secrets): any failure after the watchdog fired is the timeout's (transient);
        else by NTSTATUS (PERMANENT_STATUS), a refused logon or encryption are
        permanent, the rest transient."""
        if self._timed_out:
            return TransientError(f"{where}: no answer within the timeout ({type(error).__name__})")
        status = getattr(error, "ntstatus", None) or getattr(error, "status", None)
        if status in PERMANENT_STATUS:
            return PermanentError(f"{where}: {PERMANENT_STATUS[status]}")
        name = type(error).__name__
        text = str(error)
        if name == "SMBAuthenticationError" or "SpnegoError" in name:
            return PermanentError(f"{where}: logon refused: {text}")
        if "encryption is required" in text:
            return PermanentError(
                f"{where}: the server cannot encrypt ({text}); "
                "set transport.encrypt: false only on a trusted network"
            )
        return TransientError(f"{where}: {name}: {text}")

    @contextlib.contextmanager
    def _watchdog(self, limit: float) -> Iterator[None]:
        """Close the sockets if the attempt outlives ``limit``; waiting calls then fail
        (and ``classify`` calls their failure the timeout's)."""

        def expire() -> None:
            self._timed_out = True
            for conn in list(self._cache.values()):
                with contextlib.suppress(Exception):
                    conn.transport.close()

        timer = threading.Timer(limit, expire)
        timer.daemon = True
        timer.start()
        try:
            yield
        finally:
            timer.cancel()

    def close(self) -> None:
        smbclient = load_smbclient()
        if smbclient is not None and self._cache:
            smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self._cache)
        self._cache.clear()
        self._conn = None
