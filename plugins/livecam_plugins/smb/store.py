"""The smb transport's store: the publish protocol's operations as SMB requests."""

from __future__ import annotations

import errno
import stat
import threading
from collections.abc import Mapping
from typing import Any, BinaryIO, Protocol

from livecam.transport import TransientError
from livecam.transport.pipeline import PipelinedWriter, Wait, Window
from livecam.transport.protocol import Directories, TempFile, TempRenameStore, read_digest
from livecam_plugins.smb import upstream

REQUEST = 1 << 18  # bytes per write request at most (4 credits); the window bounds how many
CREDIT = 1 << 16  # bytes one credit carries (smbprotocol's MAX_PAYLOAD_SIZE)
CREDIT_GROWTH = 8  # extra credits asked per write, so several workers can write at once
ACCESS_DENIED = 0xC0000022  # STATUS_ACCESS_DENIED: smbprotocol gives it no errno


def load_smbclient() -> Any:
    """The smbclient module, or None when smbprotocol is not installed."""
    try:
        import smbclient
    except ImportError:
        return None
    return smbclient


def denied(exc: OSError) -> bool:
    """Whether the server answered STATUS_ACCESS_DENIED."""
    return getattr(exc, "ntstatus", None) == ACCESS_DENIED


class Session(Protocol):
    """What a store reads (and ``renames_refused``: writes) of its transport
    (``SmbTransport``): all of it is the connection's, forgotten with it."""

    @property
    def opts(self) -> Mapping[str, Any]: ...

    dirs: Directories
    window: Window
    credit_lock: threading.Lock
    renames_refused: bool


class SmbStore(TempRenameStore):
    """The protocol's operations as SMB requests; one per worker, one session."""

    def __init__(self, transport: Session, kw: dict[str, Any]):
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
            return int(load_smbclient().stat(self.unc(self.full(remote)), **self.kw).st_size)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # SMBOSError: no FileNotFoundError subclass
                raise
            return None

    def digest(self, remote: str) -> str:
        with load_smbclient().open_file(self.unc(self.full(remote)), "rb", **self.kw) as f:
            return read_digest(f)

    def mkdir(self, directory: str) -> None:
        try:
            load_smbclient().mkdir(self.unc(directory), **self.kw)
        except OSError as exc:
            # An append-only share refuses a create of any name that exists, even a
            # directory's: one that is there is what was asked for.
            if denied(exc) and self._is_dir(directory):
                return
            raise _as_builtin(exc) from None

    def _is_dir(self, directory: str) -> bool:
        try:
            return stat.S_ISDIR(load_smbclient().stat(self.unc(directory), **self.kw).st_mode)
        except OSError:
            return False

    def open_temp(self, temp: str) -> TempFile:
        try:
            return SmbTemp(self, temp, upstream.open_raw(self.unc(self.full(temp)), self.kw))
        except OSError as exc:
            raise _as_builtin(exc) from None

    def leftover_refused(self, error: OSError) -> bool:
        # An earlier attempt's temp on an append-only share cannot be reopened for
        # writing, nor removed (the default ``remove_leftover`` does not try):
        # written beside, and the NAS's retention removes leftovers.
        return denied(error)


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
        window = self.store.t.window
        # At least two requests fit in the window, each a whole number of credits.
        request = max(CREDIT, min(REQUEST, window.limit // 2 // CREDIT * CREDIT))
        size = min(request, upstream.max_write(self.raw))
        PipelinedWriter(window, self._send, size, read=request).write(src)

    def _send(self, chunk: memoryview, offset: int, alone: bool) -> tuple[int, Wait] | None:
        with self.store.t.credit_lock:
            length, free = upstream.writable(self.raw, len(chunk))
            if not (free or alone):
                return None  # out of credits: a reply brings more
            receive = upstream.send_write(self.raw, bytes(chunk[:length]), offset, CREDIT_GROWTH)

        def wait() -> None:
            if receive() != length:
                raise TransientError(f"smb: the NAS took part of a {length} byte write")

        return length, wait

    def size(self) -> int:
        return upstream.query_size(self.raw)

    def rename(self, remote: str) -> None:
        target = self.store.unc(self.store.full(remote))
        t = self.store.t
        try:
            if t.renames_refused:
                upstream.link_and_close(self.raw, target)
                return
            try:
                upstream.rename_and_close(self.raw, target)
            except OSError as exc:
                if not denied(exc):
                    raise
                # An append-only share (vfs_worm) refuses renaming even the temp this
                # handle wrote; the compound closed it. Link it instead, from now on.
                t.renames_refused = True
                temp = self.store.unc(self.store.full(self.temp))
                upstream.link_and_close(upstream.open_raw(temp, self.store.kw, write=False), target)
        except OSError as exc:
            raise _as_builtin(exc) from None

    def remove(self) -> None:
        try:
            self.raw.close()
        finally:
            load_smbclient().remove(self.store.unc(self.store.full(self.temp)), **self.store.kw)


def _as_builtin(exc: OSError) -> OSError:
    """An SMBOSError as the builtin the protocol knows (FileExistsError...), else itself."""
    if exc.errno == errno.EEXIST:
        return FileExistsError(exc.errno, str(exc))
    if exc.errno == errno.ENOENT:
        return FileNotFoundError(exc.errno, str(exc))
    return exc
