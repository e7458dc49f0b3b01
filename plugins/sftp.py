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
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import posixpath
import time
from pathlib import Path
from typing import Any, ClassVar

from livecam_plugins._ssh import SSH_OPTIONS, check_ssh_options

from livecam import hookimpl
from livecam.options import ConfigError
from livecam.transport import PermanentError, PublishError, TransientError, Transport

KEEPALIVE = 5  # seconds between SSH keepalives
CONNECT_TIMEOUT = 10
IO_TIMEOUT = 20  # a silent peer fails a read after this long
BLOCK = 1 << 20
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

    def __init__(self, options: Any, *, timeout: float):
        super().__init__(options, timeout=timeout)
        self._ssh: Any = None
        self._sftp: Any = None

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
        self._ssh, self._sftp = ssh, sftp
        return sftp

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
        self._ssh = self._sftp = None

    # --- publish -----------------------------------------------------------------------------

    def publish(self, local: Path, remote: str, *, size: int, digest: str) -> bool:
        """Publish over SFTP; False if the same size and SHA-256 are there already.

        Raises PermanentError (host key, auth, permission, no space, read-only,
        other content under the name) or TransientError (network, timeout).
        """
        paramiko = _paramiko()
        target = posixpath.join(self.opts["path"], remote)
        try:
            sftp = self._connect()
            return self._publish(sftp, local, target, size, digest)
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

    def _publish(self, sftp: Any, local: Path, target: str, size: int, digest: str) -> bool:
        directory, name = posixpath.split(target)
        self._makedirs(sftp, directory)
        try:
            st = sftp.stat(target)
        except FileNotFoundError:
            st = None
        if st is not None:
            if st.st_size == size and self._remote_digest(sftp, target) == digest:
                return False
            raise PermanentError(
                f"sftp {target} already exists with other content; not overwritten"
            )
        tmp = posixpath.join(directory, f".{name}.part")
        deadline = time.monotonic() + self.timeout
        try:
            with open(local, "rb") as src, sftp.open(tmp, "wb") as dst:
                dst.set_pipelined(True)
                while block := src.read(BLOCK):
                    dst.write(block)
                    if time.monotonic() > deadline:
                        raise TransientError(f"sftp {target}: timed out after {self.timeout:g}s")
        except (OSError, PublishError):
            # A partial temp would hold space on a full disk; the session may still work.
            with contextlib.suppress(Exception):
                sftp.remove(tmp)
            raise
        written = sftp.stat(tmp).st_size
        if written != size:
            # Pipelined writes that the server refused (ENOSPC) come back as a short file.
            with contextlib.suppress(Exception):
                sftp.remove(tmp)
            raise PermanentError(
                f"sftp {target}: the NAS stored {written} of {size} bytes (no space left?)"
            )
        if "posix-rename@openssh.com" in getattr(sftp, "_extensions", {}):
            sftp.posix_rename(tmp, target)
        else:
            sftp.rename(tmp, target)
        return True

    def _makedirs(self, sftp: Any, directory: str) -> None:
        """mkdir -p, from the top; an existing component is fine."""
        path = "/" if directory.startswith("/") else ""
        for part in directory.split("/"):
            if not part or part == ".":
                continue
            path = posixpath.join(path, part)
            try:
                sftp.stat(path)
            except FileNotFoundError:
                try:
                    sftp.mkdir(path)
                except OSError as exc:
                    try:
                        sftp.stat(path)  # made meanwhile by someone else: fine
                    except OSError:
                        raise exc from None

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
