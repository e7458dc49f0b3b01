"""The ``sftp`` transport: SFTP from Python (paramiko), for chrooted SFTP-only accounts.

Such an account has no shell, so everything is done with SFTP requests: make the
missing directories, write ``.<name>.part`` beside the target (a fixed name, so a
retry after a dropped connection overwrites its own leftover instead of piling up
temp files), check its size, and rename it into place (``posix-rename@openssh.com``
where the server offers it). "Already there" means same size and, read back only
then, the same SHA-256.

The NAS host key must be in ``known_hosts_file``; anything else is refused. One
connection is kept open between publishes, with SSH keepalives; every socket
read has a timeout, and a failed connection is dropped and made again next time.
paramiko is imported only when used, so this module loads without it.

Round trips, not bytes, limit a backlog over a link with latency. Directories
made or seen are remembered for the connection (a reconnect forgets them; a
directory removed meanwhile is made again when the create fails), the size is
read with FSTAT on the open handle after the pipelined writes, and a batch keeps
``WORKERS`` segments in flight, each on its own SFTP channel of the connection.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import posixpath
import stat
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from livecam_plugins._batch import run_concurrently
from livecam_plugins._ssh import SSH_OPTIONS, check_ssh_options

from livecam import hookimpl
from livecam.options import ConfigError
from livecam.transport import (
    ConflictError,
    Item,
    PermanentError,
    PublishError,
    TransientError,
    Transport,
)

KEEPALIVE = 5  # seconds between SSH keepalives
CONNECT_TIMEOUT = 10
IO_TIMEOUT = 20  # a silent peer fails a read after this long
BLOCK = 1 << 20
# Segments in flight at once in a batch: with 40 ms RTT one 2 MB segment spends
# about as long on its five round trips as on its data; three keep the link busy.
WORKERS = 3
PERMANENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS}


def _paramiko() -> Any:
    try:
        import paramiko
    except ImportError:
        return None
    return paramiko


class SftpTransport(Transport):
    """SFTP via paramiko: temp name, size check, rename (see the module doc)."""

    description = "SFTP (paramiko) to a chrooted SFTP-only account"
    options: ClassVar = dict(SSH_OPTIONS)
    batch_size: ClassVar[int] = 32

    def __init__(self, options: Any, *, timeout: float):
        super().__init__(options, timeout=timeout)
        self._ssh: Any = None
        self._sftp: Any = None
        self._extra: list[Any] = []  # more sessions for a batch's workers
        # Directories made or seen on this connection; forgotten on reconnect, as
        # a restarted NAS may have lost them.
        self._dirs: set[str] = set()
        self._dirs_lock = threading.Lock()

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        if _paramiko() is None:
            raise ConfigError(f"{key}.plugin: sftp needs paramiko (pip install 'livecam[sftp]')")
        check_ssh_options(opts, key)

    def describe(self) -> str:
        o_ = self.opts
        return f"sftp to {o_['user']}@{o_['host']}:{o_['port']} {o_['path']}"

    # --- connection ------------------------------------------------------------------------

    def _connect(self) -> Any:
        """The open SFTP session, connecting first if needed. Raises PublishError."""
        if self._sftp is not None and self._ssh.get_transport().is_active():
            return self._sftp
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
                o_["host"], port=o_["port"], username=o_["user"],
                key_filename=str(o_["identity_file"]), look_for_keys=False, allow_agent=False,
                timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT,
                auth_timeout=CONNECT_TIMEOUT, channel_timeout=CONNECT_TIMEOUT,
            )  # fmt: skip
            ssh.get_transport().set_keepalive(KEEPALIVE)
            sftp = ssh.open_sftp()
            sftp.get_channel().settimeout(IO_TIMEOUT)
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
        self._ssh, self._sftp, self._dirs = ssh, sftp, set()
        return sftp

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
        self._ssh = self._sftp = None
        self._extra = []

    def _sessions(self, count: int) -> list[Any]:
        """``count`` SFTP sessions (channels) on the one connection. Raises PublishError.

        paramiko's SFTPClient answers one request at a time, so each worker of a
        batch gets its own channel; opening one costs two round trips, once per
        connection.
        """
        first = self._connect()
        paramiko = _paramiko()
        try:
            while len(self._extra) < count - 1:
                sftp = paramiko.SFTPClient.from_transport(self._ssh.get_transport())
                sftp.get_channel().settimeout(IO_TIMEOUT)
                self._extra.append(sftp)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise TransientError(f"sftp {self.opts['host']}: {exc}") from None
        return [first, *self._extra[: count - 1]]

    # --- publish -----------------------------------------------------------------------------

    def publish(self, local: Path, remote: str, *, size: int, digest: str) -> bool:
        """Publish over SFTP; False if the same size and SHA-256 are there already.

        Raises PermanentError (host key, auth, permission, no space, read-only,
        other content under the name) or TransientError (network, timeout).
        """
        return self._publish_item(self._connect(), Item(local, remote, size, digest), 1)

    def publish_batch(self, items: Sequence[Item]) -> Iterator[tuple[Item, bool]]:
        """Publish up to WORKERS segments at once, each on its own channel.

        Yields ``(item, sent)`` once that item is renamed into place; raises
        PermanentError or TransientError (as ``publish``) for the rest, after the
        items in flight have ended. See ``run_concurrently``.
        """
        sessions = self._sessions(min(WORKERS, len(items)))
        n = len(sessions)
        workers = [functools.partial(self._publish_item, s, share=n) for s in sessions]
        yield from run_concurrently(items, workers)

    def _publish_item(self, sftp: Any, item: Item, share: int) -> bool:
        """One item over one session; ``share`` segments share the link meanwhile."""
        paramiko = _paramiko()
        target = posixpath.join(self.opts["path"], item.remote)
        try:
            return self._publish(sftp, item, target, self.timeout * share)
        except PublishError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            # The session may be half-dead; a fresh one next time is cheap and sure.
            self.close()
            code = getattr(exc, "errno", None)
            msg = f"sftp {target}: {exc.strerror if getattr(exc, 'strerror', None) else exc}"
            if code in PERMANENT_ERRNOS:
                raise PermanentError(msg) from None
            if code is None and "Failure" in str(exc):
                # OpenSSH's sftp-server reports ENOSPC and EROFS as a bare "Failure".
                raise PermanentError(
                    f"{msg} (the server refused: no space left or a read-only target?)"
                ) from None
            raise TransientError(msg) from None

    def _publish(self, sftp: Any, item: Item, target: str, limit: float) -> bool:
        """Round trips besides the data: stat target, open, fstat, close, rename
        (plus one mkdir per directory new on this connection)."""
        directory, name = posixpath.split(target)
        self._makedirs(sftp, directory)
        try:
            st = sftp.stat(target)
        except FileNotFoundError:
            st = None
        if st is not None:
            if st.st_size == item.size and self._remote_digest(sftp, target) == item.digest:
                return False
            raise ConflictError(
                f"sftp {target} already exists with other content; not overwritten",
                remote=item.remote,
            )
        tmp = posixpath.join(directory, f".{name}.part")
        deadline = time.monotonic() + limit
        try:
            with open(item.local, "rb") as src, self._create(sftp, tmp, directory) as dst:
                dst.set_pipelined(True)
                while block := src.read(BLOCK):
                    dst.write(block)
                    if time.monotonic() > deadline:
                        raise TransientError(f"sftp {target}: timed out after {limit:g}s")
                dst.flush()
                # FSTAT is answered after every write before it: the size the NAS
                # holds, without a separate stat of the temp after the close.
                written = dst.stat().st_size
        except (OSError, PublishError):
            # A partial temp would hold space on a full disk; the session may still work.
            with contextlib.suppress(Exception):
                sftp.remove(tmp)
            raise
        if written != item.size:
            # Pipelined writes that the server refused (ENOSPC) come back as a short file.
            with contextlib.suppress(Exception):
                sftp.remove(tmp)
            raise PermanentError(
                f"sftp {target}: the NAS stored {written} of {item.size} bytes (no space left?)"
            )
        if "posix-rename@openssh.com" in getattr(sftp, "_extensions", {}):
            sftp.posix_rename(tmp, target)
        else:
            sftp.rename(tmp, target)
        return True

    def _create(self, sftp: Any, tmp: str, directory: str) -> Any:
        """Open ``tmp`` for writing; a directory removed on the NAS since it was
        remembered is made again (once)."""
        try:
            return sftp.open(tmp, "wb")
        except FileNotFoundError:
            self._dirs.discard(directory)
            self._makedirs(sftp, directory)
            return sftp.open(tmp, "wb")

    def _makedirs(self, sftp: Any, directory: str) -> None:
        """mkdir -p, from the leaf up, remembered for this connection.

        A directory made or seen once costs nothing more until a reconnect. A
        new one costs one mkdir (its parent is usually there); a missing parent
        is made first. Raises OSError as paramiko does.
        """
        if directory in self._dirs or directory in ("", "/", "."):
            return
        # One worker makes a new directory while the others wait: no mkdir race.
        with self._dirs_lock:
            self._makedirs_locked(sftp, directory)

    def _makedirs_locked(self, sftp: Any, directory: str) -> None:
        if directory in self._dirs or directory in ("", "/", "."):
            return
        try:
            sftp.mkdir(directory)
        except FileNotFoundError:
            parent = posixpath.dirname(directory)
            if parent == directory:
                raise
            self._dirs.discard(parent)  # remembered, but the NAS lost it
            self._makedirs_locked(sftp, parent)
            sftp.mkdir(directory)
        except OSError as exc:
            # OpenSSH answers EEXIST (and EROFS) with a bare "Failure", a chroot's
            # root-owned parent with EACCES: there already, or a real refusal.
            if not self._is_dir(sftp, directory):
                raise exc from None
        self._dirs.add(directory)

    @staticmethod
    def _is_dir(sftp: Any, path: str) -> bool:
        try:
            return stat.S_ISDIR(sftp.stat(path).st_mode or 0)
        except OSError:
            return False

    def _remote_digest(self, sftp: Any, target: str) -> str:
        h = hashlib.sha256()
        with sftp.open(target, "rb") as f:
            f.prefetch()
            while block := f.read(BLOCK):
                h.update(block)
        return h.hexdigest()


@hookimpl
def livecam_register_transports(register):
    register("sftp", SftpTransport)
