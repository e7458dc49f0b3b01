"""The sftp transport: one SSH connection, an SFTP channel per worker, paramiko's
failures classed."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar

from livecam.options import ConfigError
from livecam.transport import PermanentError, PublishError, TransientError
from livecam.transport.protocol import Directories
from livecam.transport.stores import BATCH_OPTIONS, StoreTransport
from livecam_plugins._ssh import (
    CONNECT_TIMEOUT,
    KEEPALIVE,
    SSH_OPTIONS,
    check_ssh_options,
    return_spread,
    ssh_answers,
)
from livecam_plugins.sftp.store import SftpStore
from livecam_plugins.sftp.upstream import load_paramiko, paramiko_problems

IO_TIMEOUT = 20  # a silent peer fails a read after this long


class ConnectFailed(Exception):
    """Connecting (or opening a channel) failed: what ``classify`` reads. Its cause
    is the network's or the SSH handshake's, never a refusal of an SFTP request,
    so an errno in it (EPERM from a firewall) says nothing of the NAS's files."""

    def __init__(self, cause: BaseException):
        super().__init__(str(cause))
        self.cause = cause


class SftpTransport(StoreTransport):
    """SFTP via paramiko: the publish protocol over SFTP channels (see the package doc)."""

    description = "SFTP (paramiko) to a chrooted SFTP-only account"
    options: ClassVar = {**SSH_OPTIONS, **BATCH_OPTIONS}
    batch_size: ClassVar[int] = 128

    def __init__(self, options: Any, *, timeout: float):
        super().__init__(options, timeout=timeout)
        self._ssh: Any = None
        self._sessions: list[Any] = []  # SFTP channels of the one connection
        self._dirs = Directories()
        self._window = self.new_window()

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        if load_paramiko() is None:
            raise ConfigError(f"{key}.plugin: sftp needs paramiko (pip install 'livecam[sftp]')")
        if problems := paramiko_problems():
            raise ConfigError(f"{key}.plugin: {problems}")
        check_ssh_options(opts, key)

    def reachable(self, timeout: float) -> bool:
        """Whether the NAS's sshd greets (its banner; no login): see Transport.reachable."""
        return ssh_answers(self.opts["host"], self.opts["port"], timeout)

    def return_spread(self) -> float:
        """From sshd's greeting time (``livecam_plugins._ssh.return_spread``)."""
        return return_spread(self.opts["host"], self.opts["port"])

    def describe(self) -> str:
        o_ = self.opts
        return f"sftp to {o_['user']}@{o_['host']}:{o_['port']} {o_['path']}"

    def stores(self, count: int) -> list[SftpStore]:
        """``count`` SFTP sessions (channels) on the one connection. Raises PublishError.

        paramiko's SFTPClient answers one request at a time, so each worker of a
        batch gets its own channel; they are opened together, once per connection.
        """
        self._connect()
        paramiko = load_paramiko()
        missing = count - len(self._sessions)
        try:
            if missing > 0:  # opened at once: each takes three round trips
                with ThreadPoolExecutor(missing) as pool:
                    self._sessions += pool.map(lambda _: self._session(), range(missing))
        except (OSError, EOFError, paramiko.SSHException) as exc:
            self.close()
            raise self.classify(ConnectFailed(exc), f"sftp {self.opts['host']}") from None
        return [
            SftpStore(s, self._dirs, self.opts["path"], self._window)
            for s in self._sessions[:count]
        ]

    def _session(self) -> Any:
        sftp = load_paramiko().SFTPClient.from_transport(self._ssh.get_transport())
        sftp.get_channel().settimeout(IO_TIMEOUT)
        return sftp

    def _connect(self) -> None:
        """Connect unless the connection is up. Raises PublishError."""
        if self._ssh is not None and self._ssh.get_transport().is_active():
            return
        self.close()
        paramiko = load_paramiko()
        if paramiko is None:
            raise PermanentError("sftp: paramiko is not installed")
        o_ = self.opts
        ssh = paramiko.SSHClient()
        ssh.load_host_keys(str(o_["known_hosts_file"]))
        ssh.set_missing_host_key_policy(paramiko.RejectPolicy())
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
        except (paramiko.SSHException, OSError, EOFError) as exc:
            ssh.close()
            where = f"sftp {o_['user']}@{o_['host']}:{o_['port']}"
            raise self.classify(ConnectFailed(exc), where) from None
        # A new connection: a restarted NAS may have lost directories seen before.
        self._ssh, self._sessions, self._dirs = ssh, [], Directories()
        self._window = self.new_window()

    @contextlib.contextmanager
    def attempt(self, store: Any, limit: float) -> Iterator[None]:
        # paramiko's reads time out (IO_TIMEOUT); the pipelined writes check this.
        store.limit, store.deadline = limit, time.monotonic() + limit
        yield

    def after_failure(self, error: BaseException) -> None:
        # The session may be half-dead; a fresh one next time is cheap and sure.
        self.close()

    def classify(self, error: BaseException, where: str) -> PublishError:
        """A failure to connect (``ConnectFailed``): permanent for a host key that
        does not match or is not pinned and for a refused login, else transient.
        A request's: OpenSSH's bare "Failure" is permanent (see below), the rest
        by errno (``Transport.classify``)."""
        if isinstance(error, ConnectFailed):
            return self._connect_error(error.cause, where)
        if isinstance(error, OSError) and error.errno is None and "Failure" in str(error):
            # OpenSSH's sftp-server reports ENOSPC and EROFS as a bare "Failure".
            return PermanentError(
                f"{where}: {error} (the server refused: no space left or a read-only target?)"
            )
        return super().classify(error, where)

    def _connect_error(self, cause: BaseException, where: str) -> PublishError:
        paramiko = load_paramiko()
        if isinstance(cause, paramiko.BadHostKeyException):
            return PermanentError(
                f"{where}: host key does not match {self.opts['known_hosts_file']} "
                f"(changed key?): got {cause.key.get_name()} {cause.key.fingerprint}"
            )
        if isinstance(cause, paramiko.AuthenticationException):
            return PermanentError(f"{where}: authentication refused: {cause}")
        permanent = "known_hosts" in str(cause)  # RejectPolicy: the host is not pinned
        return (PermanentError if permanent else TransientError)(f"{where}: {cause}")

    def close(self) -> None:
        if self._ssh is not None:
            self._ssh.close()
        self._ssh = None
        self._sessions = []
