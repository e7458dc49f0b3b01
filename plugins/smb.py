"""The ``smb`` transport: SMB2/3 from Python (smbprotocol), no kernel mount.

It fills in the one publish protocol (``livecam.publish``) with SMB requests:
write ``.<name>.part`` beside the target (a fixed name: a retry overwrites its own
leftover), query its size on the open handle, then rename (without replacing:
``replace_if_exists`` false, so a file that appeared under the name meanwhile is
kept and compared, never overwritten) and close in one compound request. "Already
there" means same size and, read back only then, the same SHA-256.

On an append-only share (the NAS role's: Samba's vfs_worm with no grace period)
a file is immutable as soon as it exists and was written, so even the temp cannot
be renamed: after the first refusal on a connection the final step hard-links the
temp to the target name (never replacing) and leaves the temp for the NAS's
retention, and a retry writes beside an earlier attempt's immutable temp.

Encryption (SMB3) is required by default: a server that cannot encrypt is an
error, never a silent downgrade; ``encrypt: false`` allows plaintext. The password
comes from ``password_file`` only and is read when connecting (so a rotated
password is picked up), never logged or shown.

Round trips, not bytes, limit a backlog over a link with latency: directories
made are remembered for the connection (forgotten on reconnect), writes overlap
(as many as the connection's ``window`` of unacknowledged bytes allows), and a
batch keeps ``workers`` segments in flight over the one session. Those need
smbprotocol's internals, all in one section below (``upstream_problems`` says
when an upgrade moved them).

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
import importlib
import secrets
import stat
import struct
import threading
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

from livecam import hookimpl
from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.publish import Directories, TempFile, TempRenameStore, read_digest
from livecam.store_transport import BATCH_OPTIONS, WINDOW, StoreTransport, Window
from livecam.transport import Item, PermanentError, PublishError, TransientError, answers

CONNECT_TIMEOUT = 10
REQUEST = 1 << 18  # bytes per write request at most (4 credits); the window bounds how many
CREDIT = 1 << 16  # bytes one credit carries (smbprotocol's MAX_PAYLOAD_SIZE)
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

# The probe's question: an SMB2 NEGOTIATE (dialects 2.0.2 to 3.0.2, no login), after
# the 4-byte direct-TCP length. A server answers with an SMB2 header (\xfeSMB).
_HEADER = b"\xfeSMB" + struct.pack("<HHIHHIIQIIQ16s", 64, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, b"")
_DIALECTS = (0x0202, 0x0210, 0x0300, 0x0302)
_BODY = struct.pack("<HHHHI16sQ", 36, len(_DIALECTS), 1, 0, 0, b"livecam-probe", 0)
_BODY += struct.pack(f"<{len(_DIALECTS)}H", *_DIALECTS)
NEGOTIATE = struct.pack(">I", len(_HEADER) + len(_BODY)) + _HEADER + _BODY

ACCESS_DENIED = 0xC0000022  # STATUS_ACCESS_DENIED: smbprotocol gives it no errno


def _smbclient() -> Any:
    try:
        import smbclient
    except ImportError:
        return None
    return smbclient


class SmbStore(TempRenameStore):
    """The protocol's operations as SMB requests; one per worker, one session."""

    def __init__(self, transport: SmbTransport, kw: dict[str, Any]):
        super().__init__(transport.dirs, transport.opts["path"].strip("/"))
        self.t, self.kw = transport, kw

    def unc(self, path: str) -> str:
        """``path`` (below the share, POSIX) as smbclient names it."""
        rel = "\\".join(p for p in path.split("/") if p)
        return f"\\\\{self.t.opts['server']}\\{self.t.opts['share']}\\{rel}"

    def full(self, remote: str) -> str:
        return "/".join(p for p in (self.root, remote) if p)

    def where(self, remote: str) -> str:
        return f"smb {self.t.opts['server']}/{self.t.opts['share']}/{self.full(remote)}"

    def size(self, remote: str) -> int | None:
        try:
            return int(_smbclient().stat(self.unc(self.full(remote)), **self.kw).st_size)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # SMBOSError: no FileNotFoundError subclass
                raise
            return None

    def digest(self, remote: str) -> str:
        with _smbclient().open_file(self.unc(self.full(remote)), "rb", **self.kw) as f:
            return read_digest(f)

    def mkdir(self, directory: str) -> None:
        try:
            _smbclient().mkdir(self.unc(directory), **self.kw)
        except OSError as exc:
            # An append-only share refuses a create of any name that exists, even a
            # directory's: one that is there is what was asked for.
            if getattr(exc, "ntstatus", None) == ACCESS_DENIED and self._is_dir(directory):
                return
            raise _as_builtin(exc) from None

    def _is_dir(self, directory: str) -> bool:
        try:
            return stat.S_ISDIR(_smbclient().stat(self.unc(directory), **self.kw).st_mode)
        except OSError:
            return False

    def open_temp(self, temp: str) -> TempFile:
        try:
            return SmbTemp(self, temp, self._open(temp))
        except OSError as exc:
            # An earlier attempt's temp on an append-only share cannot be reopened for
            # writing: write beside it (the NAS's retention removes leftovers).
            if getattr(exc, "ntstatus", None) != ACCESS_DENIED or self.size(temp) is None:
                raise
        temp = f"{temp}-{secrets.token_hex(4)}"
        return SmbTemp(self, temp, self._open(temp))

    def _open(self, temp: str) -> Any:
        try:
            return open_raw(self.unc(self.full(temp)), self.kw)
        except OSError as exc:
            raise _as_builtin(exc) from None


class SmbTemp(TempFile):
    """``.<name>.part`` open on the NAS for writing, size queries and the rename."""

    def __init__(self, store: SmbStore, temp: str, raw: Any):
        self.store, self.temp, self.raw = store, temp, raw

    def write(self, src: BinaryIO) -> None:
        """Write ``src`` in requests of up to REQUEST bytes (at most half the window),
        as many in flight as the connection's ``Window`` allows.

        One request at a time (smbclient's own write) waits a round trip per MB;
        overlapping them keeps the link busy. Each request needs credits; they are
        taken under a lock shared by the batch's workers (smbprotocol refuses a
        send it has no credits for rather than wait).
        """
        conn = self.raw.fd.connection
        window = self.store.t.window
        # At least two requests fit in the window, each a whole number of credits.
        request = max(CREDIT, min(REQUEST, window.limit // 2 // CREDIT * CREDIT))
        pending: deque[tuple[Any, int]] = deque()

        def finish() -> None:
            wait, length = pending.popleft()
            try:
                took = wait()
            finally:
                window.release(length)
            if took != length:
                raise TransientError(f"smb: the NAS took part of a {length} byte write")

        offset = 0
        try:
            while block := src.read(request):
                view = memoryview(block)
                while view:
                    want = min(len(view), request, conn.max_write_size)
                    if not window.take(want):
                        if pending:
                            finish()
                            continue
                        window.wait(want)
                    sent = 0
                    try:
                        with self.store.t.credit_lock:
                            length, free = writable(conn, want)
                            if free or not pending:
                                data = bytes(view[:length])
                                wait = send_write(self.raw, data, offset, CREDIT_GROWTH)
                                sent = length
                    finally:
                        window.release(want - sent)
                    if not sent:  # out of credits: a reply brings more
                        finish()
                        continue
                    pending.append((wait, sent))
                    view, offset = view[sent:], offset + sent
            while pending:
                finish()
        finally:
            window.release(sum(n for _, n in pending))

    def size(self) -> int:
        return query_size(self.raw)

    def rename(self, remote: str) -> None:
        target = self.store.unc(self.store.full(remote))
        t = self.store.t
        try:
            if t.renames_refused:
                link_and_close(self.raw, target)
                return
            try:
                rename_and_close(self.raw, target)
            except OSError as exc:
                if getattr(exc, "ntstatus", None) != ACCESS_DENIED:
                    raise
                # An append-only share (vfs_worm) refuses renaming even the temp this
                # handle wrote; the compound closed it. Link it instead, from now on.
                t.renames_refused = True
                reopened = open_raw(self.store.unc(self.store.full(self.temp)), self.store.kw,
                                    write=False)  # fmt: skip
                link_and_close(reopened, target)
        except OSError as exc:
            raise _as_builtin(exc) from None

    def remove(self) -> None:
        try:
            self.raw.close()
        finally:
            _smbclient().remove(self.store.unc(self.store.full(self.temp)), **self.store.kw)


def _as_builtin(exc: OSError) -> OSError:
    """An SMBOSError as the builtin the protocol knows (FileExistsError...), else itself."""
    if exc.errno == errno.EEXIST:
        return FileExistsError(exc.errno, str(exc))
    if exc.errno == errno.ENOENT:
        return FileNotFoundError(exc.errno, str(exc))
    return exc


class SmbTransport(StoreTransport):
    """SMB2/3 via smbprotocol: the publish protocol over one session (see the module doc)."""

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
        self.window = Window(self.opts.get("window") or WINDOW)

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        if _smbclient() is None:
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
        smbclient = _smbclient()
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
            raise classify(exc, f"smb {o_['server']}/{o_['share']}", self._timed_out) from None
        if session.connection is not self._conn:  # a new connection: forget
            self._conn, self.dirs = session.connection, Directories()
            self.window = Window(self.window.limit)
            self.renames_refused = False
        return [SmbStore(self, kw) for _ in range(count)]

    def attempt(self, store: Any, limit: float) -> contextlib.AbstractContextManager[None]:
        return self._watchdog(limit)

    def failure(self, exc: Exception, store: Any, item: Item) -> PublishError:
        self.close()  # a fresh connection next time: the old one may be dead
        return classify(exc, store.where(item.remote), self._timed_out)

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
        return PermanentError(
            f"{where}: the server cannot encrypt ({text}); "
            "set transport.encrypt: false only on a trusted network"
        )
    return TransientError(f"{where}: {name}: {text}")


# --- smbprotocol internals ----------------------------------------------------------------------
# The only code that touches smbclient._io and smbprotocol's credit window (tested with
# smbprotocol 1.17; pyproject caps it below 1.18). tests/transports/test_upstream.py runs
# upstream_problems() and live_problems(), so an upgrade that moves any of these fails
# there by name, and check-config refuses with the same one line.

_MODULE_NAMES = {
    "smbclient._io": ("SMBFileIO", "SMBFileTransaction", "query_info", "set_info"),
    "smbprotocol": ("MAX_PAYLOAD_SIZE",),
    "smbprotocol.file_info": (
        "FileLinkInformation",
        "FileRenameInformation",
        "FileStandardInformation",
    ),
    "smbprotocol.open": ("FilePipePrinterAccessMask", "Open"),
    "smbprotocol.connection": ("Connection",),
}
# Attributes of live objects: a connection, and the ``fd`` (an Open) of a raw handle.
_CONNECTION_ATTRS = ("sequence_window", "send", "max_write_size")
_OPEN_ATTRS = ("write", "file_name", "connection", "tree_connect")


@functools.cache
def upstream_problems() -> str:
    """'' when smbprotocol still has the internals used below, else what moved."""
    missing = []
    for module, names in _MODULE_NAMES.items():
        try:
            mod = importlib.import_module(module)
        except ImportError:
            missing.append(module)
            continue
        missing += [f"{module}.{n}" for n in names if not hasattr(mod, n)]
    return _moved(missing)


def live_problems(raw: Any) -> str:
    """'' when an open raw handle and its connection still have what is used below."""
    fd = getattr(raw, "fd", None)
    missing = [f"Open.{a}" for a in _OPEN_ATTRS if not hasattr(fd, a)]
    conn = getattr(fd, "connection", None)
    missing += [f"Connection.{a}" for a in _CONNECTION_ATTRS if not hasattr(conn, a)]
    window = getattr(conn, "sequence_window", None)
    if not (isinstance(window, dict) and {"low", "high"} <= window.keys()):
        missing.append("Connection.sequence_window['low'/'high']")
    return _moved(missing)


def _moved(missing: list[str]) -> str:
    if not missing:
        return ""
    return (
        f"smbprotocol changed internals that livecam's smb transport uses ({', '.join(missing)});"
        " pin smbprotocol<1.18 (the versions tested) or update plugins/smb.py"
    )


def open_raw(unc: str, kw: dict[str, Any], *, write: bool = True) -> Any:
    """A raw smbclient handle on ``unc``: created or truncated for writing, size
    queries and renaming; with ``write`` false an existing file, only to be linked
    (left closed: ``link_and_close`` opens it in its compound)."""
    from smbclient._io import SMBFileIO
    from smbprotocol.open import FilePipePrinterAccessMask as Access

    if not write:
        return SMBFileIO(unc, mode="r", desired_access=Access.FILE_READ_ATTRIBUTES, **kw)
    access = Access.FILE_WRITE_DATA | Access.DELETE | Access.FILE_READ_ATTRIBUTES
    raw = SMBFileIO(unc, mode="w", desired_access=access, **kw)
    raw.open()
    return raw


def query_size(raw: Any) -> int:
    """The end of file the server holds for the open ``raw`` handle."""
    from smbclient._io import SMBFileTransaction, query_info
    from smbprotocol.file_info import FileStandardInformation

    with SMBFileTransaction(raw) as query:
        query_info(query, FileStandardInformation)
    return int(query.results[0]["end_of_file"].get_value())


def rename_and_close(raw: Any, unc: str) -> None:
    """Rename the open ``raw`` to ``unc`` WITHOUT replacing, and close it: one compound.
    Raises SMBOSError (EEXIST when the name is taken)."""
    import ntpath

    from smbclient._io import SMBFileTransaction, set_info
    from smbprotocol.file_info import FileRenameInformation

    rename = FileRenameInformation()
    rename["replace_if_exists"] = False
    # Below the share, as the handle's own name is.
    rename["file_name"] = ntpath.join(ntpath.dirname(raw.fd.file_name), ntpath.basename(unc))
    with SMBFileTransaction(raw) as commit:
        set_info(commit, rename)
        raw.close(transaction=commit)


def link_and_close(raw: Any, unc: str) -> None:
    """Give the file of ``raw`` the name ``unc`` too (a hard link, never replacing) and
    close it: one compound, which opens ``raw`` first when it is closed. Raises
    SMBOSError (EEXIST when the name is taken)."""
    import ntpath

    from smbclient._io import SMBFileTransaction, set_info
    from smbprotocol.file_info import FileLinkInformation

    link = FileLinkInformation()
    link["replace_if_exists"] = False
    link["file_name"] = ntpath.join(ntpath.dirname(raw.fd.file_name), ntpath.basename(unc))
    with SMBFileTransaction(raw) as commit:
        set_info(commit, link)
        if not raw.closed:
            raw.close(transaction=commit)


def writable(conn: Any, want: int) -> tuple[int, bool]:
    """(bytes of ``want`` one write may carry, whether credits for it are free now);
    one credit stays for a small request. Call under the credit lock."""
    from smbprotocol import MAX_PAYLOAD_SIZE

    window = conn.sequence_window
    free = window["high"] - window["low"] - 1
    return min(want, max(free, 1) * MAX_PAYLOAD_SIZE), free >= 1


def send_write(raw: Any, data: bytes, offset: int, growth: int) -> Any:
    """Send one write of ``data`` at ``offset`` on ``raw`` without waiting, asking
    ``growth`` credits more than it uses; returns a function that waits for the
    reply and returns how many bytes the server took."""
    from smbprotocol import MAX_PAYLOAD_SIZE

    fd = raw.fd
    conn = fd.connection
    msg, receive = fd.write(data, offset=offset, send=False)
    credits = (len(data) - 1) // MAX_PAYLOAD_SIZE + 1
    request = conn.send(
        msg,
        sid=fd.tree_connect.session.session_id,
        tid=fd.tree_connect.tree_connect_id,
        credit_request=credits + growth,
    )
    return lambda: receive(request)


@hookimpl
def livecam_register_transports(register):
    register("smb", SmbTransport)
