"""The SSH master connections, one per lane of calls, and the rsyncs they carry.

One OpenSSH master connection (``ControlMaster``, its socket in a private
directory of this process) carries the rsyncs of one lane, so a backlog pays a
handshake per lane, and one rsync start-up per call instead of one per segment.
Two lanes, not one for both: a call's control messages (its start, its end, a
dry run) would queue behind the other call's data in one TCP connection,
seconds at a node's share of a busy link.

``ConnectTimeout``, ``ServerAliveInterval`` and rsync's ``--timeout`` notice a
dead peer in seconds; ``run_command`` bounds each rsync as a whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from livecam.storage.state import pid_alive
from livecam.transport import (
    CommandFailed,
    PermanentError,
    PublishError,
    ServerBusy,
    TransientError,
    run_command,
)
from livecam_plugins._ssh import (
    BUSY,
    CONNECT_TIMEOUT,
    GREETS,
    KEEPALIVE,
    greeted_within,
    ssh_greeting,
)
from livecam_plugins.rsync.pacer import Pacer

log = logging.getLogger("livecam.rsync")

CONTROL_PREFIX = "livecam-ssh-"
GREETING_TIMEOUT = 3.0  # seconds for sshd's identification line before a new connection
GREETING_FRESH = 10.0  # s: a greeting this recent spares a new connection its own
TURNED_AWAY = (
    "sshd closed the connection before its greeting (busy: more connections at once "
    "than its MaxStartups allows); again in a moment"
)


class ControlDir:
    """A transport's private 0700 directory (control sockets, staging trees), made
    on first use: whoever can reach a socket can use the login. Short, for the
    108-byte socket path limit."""

    def __init__(self) -> None:
        self._path: Path | None = None

    @property
    def made(self) -> bool:
        return self._path is not None

    def path(self) -> Path:
        """The directory, made now if it is not (after removing stale ones)."""
        if self._path is None:
            parent = Path(os.environ.get("RUNTIME_DIRECTORY") or tempfile.gettempdir())
            remove_stale_control_dirs(parent)
            # The pid in the name lets the next shipper clean up after a SIGKILLed one.
            self._path = Path(
                tempfile.mkdtemp(prefix=f"{CONTROL_PREFIX}{os.getpid()}-", dir=parent)
            )
        return self._path

    def remove(self) -> None:
        if self._path is not None:
            shutil.rmtree(self._path, ignore_errors=True)
            self._path = None


class Lane:
    """Lane ``n``'s master connection to the NAS of ``opts``, and the rsyncs over it.

    A lane carries one call at a time; each call is handed its lane."""

    def __init__(self, n: int, opts: Mapping[str, Any], control: ControlDir):
        self.n = n
        self.opts = opts
        self._control = control

    @property
    def path(self) -> Path:
        """The master's socket."""
        return self._control.path() / ("master" if self.n == 0 else f"master{self.n}")

    def ssh_argv(self) -> list[str]:
        o_ = self.opts
        return [
            "ssh", "-F", "none", "-p", str(o_["port"]), "-l", o_["user"],
            "-i", str(o_["identity_file"]),
            "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={o_['known_hosts_file']}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", "UpdateHostKeys=no",
            "-o", "CheckHostIP=no",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
            "-o", f"ServerAliveInterval={KEEPALIVE}", "-o", "ServerAliveCountMax=3",
            "-o", "Compression=no", "-o", "LogLevel=ERROR",
            "-o", f"ControlPath={self.path}",
        ]  # fmt: skip

    def alive(self) -> bool:
        if not self.path.exists():
            return False
        if socket_alive(self.path):
            return True
        # A master killed hard leaves its socket behind; make room for a new one.
        self.path.unlink(missing_ok=True)
        return False

    def connect(self, pacer: Pacer) -> None:
        """A new master connection, after sshd's greeting (which sizes the calls:
        ``Pacer.greeted``). Raises CommandFailed when ssh fails, else PublishError:
        ServerBusy when sshd turned the greeting's connection away."""
        # A greeting first (cheap, bounded): ssh against a NAS that is down can sit
        # out its whole ConnectTimeout, and a node would miss its return. Unless
        # sshd greeted moments ago (the probe that saw the NAS return): one
        # connection less for an sshd that a whole fleet reaches at once.
        host, port = self.opts["host"], self.opts["port"]
        seconds = greeted_within(host, port, GREETING_FRESH)
        if seconds is None:
            t0 = time.monotonic()
            greeting = ssh_greeting(host, port, GREETING_TIMEOUT)
            if greeting == BUSY:
                raise ServerBusy(f"ssh to {host}:{port}: {TURNED_AWAY}")
            if greeting != GREETS:
                raise TransientError(
                    f"ssh to {host}:{port}: no SSH greeting within {GREETING_TIMEOUT:g}s "
                    "(NAS down or unreachable)"
                )
            seconds = time.monotonic() - t0
        if self.n == 0:
            # Only the first lane's: the second connects while the first one's
            # call fills the link, and its greeting waits behind that data.
            pacer.greeted(seconds)
        t0 = time.monotonic()
        self.start()
        log.info(
            "ssh connection to %s up in %.1fs (sshd greeted in %.2fs)",
            host,
            time.monotonic() - t0,
            seconds,
        )

    def start(self) -> None:
        """Open the master connection (``ssh -M -N -f``). Raises CommandFailed when
        ssh fails (for ``classify``), PermanentError when it cannot run,
        TransientError when it times out."""
        argv = [*self.ssh_argv(), "-M", "-N", "-f",
                "-o", f"ControlPersist={int(self.opts['control_persist'])}",
                self.opts["host"]]  # fmt: skip
        # The backgrounded master keeps its stderr; a file, not a pipe, so nothing waits on it.
        errfile = self.path.with_name("master.err")
        with open(errfile, "w+") as err:
            try:
                proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                    start_new_session=True,
                )
            except OSError as exc:
                raise PermanentError(f"cannot run ssh: {exc}") from exc
            try:
                code = proc.wait(timeout=CONNECT_TIMEOUT + 10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, 9)
                proc.wait()
                raise TransientError(f"ssh to {self.opts['host']} timed out") from None
            err.seek(0)
            text = err.read()
        if code != 0:
            raise CommandFailed(code, text)

    def exit(self) -> None:
        """End the master connection (and what it still had to send)."""
        if self.alive():
            with contextlib.suppress(PublishError):
                run_command([*self.ssh_argv(), "-O", "exit", self.opts["host"]], timeout=10)
            # It may take a moment to go: its socket's name is free for the next now.
            self.path.unlink(missing_ok=True)

    def rsync(
        self, *args: str, source: Path, timeout: float, subdir: str = ""
    ) -> tuple[int, str, str]:
        """Run one rsync of the tree ``source`` into ``path`` (or its ``subdir``) over
        the master connection.

        Returns (exit code, stdout, stderr); raises only TransientError when
        ``timeout`` ran out and PermanentError when rsync cannot be started.
        """
        ssh = [*self.ssh_argv(), "-o", "ControlMaster=no"]
        dest = posixpath.normpath(posixpath.join(self.opts["path"], subdir)) + "/"
        argv = [
            # -8: names are printed as they are (UTF-8), so itemized paths match ours.
            "rsync", "-8", "--timeout", str(KEEPALIVE * 4), "--itemize-changes", *args,
            "-e", shlex.join(ssh), "--", f"{source}/", f"{self.opts['host']}:{dest}",
        ]  # fmt: skip
        if self.opts["bwlimit"]:
            argv.insert(1, f"--bwlimit={self.opts['bwlimit']}")
        if self.opts["compress"]:
            argv.insert(1, "--compress")
        proc = run_command(argv, timeout=timeout)
        return (
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )


def socket_alive(path: Path) -> bool:
    """Whether something listens on the unix socket ``path``."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def remove_stale_control_dirs(parent: Path) -> None:
    """Remove control directories that a killed shipper left in ``parent``.

    A directory is stale when it is ours, the pid in its name is gone and no
    master listens on its sockets (a master outliving its shipper ends after
    ``control_persist``; its directory goes at the next start after that).
    """
    uid = os.getuid()
    with contextlib.suppress(OSError):
        for d in parent.iterdir():
            if not d.name.startswith(CONTROL_PREFIX):
                continue
            try:
                st = d.lstat()
                pid = d.name[len(CONTROL_PREFIX) :].split("-", 1)[0]
                if not d.is_dir() or d.is_symlink() or st.st_uid != uid:
                    continue
                if not pid.isdigit() or pid_alive(int(pid)):
                    continue
                if any(socket_alive(m) for m in d.glob("master*")):
                    continue
            except OSError:
                continue
            shutil.rmtree(d, ignore_errors=True)
