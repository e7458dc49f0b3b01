"""The ``rsync`` transport: rsync over the OpenSSH client, one multiplexed connection.

The NAS side is meant to restrict the node's key to
``command="rrsync -wo <dir>",restrict``: the node can write below its directory
and nothing else, it can neither read nor list. Everything here works within
that:

- a missing directory is made by rsync itself (``--mkpath``);
- rsync writes a dot-named temp file beside the target, checks the whole-file
  checksum as it goes, fsyncs (``--fsync``) and renames: nothing half-written is
  ever visible under a final name;
- ``--ignore-existing`` never overwrites a file on the NAS. When rsync skipped the
  file because one is there, a second, dry run with ``--checksum`` asks the NAS
  to compare contents (the receiver hashes its own file; nothing is read back),
  so "already there" means same size and same content.

One SSH master connection (``ControlMaster``, socket in a private directory of
this process) carries every rsync, so a backlog of hundreds of segments pays one
handshake, not one per file. ``ConnectTimeout``, ``ServerAliveInterval`` and
rsync's ``--timeout`` notice a dead peer in seconds; ``run_command`` bounds each
attempt as a whole.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from livecam_plugins._ssh import SSH_OPTIONS, check_ssh_options

from livecam import hookimpl
from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.transport import PermanentError, PublishError, TransientError, Transport, run_command

KEEPALIVE = 5  # seconds between SSH keepalives; 3 unanswered = the link is dead
CONNECT_TIMEOUT = 10

# stderr text -> why a person must act. Anything else is transient (network, restarts).
PERMANENT = [
    (re.compile(r"REMOTE HOST IDENTIFICATION HAS CHANGED|Host key verification failed|"
                r"No \S+ host key is known"),
     "host key of the NAS does not match known_hosts_file (changed key?)"),
    (re.compile(r"Permission denied \(|Too many authentication failures"),
     "authentication refused (is the node's key authorized on the NAS?)"),
    (re.compile(r"No space left on device|Disk quota exceeded"), "no space left on the NAS"),
    (re.compile(r"Read-only file system"), "the NAS target is read-only"),
    (re.compile(r"Permission denied|Operation not permitted"), "permission denied on the NAS"),
    (re.compile(r"has been disabled on this server|rrsync error|not allowed"),
     "the NAS's rrsync refused the request"),
]  # fmt: skip


def kib_per_second(value: Any, key: str) -> int:
    """``bwlimit``: a whole number is KiB/s as in rsync; '5M' or '800K' are bytes/s."""
    if isinstance(value, int) and not isinstance(value, bool):
        return o.integer(0)(value, key)
    return o.size(value, key) // 1024


def classify(stderr: str, what: str) -> PublishError:
    """Turn ssh/rsync error output into a Permanent or Transient error for ``what``."""
    lines = [ln.strip() for ln in stderr.splitlines()
             if ln.strip() and not ln.startswith("@") and "home directory" not in ln]  # fmt: skip
    detail = "; ".join(lines[-3:]) or "no error output"
    for pattern, reason in PERMANENT:
        if pattern.search(stderr):
            return PermanentError(f"{what}: {reason}: {detail}")
    return TransientError(f"{what}: {detail}")


class RsyncTransport(Transport):
    """rsync over one persistent, multiplexed OpenSSH connection (see the module doc)."""

    description = "rsync over OpenSSH, one multiplexed connection (rrsync -wo on the NAS)"
    options: ClassVar = {
        **SSH_OPTIONS,
        "bwlimit": Option(kib_per_second, 0, "KiB/s (or '5M' bytes/s); 0: unlimited"),
        "compress": Option(o.boolean, False, "H.264 does not compress; leave off"),
        "control_persist": Option(o.positive_duration, "5m", "idle master connection lifetime"),
    }

    def __init__(self, options: Any, *, timeout: float):
        super().__init__(options, timeout=timeout)
        # A private 0700 directory, made on first use: whoever can reach the
        # socket can use the login. Short, for the 108-byte socket path limit.
        self._control_dir: Path | None = None

    @property
    def _control_path(self) -> Path:
        if self._control_dir is None:
            self._control_dir = Path(tempfile.mkdtemp(prefix="livecam-ssh-"))
        return self._control_dir / "master"

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        check_ssh_options(opts, key)
        for tool in ("rsync", "ssh"):
            if shutil.which(tool) is None:
                raise ConfigError(f"{key}.plugin: rsync needs the {tool} command installed")

    def describe(self) -> str:
        o_ = self.opts
        return f"rsync to {o_['user']}@{o_['host']}:{o_['port']} {o_['path']}"

    # --- ssh -------------------------------------------------------------------------------

    def _ssh_argv(self) -> list[str]:
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
            "-o", f"ControlPath={self._control_path}",
        ]  # fmt: skip

    def _master_alive(self) -> bool:
        if not self._control_path.exists():
            return False
        with socket.socket(socket.AF_UNIX) as s:
            try:
                s.connect(str(self._control_path))
                return True
            except OSError:
                # A master killed hard leaves its socket behind; make room for a new one.
                self._control_path.unlink(missing_ok=True)
                return False

    def _start_master(self) -> None:
        """Open the master connection (``ssh -M -N -f``); raises PublishError."""
        argv = [*self._ssh_argv(), "-M", "-N", "-f",
                "-o", f"ControlPersist={int(self.opts['control_persist'])}",
                self.opts["host"]]  # fmt: skip
        # The backgrounded master keeps its stderr; a file, not a pipe, so nothing waits on it.
        errfile = self._control_path.with_name("master.err")
        with open(errfile, "w+") as err:
            try:
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                        stderr=err, start_new_session=True)  # fmt: skip
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
            raise classify(text, f"ssh to {self.opts['host']}")

    # --- rsync -----------------------------------------------------------------------------

    def _rsync(self, *args: str, local: Path, dest: str) -> str:
        """Run one rsync over the master connection; return its stdout. Raises PublishError."""
        ssh = [*self._ssh_argv(), "-o", "ControlMaster=no"]
        argv = [
            "rsync", "--timeout", str(KEEPALIVE * 4), "--itemize-changes", *args,
            "-e", shlex.join(ssh), "--", str(local), f"{self.opts['host']}:{dest}",
        ]  # fmt: skip
        if self.opts["bwlimit"]:
            argv.insert(1, f"--bwlimit={self.opts['bwlimit']}")
        if self.opts["compress"]:
            argv.insert(1, "--compress")
        proc = run_command(argv, timeout=self.timeout)
        if proc.returncode != 0:
            raise classify(proc.stderr.decode(errors="replace"), f"rsync {dest}")
        return proc.stdout.decode(errors="replace")

    def publish(self, local: Path, remote: str, *, size: int, digest: str) -> bool:
        """Publish via rsync; False if the NAS holds the same content already.

        Raises PermanentError (host key, auth, permission, no space, other content
        under the name) or TransientError (network, timeout, server restart).
        """
        if not self._master_alive():
            self._start_master()
        target = posixpath.normpath(posixpath.join(self.opts["path"], remote))
        # The destination is the directory, never the file: rrsync hands rsync an
        # existing file as /proc/self/fd/N, where rsync can neither compare nor
        # replace it, while a directory is pinned and worked in normally.
        dest, name = posixpath.dirname(target) + "/", posixpath.basename(target)
        with _named(local, name) as source:
            out = self._rsync("--mkpath", "--ignore-existing", "--fsync", local=source, dest=dest)
            if _item(out, name):
                return True
            # Skipped: a file is there. Same content? The NAS hashes its copy (dry run).
            item = _item(self._rsync("--dry-run", "--checksum", "-ii", local=source, dest=dest),
                         name)  # fmt: skip
        if item.startswith(".f") and not item[2:11].strip():
            return False
        raise PermanentError(
            f"{target} already exists on the NAS with other content; not overwritten ({item})"
        )

    def close(self) -> None:
        if self._control_dir is None:
            return
        if self._master_alive():
            with contextlib.suppress(PublishError):
                run_command([*self._ssh_argv(), "-O", "exit", self.opts["host"]], timeout=10)
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None


def _item(out: str, name: str) -> str:
    """rsync's itemized line for ``name`` ('<f+++++++++ name'), or ''."""
    return next((ln for ln in out.splitlines() if ln.endswith(" " + name)), "")


@contextlib.contextmanager
def _named(local: Path, name: str) -> Iterator[Path]:
    """``local`` under the file name ``name`` (a hard link in a dot-directory if needed).

    rsync names the remote file after the source when the destination is a
    directory; a site's remote_path may rename segments.
    """
    if local.name == name:
        yield local
        return
    tmpdir = Path(tempfile.mkdtemp(prefix=".rsync-", dir=local.parent))
    try:
        os.link(local, tmpdir / name)
        yield tmpdir / name
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)


@hookimpl
def livecam_register_transports(register):
    register("rsync", RsyncTransport)
