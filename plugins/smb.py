"""The ``smb`` transport: SMB2/3 from Python (smbprotocol), no kernel mount.

Write ``.<name>.part`` beside the target (a fixed name: a retry overwrites its own
leftover), check its size, rename it into place; SMB's rename refuses to replace
an existing file, so nothing is ever overwritten. "Already there" means same size
and, read back only then, the same SHA-256.

Encryption (SMB3) is required by default: a server that cannot encrypt is an
error, never a silent downgrade; ``encrypt: false`` allows plaintext. The password
comes from ``password_file`` only and is read when connecting (so a rotated
password is picked up), never logged or shown.

Round trips, not bytes, limit a backlog over a link with latency: directories
made are remembered for the connection (forgotten on reconnect), writes overlap
(``WINDOW`` requests in flight), the size is queried on the open handle and the
rename (no replace) and close go in one compound request; a batch keeps
``WORKERS`` segments in flight over the one session.

The connection is kept between publishes in this transport's own pool. After any
network failure (an smbd restart, a cut link) the pool is dropped and the next
publish connects again. smbprotocol's own requests wait without limit, so a
watchdog closes the socket when an attempt exceeds ``timeout``: a silent server
fails the attempt instead of hanging the shipper.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import ntpath
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from livecam_plugins._batch import run_concurrently

from livecam import hookimpl
from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.transport import (
    ConflictError,
    Item,
    PermanentError,
    PublishError,
    TransientError,
    Transport,
)

CONNECT_TIMEOUT = 10
BLOCK = 1 << 20
# Segments in flight at once in a batch: with 40 ms RTT one 2 MB segment spends
# about as long on its round trips as on its data; three keep the link busy.
WORKERS = 3
WINDOW = 4  # write requests in flight per segment (of up to BLOCK each)
CREDIT_GROWTH = 8  # extra credits asked per write, so several workers can write at once

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


if _smbclient() is not None:
    # The compound and raw-handle helpers smbclient builds its own calls from.
    from smbclient._io import SMBFileIO, SMBFileTransaction, query_info, set_info
    from smbprotocol import MAX_PAYLOAD_SIZE
    from smbprotocol.file_info import FileRenameInformation, FileStandardInformation
    from smbprotocol.open import FilePipePrinterAccessMask


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

    batch_size: ClassVar[int] = 32

    def __init__(self, options: Any, *, timeout: float):
        super().__init__(options, timeout=timeout)
        self._cache: dict[str, Any] = {}
        self._timed_out = False
        self._conn: Any = None
        # Directories made or seen on this connection; forgotten on reconnect, as
        # a restarted NAS may have lost them.
        self._dirs: set[str] = set()
        self._credit_lock = threading.Lock()
        self._dirs_lock = threading.Lock()

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
        kw = self._session()
        return self._publish_item(kw, Item(local, remote, size, digest), 1)

    def publish_batch(self, items: Sequence[Item]) -> Iterator[tuple[Item, bool]]:
        """Publish up to WORKERS segments at once over the one session.

        Yields ``(item, sent)`` once that item is renamed into place; raises
        PermanentError or TransientError (as ``publish``) for the rest, after the
        items in flight have ended. See ``run_concurrently``.
        """
        kw = self._session()
        n = min(WORKERS, len(items))
        yield from run_concurrently(items, [functools.partial(self._publish_item, kw, share=n)] * n)

    def _session(self) -> dict[str, Any]:
        """Connect (or reuse the connection); the smbclient keyword arguments. Raises
        PublishError."""
        smbclient = _smbclient()
        if smbclient is None:
            raise PermanentError("smb: smbprotocol is not installed")
        self._timed_out = False
        where = f"smb {self.opts['server']}/{self.opts['share']}"
        try:
            with self._watchdog(self.timeout):
                kw = self._session_kwargs()
                session = smbclient.register_session(self.opts["server"], **kw)
                if session.connection is not self._conn:  # a new connection: forget
                    self._conn, self._dirs = session.connection, set()
                return kw
        except Exception as exc:
            self.close()
            raise classify(exc, where, self._timed_out) from None

    def _publish_item(self, kw: dict[str, Any], item: Item, share: int) -> bool:
        """One item; ``share`` segments share the link meanwhile (the time limit grows)."""
        smbclient = _smbclient()
        target = self._unc(item.remote)
        where = f"smb {self.opts['server']}/{self.opts['share']}/"
        where += posix(self.opts["path"], item.remote)
        try:
            with self._watchdog(self.timeout * share):
                return self._publish(smbclient, kw, item, target, where)
        except PublishError:
            raise
        except Exception as exc:
            self.close()  # a fresh connection next time: the old one may be dead
            raise classify(exc, where, self._timed_out) from None

    def _publish(self, smbclient: Any, kw: dict[str, Any], item: Item, target: str,
                 where: str) -> bool:  # fmt: skip
        """Round trips besides the data: stat target, create, size query, then
        rename and close in one compound (plus a makedirs per new directory)."""
        directory, name = ntpath.split(target)
        self._makedirs(smbclient, kw, directory)
        try:
            st = smbclient.stat(target, **kw)
        except OSError as exc:
            # SMBOSError carries ENOENT but is no FileNotFoundError subclass.
            if exc.errno != errno.ENOENT:
                raise
            st = None
        if st is not None:
            if (
                st.st_size == item.size
                and self._remote_digest(smbclient, kw, target) == item.digest
            ):
                return False
            raise ConflictError(
                f"{where} already exists with other content; not overwritten",
                remote=item.remote,
            )
        tmp = ntpath.join(directory, f".{name}.part")
        raw = self._create(smbclient, kw, tmp, directory)
        try:
            with open(item.local, "rb") as src:
                self._write(raw, src)
            with SMBFileTransaction(raw) as query:
                query_info(query, FileStandardInformation)
            written = query.results[0]["end_of_file"].get_value()
            if written != item.size:
                raise TransientError(f"{where}: size check failed: {written} of {item.size} bytes")
            # Rename on the handle the data went through, and close it, in one
            # compound; FileRenameInformation without replace never overwrites.
            rename = FileRenameInformation()
            rename["replace_if_exists"] = False
            rename["file_name"] = ntpath.join(ntpath.dirname(raw.fd.file_name), name)
            with SMBFileTransaction(raw) as commit:
                set_info(commit, rename)
                raw.close(transaction=commit)
        except (OSError, PublishError):
            # A partial temp would hold space on a full disk; the session may still work.
            with contextlib.suppress(Exception):
                raw.close()
            with contextlib.suppress(Exception):
                smbclient.remove(tmp, **kw)
            raise
        return True

    def _create(self, smbclient: Any, kw: dict[str, Any], tmp: str, directory: str) -> Any:
        """Open ``tmp`` (truncated) for writing and renaming; a directory removed on
        the NAS since it was remembered is made again (once). Raises SMBOSError."""
        access = (FilePipePrinterAccessMask.FILE_WRITE_DATA | FilePipePrinterAccessMask.DELETE
                  | FilePipePrinterAccessMask.FILE_READ_ATTRIBUTES)  # fmt: skip
        for attempt in (1, 2):
            raw = SMBFileIO(tmp, mode="w", desired_access=access, **kw)
            try:
                raw.open()
                return raw
            except OSError as exc:
                if exc.errno != errno.ENOENT or attempt == 2:
                    raise
                self._dirs.discard(directory)
                self._makedirs(smbclient, kw, directory)
        raise AssertionError("unreachable")

    def _write(self, raw: Any, src: Any) -> None:
        """Write ``src`` to the open ``raw`` with WINDOW requests in flight.

        One request at a time (smbclient's own write) waits a round trip per MB;
        overlapping them keeps the link busy. Each request needs credits; they are
        taken under a lock shared by the batch's workers (smbprotocol refuses a
        send it has no credits for rather than wait). Raises SMBOSError or
        TransientError (a short write).
        """
        fd = raw.fd
        conn = fd.connection
        sid, tid = fd.tree_connect.session.session_id, fd.tree_connect.tree_connect_id
        pending: deque[tuple[Any, Any, int]] = deque()

        def finish() -> None:
            request, receive, length = pending.popleft()
            if receive(request) != length:
                raise TransientError(f"smb: the NAS took part of a {length} byte write")

        offset = 0
        while block := src.read(min(BLOCK, conn.max_write_size)):
            view = memoryview(block)
            while view:
                with self._credit_lock:
                    window = conn.sequence_window
                    free = window["high"] - window["low"] - 1  # one left for a small request
                    length = min(len(view), max(free, 1) * MAX_PAYLOAD_SIZE)
                    if free >= 1 or not pending:
                        credits = (length - 1) // MAX_PAYLOAD_SIZE + 1
                        msg, receive = fd.write(bytes(view[:length]), offset=offset, send=False)
                        request = conn.send(msg, sid=sid, tid=tid,
                                            credit_request=credits + CREDIT_GROWTH)  # fmt: skip
                    else:
                        length = 0
                if not length:  # out of credits: a reply brings more
                    finish()
                    continue
                pending.append((request, receive, length))
                view, offset = view[length:], offset + length
                while len(pending) >= WINDOW:
                    finish()
        while pending:
            finish()

    def _makedirs(self, smbclient: Any, kw: dict[str, Any], directory: str) -> None:
        """makedirs, remembered for this connection (forgotten on reconnect)."""
        if directory in self._dirs:
            return
        # One worker makes a new directory while the others wait: no mkdir race.
        with self._dirs_lock:
            if directory not in self._dirs:
                smbclient.makedirs(directory, exist_ok=True, **kw)
                self._dirs.add(directory)

    def _remote_digest(self, smbclient: Any, kw: dict[str, Any], target: str) -> str:
        h = hashlib.sha256()
        with smbclient.open_file(target, "rb", **kw) as f:
            while block := f.read(BLOCK):
                h.update(block)
        return h.hexdigest()

    @contextlib.contextmanager
    def _watchdog(self, limit: float) -> Iterator[None]:
        """Close the sockets if the attempt outlives ``limit``; waiting calls then fail."""

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
        smbclient = _smbclient()
        if smbclient is not None and self._cache:
            smbclient.reset_connection_cache(fail_on_error=False, connection_cache=self._cache)
        self._cache.clear()
        self._conn = None


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
