"""The ``rsync`` transport: rsync over the OpenSSH client, one multiplexed connection.

The NAS side is meant to restrict the node's key to
``command="rrsync -wo <dir>",restrict``: the node can write below its directory
and nothing else, it can neither read nor list. Everything here works within
that:

- a batch of segments is one rsync call: each segment is a symlink in a private
  staging tree that mirrors the remote paths, sent with ``-r --copy-links``, so
  segments of different ``{site}/{node}/{camera}/{date}`` directories go together
  and rsync itself makes missing directories (``-r``, ``--mkpath`` for ``path``);
- rsync writes a dot-named temp file beside each target, checks the whole-file
  checksum as it goes, fsyncs (``--fsync``) and renames: nothing half-written is
  ever visible under a final name;
- ``--ignore-existing`` never overwrites a file on the NAS. For files rsync
  skipped because one is there, a second, dry run with ``--checksum`` asks the
  NAS to compare contents (the receiver hashes its own file; nothing is read
  back), so "already there" means same size and same content. Where the NAS
  enforces ``--ignore-existing`` itself (``rrsync -no-overwrite``, as the NAS
  role sets it up) that dry run skips existing files too; the files it skipped
  are compared by a third dry run into a directory that is never made, with
  ``path`` as its ``--compare-dest``.

Calls are short (``CALL_SECONDS``): rsync proves a call's files only when it
exits, and only then does the shipper delete their local copies. A batch is
several calls, and two of them overlap: the next starts when the running one
should be half done, so its start-up (rrsync's start and about ten round
trips: 0.4 s at 40 ms RTT) runs while the other still fills the link. A call
that runs far longer than it was sized for is stopped, and what arrived is
proven by the NAS's checksums (``OVERDUE``). The
NAS's rrsync must let a key run two calls at once (``-no-lock``, as the NAS
role sets it up); where it refuses the second ("Another instance of rrsync"),
the transport goes on with one call at a time and says so once. Eviction may
still take a segment of the call in flight (``Transport.takes_started``): its
file is deleted at once. An rsync that already opened it sends it whole (and it
counts as published); one that had not reports it vanished, which fails nothing
here (``_only_taken_vanished``), and the shipper counts it as evicted. A source
that vanished for any other reason is a failure as before.

One SSH master connection per lane of calls (``ControlMaster``, sockets in a
private directory of this process) carries its rsyncs, so a backlog pays a
handshake per lane, and one rsync start-up per call instead of one per
segment. Two, not one for both: a call's control messages (its start, its end,
a dry run) would queue behind the other call's data in one TCP connection,
seconds at a node's share of a busy link.
``ConnectTimeout``, ``ServerAliveInterval`` and rsync's ``--timeout`` notice a
dead peer in seconds; ``run_command`` bounds each call as a whole.
"""

from __future__ import annotations

import contextlib
import logging
import os
import posixpath
import queue
import re
import shlex
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from livecam_plugins._ssh import (
    CONNECT_TIMEOUT,
    KEEPALIVE,
    SSH_OPTIONS,
    check_ssh_options,
    ssh_answers,
)

from livecam import hookimpl
from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.publish import check_remote, conflict
from livecam.state import pid_alive
from livecam.transport import (
    ConflictError,
    Item,
    PermanentError,
    PublishError,
    TransientError,
    Transport,
    run_command,
)

log = logging.getLogger("livecam.rsync")

# rsync proves a call's segments only when the call ends (exit 0), so they are
# deleted locally only then (per-file --remove-source-files is what the NAS's
# rrsync -no-del refuses, rightly). A call is sized to last a few seconds at the
# rate this node measured on its recent calls (each older call counting half as
# much, so that a batch's small last call does not set it alone): a verified
# segment leaves the spool within about that long even when fifty nodes share
# the link. How many
# seconds: a call's fixed cost over the master connection (rrsync's start and
# about ten round trips) must stay a few percent, so a call lasts CALL_RTTS
# times the NAS's greeting time (about one round trip, measured at each new
# connection), between CALL_SECONDS and CALL_MAX_SECONDS: 3 s on a LAN, 6-10 s
# at 40 ms RTT. The first call after a start, an outage or a pause of PAUSE
# seconds (such as the hold after a return) carries one segment, and while the
# calls measured took under MEASURED seconds (too short to tell what the link
# gives this node when others share it) a call is at most twice as big. CALL_BYTES
# caps a call on a fast link (whole segments; a bigger one goes alone).
# Eviction need not wait for a call: it may take a segment in flight
# (``takes_started``, see _publish_call).
# A batch (``batch_limit``) is BATCH_SECONDS at the recent rate, cut into
# calls as above. Up to LANES calls run at once: the next one starts when the
# running one should be half done at that rate. So two calls share the link
# nearly all the time, one's start-up runs while the other sends, and the rate
# a call measures is its share (the calls sized from it still last a call's
# seconds). Starting early costs nothing; starting late leaves the link idle,
# and a rate measured on a small call (whose start-up weighs more) errs late.
# Only the first call of a batch pays its start-up alone.
CALL_SECONDS = 3.0
CALL_MAX_SECONDS = 10.0
CALL_RTTS = 200
MEASURED = 1.0
PAUSE = 2.0  # s between calls: a drain's calls follow each other at once
# A call of several segments still running OVERDUE times a call's seconds was
# sized from a rate the link no longer gives (more nodes on it than a moment
# ago): it is stopped, what arrived is proven by the NAS's checksums, and the
# rest goes again in calls sized from what this one managed.
OVERDUE = 3.0
BATCH_SECONDS = 60.0
LANES = 2
GREETING_TIMEOUT = 3.0  # seconds for sshd's identification line before a new connection
CALL_BYTES = 128 * 1024 * 1024
PARTIAL = (23, 24)  # rsync: some files were not transferred / vanished; the rest may be there
CONTROL_PREFIX = "livecam-ssh-"
# An itemized line: 11 flag characters, a space, the path ('<f+++++++++ a/b.mp4').
# The destination of the compare dry run under rrsync -no-overwrite: never made.
CHECK_DIR = ".livecam-compare"
ITEMIZED = re.compile(r"^([<>ch.*][fdLDS][ .+?a-zA-Z]{9}) (.+)$")
# The sender's lines for a source that is gone: before the file list (our symlink
# dangles) or after it (the file went before rsync opened it); and its summary.
VANISHED = re.compile(r'^(?:file has vanished|symlink has no referent): "(.+)"$')
VANISHED_SUMMARY = re.compile(
    r"^rsync (?:warning|error): some files(?: vanished before they could be transferred"
    r"|/attrs were not transferred \(see previous errors\)) \(code 2[34]\)"
)

# rrsync's single-run lock per directory (a key without -no-lock): this node's
# other call, or the NAS side of one it gave up on (a timeout, a cut link), has
# not ended yet. Transient, not "refused".
BUSY = re.compile(r"Another instance of rrsync is already accessing")
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


class Busy(TransientError):
    """The NAS's rrsync holds its single-run lock (``BUSY``)."""


class Overdue(TransientError):
    """A call ran past OVERDUE times a call's seconds and was stopped."""


def classify(stderr: str, what: str) -> PublishError:
    """Turn ssh/rsync error output into a Permanent or Transient error for ``what``."""
    lines = [
        ln.strip()
        for ln in stderr.splitlines()
        if ln.strip() and not ln.startswith("@") and "home directory" not in ln
    ]
    detail = "; ".join(lines[-3:]) or "no error output"
    if BUSY.search(stderr):
        return Busy(f"{what}: the NAS still runs this node's previous call: {detail}")
    for pattern, reason in PERMANENT:
        if pattern.search(stderr):
            return PermanentError(f"{what}: {reason}: {detail}")
    return TransientError(f"{what}: {detail}")


class RsyncTransport(Transport):
    """rsync over one persistent, multiplexed OpenSSH connection (see the module doc)."""

    description = "rsync over OpenSSH, one multiplexed connection (rrsync -wo on the NAS)"
    #: Segments per batch from the shipper (which also keeps a batch within
    #: ``batch_limit`` bytes); publish_batch splits a batch into rsync calls.
    batch_size = 256
    #: Eviction may delete a segment of the call in flight (see _publish_call).
    takes_started = True
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
        # What recent calls sent and how long they took, each older call counting
        # half as much (0 bytes: no rate to go by; see the module doc).
        self._bytes = 0.0
        self._seconds = 0.0
        self._ended = 0.0  # when the last call that sent any ended (monotonic)
        self._rate_lock = threading.Lock()  # two calls may end at once
        self._call_seconds = CALL_SECONDS  # from the greeting time (module doc)
        self._lanes = 1 if self.opts["bwlimit"] else LANES  # two calls would each get bwlimit
        self._master_lock = threading.Lock()  # one connect at a time, whichever call needs it
        self._lane = threading.local()  # .n: the lane of the call this thread runs

    def _private_dir(self) -> Path:
        """This transport's 0700 directory (control socket, staging), made on first use."""
        if self._control_dir is None:
            parent = Path(os.environ.get("RUNTIME_DIRECTORY") or tempfile.gettempdir())
            _remove_stale_control_dirs(parent)
            # The pid in the name lets the next shipper clean up after a SIGKILLed one.
            self._control_dir = Path(
                tempfile.mkdtemp(prefix=f"{CONTROL_PREFIX}{os.getpid()}-", dir=parent)
            )
        return self._control_dir

    @property
    def _control_path(self) -> Path:
        """The master socket of this thread's call's lane (``_Call.lane``)."""
        lane = getattr(self._lane, "n", 0)
        return self._private_dir() / ("master" if lane == 0 else f"master{lane}")

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        check_ssh_options(opts, key)
        for tool in ("rsync", "ssh"):
            if shutil.which(tool) is None:
                raise ConfigError(f"{key}.plugin: rsync needs the {tool} command installed")

    def reachable(self, timeout: float) -> bool:
        """Whether the NAS's sshd greets (its banner; no login): see Transport.reachable."""
        return ssh_answers(self.opts["host"], self.opts["port"], timeout)

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
        if _socket_alive(self._control_path):
            return True
        # A master killed hard leaves its socket behind; make room for a new one.
        self._control_path.unlink(missing_ok=True)
        return False

    def _exit_master(self) -> None:
        """End this lane's master connection (and what it still had to send)."""
        if self._master_alive():
            with contextlib.suppress(PublishError):
                run_command([*self._ssh_argv(), "-O", "exit", self.opts["host"]], timeout=10)
            # It may take a moment to go: its socket's name is free for the next now.
            self._control_path.unlink(missing_ok=True)

    def _start_master(self) -> None:
        """Open the master connection (``ssh -M -N -f``); raises PublishError."""
        argv = [*self._ssh_argv(), "-M", "-N", "-f",
                "-o", f"ControlPersist={int(self.opts['control_persist'])}",
                self.opts["host"]]  # fmt: skip
        # The backgrounded master keeps its stderr; a file, not a pipe, so nothing waits on it.
        errfile = self._control_path.with_name("master.err")
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
            raise classify(text, f"ssh to {self.opts['host']}")

    # --- rsync -----------------------------------------------------------------------------

    def _rsync(
        self, *args: str, source: Path, timeout: float, subdir: str = ""
    ) -> tuple[int, str, str]:
        """Run one rsync of the tree ``source`` into ``path`` (or its ``subdir``) over
        the master connection.

        Returns (exit code, stdout, stderr); raises only TransientError when
        ``timeout`` ran out and PermanentError when rsync cannot be started.
        """
        ssh = [*self._ssh_argv(), "-o", "ControlMaster=no"]
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

    def publish(self, local: Path, remote: str, *, size: int, digest: str) -> bool:
        """Publish one file (a batch of one); False if the NAS holds the same content.

        Raises PermanentError (host key, auth, permission, no space, other content
        under the name) or TransientError (network, timeout, server restart).
        """
        # publish_batch yields every item it does not raise for: exactly one here.
        ((_, sent),) = self.publish_batch([Item(local, remote, size, digest)])
        return sent

    def batch_limit(self) -> int:
        """Bytes of the next batch: BATCH_SECONDS at the recent calls' rate
        (``publish_batch`` cuts it into calls); one segment when there is no rate
        (at start, after a failure) or after a pause of PAUSE seconds (such as the
        hold after a return: others may share the link now)."""
        if self._bytes and time.monotonic() - self._ended > PAUSE:
            self._measured(0, 0)  # others may share the link now: measure anew
        if not self._bytes:
            return 0
        return int(self._rate() * BATCH_SECONDS)

    def _rate(self) -> float:
        """Bytes per second of the recent calls (0: none since a failure or a pause)."""
        return self._bytes / max(0.01, self._seconds)

    def _measured(self, sent: int, seconds: float) -> None:
        """A call sent ``sent`` bytes in ``seconds``; 0, 0: start over (a failure,
        a pause)."""
        with self._rate_lock:
            if not sent:
                self._bytes = self._seconds = 0.0
                return
            self._ended = time.monotonic()
            self._bytes = self._bytes / 2 + sent
            self._seconds = self._seconds / 2 + seconds

    def _call_limit(self) -> int:
        """Bytes of the next call: a call's seconds (module doc) at the last
        measured rate, CALL_BYTES at most; at most twice what was measured while that
        took under MEASURED seconds. With no rate, CALL_BYTES: whoever handed in the
        batch sized it (the shipper's first after a start or a failure is one segment).

        Why: a rate measured in a fraction of a second, while this node had the link
        to itself, says nothing once the fleet is back on it. A call sized from it
        can last 30 times longer and keep its segments in the spool all that time."""
        if not self._bytes:
            return CALL_BYTES
        limit = int(self._rate() * self._call_seconds)
        if self._seconds < MEASURED:
            limit = min(limit, int(2 * self._bytes))
        return min(CALL_BYTES, limit)

    def publish_batch(self, items: Sequence[Item]) -> Iterator[tuple[Item, bool]]:
        """Publish ``items`` in rsync calls of ``_call_limit`` bytes, two at once
        where they overlap (see the module doc).

        Yields ``(item, sent)`` for each item verified on the NAS when its call
        ends (sent=False: the same content was there already). Raises
        TransientError (network, timeout, server restart, a source that vanished)
        or PermanentError (host key, auth, permission, no space, a remote path
        that leaves ``path``, other content under the name) for the items not
        yielded; a per-item PermanentError does not stop the other items. After a
        failure no call starts; the ones running are waited for and reported.
        """
        todo = list(items)
        ended: queue.Queue[_Call] = queue.Queue()
        running: list[_Call] = []
        refused: list[PermanentError] = []
        failure: BaseException | None = None
        try:
            while True:
                room = bool(todo) and failure is None and len(running) < self._lanes
                due = running[-1].next_at if running and room else None
                now = time.monotonic()
                if room and (not running or (due is not None and now >= due)):
                    lane = min(set(range(self._lanes)) - {c.lane for c in running})
                    call = self._start_call(todo, ended, lane)
                    for other in running:
                        call.crowded = other.crowded = True
                    running.append(call)
                    continue
                if not running:
                    break
                try:
                    call = ended.get(timeout=None if due is None else max(0.0, due - now))
                except queue.Empty:
                    continue
                running.remove(call)
                yield from call.results
                refused += call.refused
                again = isinstance(call.error, Overdue)
                if isinstance(call.error, Busy) and call.crowded:
                    # The NAS's rrsync refused to run beside our other call.
                    self._one_at_a_time()
                    again = True
                if again:  # what the call proved is yielded above; the rest again
                    proven = {id(item) for item, _ in call.results}
                    todo[:0] = [i for i in call.items if id(i) not in proven]
                elif call.error is not None and failure is None:
                    failure = call.error
        finally:
            for call in running:  # the consumer gave up: let no call outlive the batch
                call.thread.join()
        if failure is not None:
            self._measured(0, 0)  # the next batch starts with one segment
            raise failure
        if refused:
            # A conflict first: the shipper sets that segment aside and goes on.
            refused.sort(key=lambda e: not isinstance(e, ConflictError))
            if len(refused) > 1:
                log.error("rsync: %d segments refused; the first: %s", len(refused), refused[0])
            raise refused[0]

    def _start_call(self, todo: list[Item], ended: queue.Queue[_Call], lane: int) -> _Call:
        """Take the next call's items off ``todo`` and start it in a thread that puts
        it on ``ended`` when it has ended."""
        n = len(next(_calls(todo, self._call_limit())))
        items, todo[:n] = todo[:n], []
        now = time.monotonic()
        rate = self._rate()
        # No rate to tell when this call ends: the next waits for it.
        half = sum(i.size for i in items) / rate / 2 if rate else None
        call = _Call(items, lane, next_at=None if half is None else now + half)
        call.thread = threading.Thread(
            target=self._run_call, args=(call, ended), name="rsync-call", daemon=True
        )
        call.thread.start()
        return call

    def _run_call(self, call: _Call, ended: queue.Queue[_Call]) -> None:
        """``_publish_call`` of ``call.items`` over its lane's master, its outcome
        kept in ``call``."""
        self._lane.n = call.lane
        try:
            call.results.extend(call.collect(self._publish_call(call.items)))
        except BaseException as exc:  # re-raised in the publisher's thread
            call.error = exc
        finally:
            ended.put(call)

    def _one_at_a_time(self) -> None:
        if self._lanes > 1:
            self._lanes = 1
            log.warning(
                "the NAS's rrsync runs one call of this node at a time (its key lacks "
                "-no-lock): rsync calls no longer overlap, and each call's start-up "
                "(about ten round trips) leaves the link idle"
            )

    def _publish_call(
        self, items: Sequence[Item]
    ) -> Generator[tuple[Item, bool], None, list[PermanentError]]:
        """One rsync call (plus a dry run for files already there); see publish_batch.

        Returns the per-item PermanentErrors (refused paths, other content).
        """
        with self._master_lock:
            if not self._master_alive():
                self._connect()
        # The whole-call bound: n segments get n times the per-segment timeout, so a
        # link slow enough for single segments is never too slow for a batch.
        # A stall is caught long before by rsync's --timeout and the keepalives.
        timeout = self.timeout * max(1, len(items))
        what = f"rsync to {self.opts['host']}:{self.opts['path']}"
        with self._staging(items) as (root, staged, refused):
            if not staged:
                return refused
            t0 = time.monotonic()
            # Only a call of several segments sized from a rate may be overdue: a
            # lone segment that slow is the timeout's business.
            deadline = OVERDUE * self._call_seconds if len(staged) > 1 and self._bytes else None
            overdue = False
            try:
                code, out, err = self._rsync(
                    "-r",
                    "--copy-links",
                    "--mkpath",
                    "--ignore-existing",
                    "--fsync",
                    source=root,
                    timeout=timeout if deadline is None else min(timeout, deadline),
                )
            except TransientError:  # the time ran out
                if deadline is None or deadline >= timeout:
                    raise
                overdue, code, out, err = True, PARTIAL[0], "", ""
                stopped = f"stopped after {deadline:.0f}s"
                # The lane's connection still holds the stopped call's queued bytes
                # (seconds at a starved share of the link): a new one proves at once.
                with self._master_lock:
                    self._exit_master()
                    self._connect()
            sent = {
                path for flags, path in _itemized(out) if flags.startswith("<f") and path in staged
            }
            if code in PARTIAL and _only_taken_vanished(err, root, staged):
                # Eviction took those segments from this call before rsync read them:
                # not sent, and no failure; every other file is as after exit 0.
                code = 0
            failure: PublishError | None = None
            if code == 0:
                sent_bytes = sum(staged[p].size for p in sent)
                if sent_bytes:
                    self._measured(sent_bytes, time.monotonic() - t0)
                # rsync exits 0 only after every file was verified and renamed.
                for path in sorted(sent):
                    yield staged[path], True
                check = {p: i for p, i in staged.items() if p not in sent}
            elif code in PARTIAL:
                # Some files failed (no space, a vanished source) or the call was
                # stopped: the others may well be there, and only the NAS's own
                # checksum can prove which.
                failure = classify(err, what)
                if overdue:
                    failure = Overdue(f"{what}: {stopped}")
                check = dict(staged)
            else:
                raise classify(err, what)
            # A segment eviction took can no longer be compared: it was not proven
            # (the shipper counts it as evicted).
            check = {p: i for p, i in check.items() if not (i.hold.taken and _gone(root / p))}
            if check:
                for path in staged.keys() - check.keys():
                    (root / path).unlink()  # verified already; the dry run need not hash it
                try:
                    same, conflicts, unverified = self._compare(root, check, timeout)
                except PublishError:
                    if failure is not None:
                        raise failure from None
                    raise
                for path in same:
                    yield check[path], path in sent or overdue
                refused += conflicts
                if overdue:
                    done = sum(check[p].size for p in same)
                    log.info(
                        "%s: %d of %d segments in %.0fs; the rest go again in smaller calls",
                        failure,
                        len(same),
                        len(staged),
                        time.monotonic() - t0,
                    )
                    self._measured(max(1, done), time.monotonic() - t0)
                if failure is None and unverified:
                    failure = TransientError(
                        f"{what}: not on the NAS after all: " + ", ".join(unverified[:3])
                    )
            if failure is not None:
                raise failure
        return refused

    def _connect(self) -> None:
        """A new master connection, after sshd's greeting (which sizes the calls)."""
        # A greeting first (cheap, bounded): ssh against a NAS that is down can sit
        # out its whole ConnectTimeout, and a node would miss its return.
        t0 = time.monotonic()
        if not self.reachable(GREETING_TIMEOUT):
            raise TransientError(
                f"ssh to {self.opts['host']}:{self.opts['port']}: "
                f"no SSH greeting within {GREETING_TIMEOUT:g}s (NAS down or unreachable)"
            )
        if getattr(self._lane, "n", 0) == 0:
            # Only the first lane's: the second connects while the first one's
            # call fills the link, and its greeting waits behind that data.
            greeting = time.monotonic() - t0
            self._call_seconds = min(CALL_MAX_SECONDS, max(CALL_SECONDS, CALL_RTTS * greeting))
        t0 = time.monotonic()
        self._start_master()
        log.info("ssh connection to %s up in %.1fs", self.opts["host"], time.monotonic() - t0)

    def _compare(
        self, root: Path, check: dict[str, Item], timeout: float
    ) -> tuple[list[str], list[PermanentError], list[str]]:
        """Ask the NAS to checksum its copies of ``check`` (a dry run; nothing is sent).

        Returns (identical paths, conflicts, paths missing or not itemized).
        Raises PublishError when the dry run itself fails.
        """
        same, conflicts, missing, skipped = self._dry_run(root, check, timeout)
        if skipped:
            # Not itemized: the NAS enforces --ignore-existing (rrsync -no-overwrite)
            # and skipped them unread. Compare them there as a reference directory.
            more = {p: check[p] for p in skipped}
            same2, conflicts2, missing2, skipped2 = self._dry_run(root, more, timeout, beside=True)
            same += same2
            conflicts += conflicts2
            missing += missing2 + skipped2
        return same, conflicts, sorted(missing)

    def _dry_run(
        self, root: Path, check: dict[str, Item], timeout: float, *, beside: bool = False
    ) -> tuple[list[str], list[PermanentError], list[str], list[str]]:
        """One ``--dry-run --checksum`` of ``root``; returns (identical, conflicts,
        missing, not itemized) among ``check``.

        ``beside``: into CHECK_DIR (never made: a dry run) with ``path`` as the
        ``--compare-dest``, so the NAS compares files that --ignore-existing would
        skip. The reference is anchored at the restricted root, as rrsync wants.
        """
        args = ["-r", "--copy-links", "--dry-run", "--checksum", "-ii"]
        subdir = ""
        if beside:
            args.append("--compare-dest=" + posixpath.normpath("/" + self.opts["path"].lstrip("/")))
            subdir = CHECK_DIR
        code, out, err = self._rsync(*args, source=root, timeout=timeout, subdir=subdir)
        if code not in (0, *PARTIAL):
            raise classify(err, f"rsync --checksum to {self.opts['host']}:{self.opts['path']}")
        same: list[str] = []
        conflicts: list[PermanentError] = []
        missing: list[str] = []
        left = dict(check)
        for flags, path in _itemized(out):
            if left.pop(path, None) is None:
                continue
            if flags.startswith(".f") and not flags[2:].strip():
                same.append(path)
            elif flags.startswith("<f+"):
                missing.append(path)  # not there (after a failure: simply not sent)
            else:
                where = f"{self.opts['host']}:{posixpath.join(self.opts['path'], path)}"
                conflicts.append(conflict(where, check[path].remote))
        return same, conflicts, missing, sorted(left)

    @contextlib.contextmanager
    def _staging(self, items: Sequence[Item]) -> Iterator[tuple[Path, dict[str, Item], list]]:
        """A private tree of symlinks named like the remote paths below ``path``.

        Yields (root, {relative path: item}, [PermanentError for refused items]).
        rsync follows the links (``--copy-links``, a sender-side option rrsync
        never sees) and recreates the tree, directories included, on the NAS.
        """
        root = Path(tempfile.mkdtemp(prefix="stage-", dir=self._private_dir()))
        # Directories as rsync should make them: 0777 less the NAS's umask, as --mkpath.
        # Private all the same: the 0700 control directory holds them.
        root.chmod(0o777)
        staged: dict[str, Item] = {}
        refused: list[PermanentError] = []
        try:
            for item in items:
                if not item.hold.start():
                    continue  # eviction took it before this call: not sent, not an error
                try:
                    check_remote(item.remote)
                except PermanentError as exc:
                    refused.append(exc)
                    continue
                path = posixpath.normpath(item.remote)
                link = root / path
                try:
                    for d in reversed(link.relative_to(root).parents[:-1]):
                        if not (root / d).is_dir():
                            (root / d).mkdir()
                            (root / d).chmod(0o777)
                    link.symlink_to(item.local.absolute())
                except OSError as exc:  # the same remote path twice, a file where a dir goes
                    refused.append(PermanentError(f"remote path {item.remote!r}: {exc}"))
                    continue
                staged[path] = item
            yield root, staged, refused
        finally:
            shutil.rmtree(root, ignore_errors=True)

    def close(self) -> None:
        if self._control_dir is None:
            return
        for lane in range(LANES):
            self._lane.n = lane
            self._exit_master()
        self._lane.n = 0
        shutil.rmtree(self._control_dir, ignore_errors=True)
        self._control_dir = None


@dataclass(eq=False)
class _Call:
    """One rsync call of a batch, run in its own thread (``publish_batch``)."""

    items: list[Item]
    lane: int  # which master connection carries it
    next_at: float | None  # when the batch's next call may start (monotonic)
    crowded: bool = False  # another call of the batch ran beside it
    thread: threading.Thread = field(init=False)
    results: list[tuple[Item, bool]] = field(default_factory=list)
    refused: list[PermanentError] = field(default_factory=list)
    error: BaseException | None = None

    def collect(
        self, call: Generator[tuple[Item, bool], None, list[PermanentError]]
    ) -> Iterator[tuple[Item, bool]]:
        """``call``'s results; what it returns (the refused items) goes to ``refused``."""
        self.refused = yield from call


def _calls(items: Sequence[Item], limit: int) -> Iterator[list[Item]]:
    """``items`` in order, cut into runs of at most ``limit`` bytes (at least one item)."""
    call: list[Item] = []
    size = 0
    for item in items:
        if call and size + item.size > limit:
            yield call
            call, size = [], 0
        call.append(item)
        size += item.size
    if call:
        yield call


def _only_taken_vanished(err: str, root: Path, staged: dict[str, Item]) -> bool:
    """Whether rsync's only complaints (``err``) are sources eviction took from
    this call: any other line, or a vanished source nobody took, is a failure."""
    prefix = f"{os.path.realpath(root)}/"
    vanished = False
    for line in err.splitlines():
        line = line.strip()
        if not line or VANISHED_SUMMARY.match(line):
            continue
        m = VANISHED.match(line)
        if m is None or not m.group(1).startswith(prefix):
            return False
        item = staged.get(m.group(1)[len(prefix) :])
        if item is None or not item.hold.taken:
            return False
        vanished = True
    return vanished


def _gone(link: Path) -> bool:
    """Whether the staged symlink ``link`` points at nothing any more."""
    return not link.exists()


def _itemized(out: str) -> Iterator[tuple[str, str]]:
    """(flags, path) of each itemized line of rsync's output."""
    for line in out.splitlines():
        if m := ITEMIZED.match(line):
            yield m.group(1), m.group(2)


def _socket_alive(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(path))
            return True
        except OSError:
            return False


def _remove_stale_control_dirs(parent: Path) -> None:
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
                if any(_socket_alive(m) for m in d.glob("master*")):
                    continue
            except OSError:
                continue
            shutil.rmtree(d, ignore_errors=True)


@hookimpl
def livecam_register_transports(register):
    register("rsync", RsyncTransport)
