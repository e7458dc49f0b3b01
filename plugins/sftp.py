"""The ``sftp`` transport: SFTP from Python (paramiko), for chrooted SFTP-only accounts.

Such an account has no shell, so everything is an SFTP request, filling in the
one publish protocol (``livecam.publish``): stat, mkdir, write ``.<name>.part``,
FSTAT its size on the open handle after the pipelined writes, and the plain SFTP
``rename``, which never replaces (SFTP v3; OpenSSH's sftp-server links the new
name and then unlinks the old): a file that appears under the name meanwhile is
kept and compared, never overwritten. "Already there" means same size and, read
back only then, the same SHA-256. Every file is created with mode 0444 (the open
handle still writes): with the NAS role's ``internal-sftp -P`` list (no remove,
no posix-rename, no setstat), nothing published can be truncated, overwritten
or removed through this account, livecam's own included.

The NAS host key must be in ``known_hosts_file``; anything else is refused. One
connection is kept open between publishes, with SSH keepalives; every socket
read has a timeout, and a failed connection is dropped and made again next time.
paramiko is imported only when used, so this module loads without it. A batch
keeps ``workers`` segments in flight, each on its own SFTP channel of the
connection, with at most ``window`` bytes written and not yet acknowledged on
the connection (``livecam.store_transport.Window`` says why). The pipelined
requests use paramiko's ``_request``, ``_async_request`` and ``_read_response``.
"""

from __future__ import annotations

import contextlib
import importlib
import posixpath
import secrets
import stat
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, BinaryIO, ClassVar

from livecam_plugins._ssh import (
    CONNECT_TIMEOUT,
    KEEPALIVE,
    SSH_OPTIONS,
    check_ssh_options,
    ssh_answers,
)

from livecam import hookimpl
from livecam.options import ConfigError
from livecam.publish import (
    Directories,
    TempFile,
    TempRenameStore,
    classify_oserror,
    read_digest,
)
from livecam.store_transport import BATCH_OPTIONS, WINDOW, StoreTransport, Window
from livecam.transport import Item, PermanentError, PublishError, TransientError

IO_TIMEOUT = 20  # a silent peer fails a read after this long
REQUEST = 32768  # bytes per SFTP write request (OpenSSH's sftp does the same)
READ = 8 * REQUEST  # bytes read from the local file at once: small buffers per worker
READ_ONLY = 0o444  # every file this transport creates, from its creation


def _paramiko() -> Any:
    try:
        import paramiko
    except ImportError:
        return None
    return paramiko


# paramiko internals this module uses (tested with paramiko 5.1; the sftp extra caps
# it below 6): check-config refuses with one line naming what moved.
_PARAMIKO_INTERNALS = {
    "paramiko.sftp": ("CMD_OPEN", "CMD_HANDLE", "CMD_WRITE", "CMD_STATUS", "CMD_FSTAT",
                      "CMD_ATTRS", "CMD_CLOSE", "int64"),
    "paramiko.sftp_client": ("SFTPClient._request", "SFTPClient._async_request",
                             "SFTPClient._read_response"),
    "paramiko.sftp_attr": ("SFTPAttributes._from_msg",),
}  # fmt: skip


def paramiko_problems() -> str:
    """'' when paramiko still has the internals used here, else what moved."""
    missing = []
    for module, names in _PARAMIKO_INTERNALS.items():
        mod = importlib.import_module(module)
        for name in names:
            owner: Any = mod
            for part in name.split("."):
                owner = getattr(owner, part, None)
            if owner is None:
                missing.append(f"{module}.{name}")
    if not missing:
        return ""
    return (
        f"paramiko changed internals that livecam's sftp transport uses ({', '.join(missing)});"
        " pin paramiko<6 (the versions tested) or update plugins/sftp.py"
    )


class SftpStore(TempRenameStore):
    """The protocol's operations as SFTP requests over one session (channel)."""

    def __init__(self, sftp: Any, dirs: Directories, root: str, window: Window):
        super().__init__(dirs, root)
        self.sftp, self.window = sftp, window
        self.limit, self.deadline = 0.0, float("inf")  # per item: the transport's ``attempt``

    def path(self, remote: str) -> str:
        return posixpath.join(self.root, remote)

    def where(self, remote: str) -> str:
        return f"sftp {self.path(remote)}"

    def size(self, remote: str) -> int | None:
        try:
            return int(self.sftp.stat(self.path(remote)).st_size)
        except FileNotFoundError:
            return None

    def digest(self, remote: str) -> str:
        with self.sftp.open(self.path(remote), "rb") as f:
            f.prefetch()
            return read_digest(f)

    def mkdir(self, directory: str) -> None:
        try:
            self.sftp.mkdir(directory)
        except FileNotFoundError:
            raise
        except OSError:
            # OpenSSH answers EEXIST (and EROFS) with a bare "Failure", a chroot's
            # root-owned parent with EACCES: there already, or a real refusal.
            if not self._is_dir(directory):
                raise

    def _is_dir(self, path: str) -> bool:
        try:
            return stat.S_ISDIR(self.sftp.stat(path).st_mode or 0)
        except OSError:
            return False

    def open_temp(self, temp: str) -> TempFile:
        path = self.path(temp)
        try:
            return SftpTemp(self, path, self._create_read_only(path))
        except PermissionError:
            # Our own leftover from a cut attempt, read-only since it was made, on a
            # NAS that refuses removes: write beside it (the NAS's retention
            # clears leftovers; a NAS that allows removes gets this one removed).
            if self.size(temp) is None:
                raise
            with contextlib.suppress(OSError):
                self.sftp.remove(path)
                return SftpTemp(self, path, self._create_read_only(path))
            path = f"{path}-{secrets.token_hex(4)}"
            return SftpTemp(self, path, self._create_read_only(path))

    def _create_read_only(self, path: str) -> bytes:
        """Open ``path`` for writing (created or truncated), mode 0444 from its creation:
        the handle writes, but nobody can open the file for writing again, so once
        renamed into place it is never truncated or overwritten (the NAS role
        refuses chmod). paramiko's ``open`` sends no mode, so the request is made
        here; returns the handle."""
        from paramiko.sftp import (
            CMD_HANDLE,
            CMD_OPEN,
            SFTP_FLAG_CREATE,
            SFTP_FLAG_TRUNC,
            SFTP_FLAG_WRITE,
            SFTPError,
        )
        from paramiko.sftp_attr import SFTPAttributes

        attrs = SFTPAttributes()
        attrs.st_mode = READ_ONLY
        flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
        kind, msg = self.sftp._request(CMD_OPEN, path, flags, attrs)
        if kind != CMD_HANDLE:
            raise SFTPError("Expected handle")
        return bytes(msg.get_binary())

    def short_write(self, remote: str, written: int, size: int) -> PublishError:
        # Pipelined writes that the server refused (ENOSPC) come back as a short file.
        return PermanentError(
            f"{self.where(remote)}: the NAS stored {written} of {size} bytes (no space left?)"
        )


class SftpTemp(TempFile):
    """``.<name>.part`` open on the NAS, written with pipelined requests.

    The requests go out without waiting (paramiko's ``_async_request``) and their
    answers are read in order (``_read_response``, which raises on an error
    status), so every write is acknowledged before the size is believed, and the
    bytes not yet acknowledged stay within the connection's ``Window``.
    """

    def __init__(self, store: SftpStore, path: str, handle: bytes):
        self.store, self.path, self.handle = store, path, handle
        self.closed = False

    def write(self, src: BinaryIO) -> None:
        from paramiko.sftp import CMD_WRITE, int64

        sftp, window = self.store.sftp, self.store.window
        pending: deque[tuple[int, int]] = deque()  # (request number, bytes)
        offset = 0
        try:
            while block := src.read(READ):
                view = memoryview(block)
                for start in range(0, len(view), REQUEST):
                    chunk = view[start : start + REQUEST]
                    while not window.take(len(chunk)):
                        if not pending:
                            window.wait(len(chunk))
                            break
                        self._acknowledged(*pending.popleft())
                    try:
                        num = sftp._async_request(
                            type(None), CMD_WRITE, self.handle, int64(offset), bytes(chunk)
                        )
                    except BaseException:
                        window.release(len(chunk))
                        raise
                    pending.append((num, len(chunk)))
                    offset += len(chunk)
                if time.monotonic() > self.store.deadline:
                    raise TransientError(f"sftp {self.path}: timed out after {self.store.limit:g}s")
            while pending:
                self._acknowledged(*pending.popleft())
        finally:
            window.release(sum(n for _, n in pending))

    def _acknowledged(self, num: int, length: int) -> None:
        """Wait for write request ``num``'s answer (raises on an error status)."""
        from paramiko.sftp import CMD_STATUS

        try:
            kind, _ = self.store.sftp._read_response(num)
        finally:
            self.store.window.release(length)
        if kind != CMD_STATUS:
            raise OSError(f"sftp {self.path}: unexpected answer {kind} to a write")

    def size(self) -> int:
        """FSTAT on the open handle, then its close sent right behind it: the server
        answers in order, so the size is the handle's after every write, and the
        close costs no round trip of its own."""
        from paramiko.sftp import CMD_ATTRS, CMD_CLOSE, CMD_FSTAT
        from paramiko.sftp_attr import SFTPAttributes

        sftp = self.store.sftp
        stat_num = sftp._async_request(type(None), CMD_FSTAT, self.handle)
        close_num = sftp._async_request(type(None), CMD_CLOSE, self.handle)
        self.closed = True
        kind, msg = sftp._read_response(stat_num)
        if kind != CMD_ATTRS:
            raise OSError(f"sftp {self.path}: unexpected answer {kind} to FSTAT")
        size = int(SFTPAttributes._from_msg(msg).st_size)
        sftp._read_response(close_num)
        return size

    def rename(self, remote: str) -> None:
        self._close()
        target = self.store.path(remote)
        try:
            self.store.sftp.rename(self.path, target)
        except OSError:
            # A taken name comes back as a bare "Failure", like other refusals.
            if self.store.size(remote) is not None:
                raise FileExistsError(target) from None
            raise

    def _close(self) -> None:
        if not self.closed:
            from paramiko.sftp import CMD_CLOSE

            self.closed = True
            self.store.sftp._request(CMD_CLOSE, self.handle)

    def remove(self) -> None:
        try:
            self._close()
        finally:
            self.store.sftp.remove(self.path)


class SftpTransport(StoreTransport):
    """SFTP via paramiko: the publish protocol over SFTP channels (see the module doc)."""

    description = "SFTP (paramiko) to a chrooted SFTP-only account"
    options: ClassVar = {**SSH_OPTIONS, **BATCH_OPTIONS}
    batch_size: ClassVar[int] = 128

    def __init__(self, options: Any, *, timeout: float):
        super().__init__(options, timeout=timeout)
        self._ssh: Any = None
        self._sessions: list[Any] = []  # SFTP channels of the one connection
        self._dirs = Directories()
        self._window = Window(self.opts.get("window") or WINDOW)

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        if _paramiko() is None:
            raise ConfigError(f"{key}.plugin: sftp needs paramiko (pip install 'livecam[sftp]')")
        if problems := paramiko_problems():
            raise ConfigError(f"{key}.plugin: {problems}")
        check_ssh_options(opts, key)

    def reachable(self, timeout: float) -> bool:
        """Whether the NAS's sshd greets (its banner; no login): see Transport.reachable."""
        return ssh_answers(self.opts["host"], self.opts["port"], timeout)

    def describe(self) -> str:
        o_ = self.opts
        return f"sftp to {o_['user']}@{o_['host']}:{o_['port']} {o_['path']}"

    def stores(self, count: int) -> list[SftpStore]:
        """``count`` SFTP sessions (channels) on the one connection. Raises PublishError.

        paramiko's SFTPClient answers one request at a time, so each worker of a
        batch gets its own channel; they are opened together, once per connection.
        """
        self._connect()
        paramiko = _paramiko()
        missing = count - len(self._sessions)
        try:
            if missing > 0:  # opened at once: each takes three round trips
                with ThreadPoolExecutor(missing) as pool:
                    self._sessions += pool.map(lambda _: self._session(), range(missing))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise TransientError(f"sftp {self.opts['host']}: {exc}") from None
        return [
            SftpStore(s, self._dirs, self.opts["path"], self._window)
            for s in self._sessions[:count]
        ]

    def _session(self) -> Any:
        sftp = _paramiko().SFTPClient.from_transport(self._ssh.get_transport())
        sftp.get_channel().settimeout(IO_TIMEOUT)
        return sftp

    def _connect(self) -> None:
        """Connect unless the connection is up. Raises PublishError."""
        if self._ssh is not None and self._ssh.get_transport().is_active():
            return
        self.close()
        paramiko = _paramiko()
        if paramiko is None:
            raise PermanentError("sftp: paramiko is not installed")
        o_ = self.opts
        ssh = paramiko.SSHClient()
        ssh.load_host_keys(str(o_["known_hosts_file"]))
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
        where = f"sftp {o_['user']}@{o_['host']}:{o_['port']}"
        try:
            ssh.connect(
                o_["host"],
                port=o_["port"],
                username=o_["user"],
                key_filename=str(o_["identity_file"]),
                look_for_keys=False,
                allow_agent=False,
                timeout=CONNECT_TIMEOUT,
                banner_timeout=CONNECT_TIMEOUT,
                auth_timeout=CONNECT_TIMEOUT,
                channel_timeout=CONNECT_TIMEOUT,
            )
            ssh.get_transport().set_keepalive(KEEPALIVE)
        except paramiko.BadHostKeyException as exc:
            ssh.close()
            raise PermanentError(
                f"{where}: host key does not match {o_['known_hosts_file']} (changed key?): "
                f"got {exc.key.get_name()} {exc.key.fingerprint}"
            ) from None
        except paramiko.AuthenticationException as exc:
            ssh.close()
            raise PermanentError(f"{where}: authentication refused: {exc}") from None
        except paramiko.SSHException as exc:
            ssh.close()
            permanent = "known_hosts" in str(exc)  # RejectPolicy: host not pinned
            raise (PermanentError if permanent else TransientError)(f"{where}: {exc}") from None
        except (OSError, EOFError) as exc:
            ssh.close()
            raise TransientError(f"{where}: {exc}") from None
        # A new connection: a restarted NAS may have lost directories seen before.
        self._ssh, self._sessions, self._dirs = ssh, [], Directories()
        self._window = Window(self._window.limit)

    @contextlib.contextmanager
    def attempt(self, store: Any, limit: float) -> Iterator[None]:
        # paramiko's reads time out (IO_TIMEOUT); the pipelined writes check this.
        store.limit, store.deadline = limit, time.monotonic() + limit
        yield

    def failure(self, exc: Exception, store: Any, item: Item) -> PublishError:
        # The session may be half-dead; a fresh one next time is cheap and sure.
        self.close()
        where = store.where(item.remote)
        if isinstance(exc, OSError) and exc.errno is None and "Failure" in str(exc):
            # OpenSSH's sftp-server reports ENOSPC and EROFS as a bare "Failure".
            return PermanentError(
                f"{where}: {exc} (the server refused: no space left or a read-only target?)"
            )
        if isinstance(exc, OSError):
            return classify_oserror(exc, where)
        return TransientError(f"{where}: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
        self._ssh = None
        self._sessions = []


@hookimpl
def livecam_register_transports(register):
    register("sftp", SftpTransport)
