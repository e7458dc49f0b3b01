"""The transport contract: publish one local segment file to one remote path.

A transport plugin subclasses ``Transport`` and registers it with
``livecam_register_transports``. The shipper calls ``publish`` for one segment at
a time, from one thread, and deletes the local copy only after it returns.

``publish`` must:
1. write the file under a temporary name beside the target (a dot-name, so no
   partial file is ever visible under a final name);
2. verify it (size always; a digest where the protocol can);
3. rename it into place, never replacing a file that is there (one that
   appeared since the check is compared as in 4);
4. return ``False`` without sending when the target already holds a file of the
   same size and digest (a retry after a crash), ``True`` after a real publish;
   raise ``ConflictError`` when it holds other content (never overwrite it).

Every network call has a hard timeout (``self.timeout`` seconds). Failures raise
``TransientError`` (retried with exponential backoff) or ``PermanentError`` (auth
refused, host key mismatch, no space, permission denied: alarm, retried slowly).
No secret may appear in argv, logs or error messages.

``reachable`` is the cheap check the retry policy runs every few seconds while a
transient failure backs off (``livecam.shipper.retry``): a TCP connect to ``endpoint``
by default, so the shipper notices a returning NAS within seconds without
repeating the expensive publish against a dead one.

``livecam.transport.protocol`` implements steps 1-4 once, over a few store operations, and
``livecam.transport.stores.StoreTransport`` makes a transport of such a store.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from livecam.options import Option
from livecam.storage.files import file_digest
from livecam.transport.errors import ConflictError as ConflictError
from livecam.transport.errors import PermanentError as PermanentError
from livecam.transport.errors import PublishError as PublishError
from livecam.transport.errors import TransientError as TransientError
from livecam.transport.errors import conflict_path as conflict_path
from livecam.transport.protocol import classify_oserror

CHECK_TIMEOUT = 10.0  # seconds ``online`` waits for the NAS by default


class CommandFailed(Exception):
    """A helper command (rsync, ssh) exited with ``code``: what ``classify`` reads."""

    def __init__(self, code: int, stderr: str):
        super().__init__(stderr.strip().splitlines()[-1] if stderr.strip() else f"exit {code}")
        self.code = code
        self.stderr = stderr


class Hold(Protocol):
    """What a transport sees of an item's place in a batch (the shipper lends the
    item to eviction meanwhile: ``livecam.shipper.handoff``).

    ``start`` it before sending the item: False means eviction took it first (skip
    it: neither published nor an error). ``taken``: eviction took it; a transport
    that sets ``Transport.takes_started`` lets eviction take an item it already
    started, whose local file then goes at once, and reports it only if it still
    proved it on the NAS."""

    @property
    def taken(self) -> bool: ...

    def start(self) -> bool: ...


class Unheld:
    """The hold of an item nobody lends: it always starts, nothing takes it."""

    taken = False

    def start(self) -> bool:
        return True


@dataclass(frozen=True)
class Item:
    """One file to publish: where it is, where it goes, what it must be.

    ``digest`` (SHA-256, hex) is read from the file on first use only: a transport
    that verifies by other means (rsync's own checksums) never pays for it.
    """

    local: Path
    remote: str
    size: int
    known_digest: str | None = None
    hold: Hold = field(default_factory=Unheld, compare=False, repr=False)

    @functools.cached_property
    def digest(self) -> str:
        return self.known_digest or file_digest(self.local)


class Transport:
    """Base class of transports. Subclasses set ``options`` and implement ``publish``."""

    #: The plugin's own YAML keys under ``transport:`` (besides ``plugin`` and ``timeout``).
    options: ClassVar[Mapping[str, Option]] = {}
    #: One line for ``livecam plugins``.
    description: ClassVar[str] = ""
    #: How many segments the shipper hands ``publish_batch`` at once (when it has
    #: that many waiting). A transport that pays a fixed cost per call raises it.
    batch_size: ClassVar[int] = 1
    #: Whether eviction may take an item whose publish has started (its local file
    #: is deleted at once; the transport must then tolerate the vanished source
    #: and report the item only if it still proved it on the NAS). False: only
    #: items of a batch not yet started can be taken (``Hold``).
    takes_started: ClassVar[bool] = False

    def __init__(self, options: Mapping[str, Any], *, timeout: float):
        self.opts = dict(options)
        self.timeout = timeout

    @classmethod
    def check(cls, opts: Mapping[str, Any], key: str) -> None:
        """Validate option values together (files exist, host key present...).

        Called whenever a config is loaded, after each option was converted. Raise
        ``livecam.options.ConfigError`` naming ``key`` + the option.
        """

    def describe(self) -> str:
        """Where this transport ships to, for logs and status (no secrets). A query:
        it makes no network call (``online`` does)."""
        return type(self).__name__

    def online(self) -> str:
        """Reach the NAS with the node's own settings and say, in one line, what
        answered (``livecam check-config --online``). Raises PublishError when it
        does not. The default: the reachability probe."""
        answer = self.reachable(CHECK_TIMEOUT)
        if answer is False:
            raise TransientError(f"{self.describe()}: no answer within {CHECK_TIMEOUT:g}s")
        return f"{self.describe()}: " + ("answers" if answer else "nothing to probe")

    def classify(self, error: BaseException, where: str) -> PublishError:
        """``error`` (what the transport's library or tool raised; not a PublishError)
        as a PermanentError (a person must act) or a TransientError, its message
        naming ``where`` and never a secret. Every transport classes its failures
        here, and only here. The default: an OSError by its errno
        (``livecam.transport.protocol.PERMANENT_ERRNOS``), anything else transient."""
        if isinstance(error, OSError):
            return classify_oserror(error, where)
        return TransientError(f"{where}: {type(error).__name__}: {error}")

    def publish(self, local: Path, remote: str, *, size: int, digest: str) -> bool:
        """Publish ``local`` to ``remote`` (relative POSIX path). See the module doc."""
        raise NotImplementedError

    def publish_batch(self, items: Sequence[Item]) -> Iterator[tuple[Item, bool]]:
        """Publish several files, each under the contract of ``publish``.

        Yields ``(item, sent)`` for each item as soon as it is verified on the NAS
        (in any order), and raises PublishError for the rest: an item not yielded
        is not published, and the shipper keeps it. An item whose ``hold`` does not
        ``start`` (eviction took it) is skipped: neither yielded nor an error. The
        default publishes one by one; a transport with a per-call cost overrides it.
        """
        for item in items:
            if not item.hold.start():
                continue
            yield item, self.publish(item.local, item.remote, size=item.size, digest=item.digest)

    def batch_limit(self) -> int | None:
        """Bytes the shipper hands the next ``publish_batch`` at most (always at
        least one segment); None: only ``batch_size`` limits it.

        A transport that proves arrival only when a call ends keeps its calls short
        with it: verified segments then leave the node within seconds."""
        return None

    def close(self) -> None:
        """Release connections. Called when the shipper stops."""

    def endpoint(self) -> tuple[str, int] | None:
        """The NAS's (host, TCP port), for ``reachable``; None if there is none.

        The default reads the options ``host`` (or ``server``) and ``port``; a
        transport with other keys overrides it."""
        host = self.opts.get("host") or self.opts.get("server")
        port = self.opts.get("port")
        if isinstance(host, str) and host and isinstance(port, int):
            return host, port
        return None

    def reachable(self, timeout: float) -> bool | None:
        """Whether the NAS answers at all, cheaply, within ``timeout`` seconds.

        Called only while the publisher waits after a transient failure, every
        few seconds, never concurrently with itself; it must not log in or send
        data. True: it answers (a wait after an outage ends early); False: it
        does not; None: this transport cannot tell (the wait runs its course).
        The default opens and closes one TCP connection to ``endpoint()``."""
        where = self.endpoint()
        if where is None:
            return None
        try:
            with socket.create_connection(where, timeout=timeout):
                return True
        except OSError:
            return False

    def return_spread(self) -> float:
        """Seconds over which the nodes that find this NAS back at once spread their
        first attempts (each waits a random 0..this after its probe's answer; asked
        right after ``reachable`` said True). The default: 1 s. An SSH transport
        derives it from sshd's greeting time: a NAS that greets slowly spreads
        the fleet further (``livecam_plugins._ssh.return_spread``)."""
        return 1.0


def answers(host: str, port: int, timeout: float, *, hello: bytes, expect: bytes) -> bool:
    """Whether the server at ``host``:``port`` answers ``hello`` with ``expect``
    (within its first 1 KiB) in ``timeout`` seconds; then hangs up.

    The reachability probes of the transports whose protocol has a cheap first
    exchange (sshd's greeting, an SMB2 NEGOTIATE). A bare TCP connect is not
    enough: a firewall or proxy on the way may accept connections for a host
    that is down."""
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(hello)
            seen = b""
            while expect not in seen and len(seen) < 1024:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = sock.recv(256)
                if not chunk:
                    return False
                seen += chunk
            return expect in seen
    except OSError:
        return False


def run_command(
    argv: Sequence[str],
    *,
    timeout: float,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run a helper command with a hard timeout; a timeout is a TransientError.

    The child gets its own process group and the whole group is killed on
    timeout, so an ssh stuck on a silent peer cannot outlive the attempt.
    """
    try:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except OSError as exc:
        raise PermanentError(f"cannot run {argv[0]}: {exc}") from exc
    try:
        out, err = proc.communicate(input, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        # Stuck in the kernel (a hung hard mount): abandoned rather than hang too.
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=2)
        raise TransientError(f"{Path(argv[0]).name} timed out after {timeout:g}s") from None
    return subprocess.CompletedProcess(list(argv), proc.returncode, out, err)


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
