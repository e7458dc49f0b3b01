"""One rsync call: stage its segments, send them over its lane, prove what arrived.

rsync writes a dot-named temp file beside each target, checks the whole-file
checksum as it goes, fsyncs (``--fsync``) and renames: nothing half-written is
ever visible under a final name. rsync exits 0 only after every file it sent
was verified and renamed: only then are they proven. After exit 23/24 (some
files failed: no space, a vanished source) the others may well be there, and
the NAS's own checksums prove which (``verify``).

- **Overdue.** A call that runs far longer than it was sized for
  (``pacer.OVERDUE``) is stopped, and what arrived is proven by the NAS's
  checksums (``errors.Overdue``; ``calls`` sends the rest again).
- **Eviction.** Eviction may take a segment of the call in flight
  (``Transport.takes_started``): its file is deleted at once. An rsync that
  already opened it sends it whole (and it counts as published); one that had
  not reports it vanished, which fails nothing here
  (``errors.only_taken_vanished``), and the shipper counts it as evicted. A
  source that vanished for any other reason is a failure as before.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from livecam.transport import (
    CommandFailed,
    Item,
    PermanentError,
    PublishError,
    TransientError,
    Transport,
)
from livecam_plugins.rsync import verify
from livecam_plugins.rsync.errors import PARTIAL, Overdue, only_taken_vanished
from livecam_plugins.rsync.master import ControlDir, Lane
from livecam_plugins.rsync.pacer import Pacer

log = logging.getLogger("livecam.rsync")

#: What a call yields (each item it proved, and whether it sent it) and returns
#: (its per-item PermanentErrors: refused paths, other content).
Proving = Generator[tuple[Item, bool], None, list[PermanentError]]


@dataclass(eq=False)
class _Run:
    """One call in flight: its lane, its staging tree, and what rsync said."""

    lane: Lane
    root: Path
    staged: dict[str, Item]  # relative path -> item
    timeout: float
    t0: float = field(default_factory=time.monotonic)
    code: int = 0
    out: str = ""
    err: str = ""
    stopped: str | None = None  # why an overdue call was stopped


class Sender:
    """A transport's rsync calls, each over the lane it is handed."""

    def __init__(self, transport: Transport, control: ControlDir, pacer: Pacer):
        self.transport = transport  # its classify, timeout and opts
        self._control = control
        self._pacer = pacer
        self._master_lock = threading.Lock()  # one connect at a time, whichever call needs it

    def call(self, items: Sequence[Item], lane: Lane) -> Proving:
        """One rsync call of ``items`` over ``lane`` (plus dry runs for files already
        there); see ``RsyncTransport.publish_batch``."""
        with self._master_lock:
            if not lane.alive():
                self._connect(lane)
        # The whole-call bound: n segments get n times the per-segment timeout, so a
        # link slow enough for single segments is never too slow for a batch.
        # A stall is caught long before by rsync's --timeout and the keepalives.
        timeout = self.transport.timeout * max(1, len(items))
        with verify.staging(items, self._control.path()) as (root, staged, refused):
            if not staged:
                return refused
            run = _Run(lane, root, staged, timeout)
            self._send(run)
            conflicts = yield from self._prove(run)
            refused += conflicts
        return refused

    def _connect(self, lane: Lane) -> None:
        """``lane.connect``, an ssh failure classed by the transport (under the lock)."""
        try:
            lane.connect(self._pacer)
        except CommandFailed as exc:
            raise self.transport.classify(exc, f"ssh to {lane.opts['host']}") from None

    def _send(self, run: _Run) -> None:
        """Run the rsync that sends ``run``'s tree; stop it when it is overdue
        (``Pacer.deadline``), and renew its lane's connection."""
        deadline = self._pacer.deadline(len(run.staged))
        try:
            run.code, run.out, run.err = run.lane.rsync(
                "-r",
                "--copy-links",
                "--mkpath",
                "--ignore-existing",
                "--fsync",
                source=run.root,
                timeout=run.timeout if deadline is None else min(run.timeout, deadline),
            )
        except TransientError:  # the time ran out
            if deadline is None or deadline >= run.timeout:
                raise
            run.code, run.stopped = PARTIAL[0], f"stopped after {deadline:.0f}s"
            # The lane's connection still holds the stopped call's queued bytes
            # (seconds at a starved share of the link): a new one proves at once.
            with self._master_lock:
                run.lane.exit()
                self._connect(run.lane)

    def _prove(self, run: _Run) -> Proving:
        """Yield what ``run`` proved, return its conflicts, raise its failure."""
        what = f"rsync to {run.lane.opts['host']}:{run.lane.opts['path']}"
        staged, code = run.staged, run.code
        sent = {
            p for flags, p in verify.itemized(run.out) if flags.startswith("<f") and p in staged
        }
        if code in PARTIAL and only_taken_vanished(run.err, run.root, staged):
            # Eviction took those segments from this call before rsync read them:
            # not sent, and no failure; every other file is as after exit 0.
            code = 0
        failure: PublishError | None = None
        if code == 0:
            sent_bytes = sum(staged[p].size for p in sent)
            if sent_bytes:
                self._pacer.measured(sent_bytes, time.monotonic() - run.t0)
            # rsync exits 0 only after every file was verified and renamed.
            for path in sorted(sent):
                yield staged[path], True
            check = {p: i for p, i in staged.items() if p not in sent}
        elif code in PARTIAL:
            # Some files failed or the call was stopped: the others may well be
            # there, and only the NAS's own checksum can prove which.
            failure = (
                Overdue(f"{what}: {run.stopped}")
                if run.stopped
                else self.transport.classify(CommandFailed(code, run.err), what)
            )
            check = dict(staged)
        else:
            raise self.transport.classify(CommandFailed(code, run.err), what)
        # A segment eviction took can no longer be compared: it was not proven
        # (the shipper counts it as evicted).
        check = {p: i for p, i in check.items() if not (i.hold.taken and verify.gone(run.root / p))}
        conflicts: list[PermanentError] = []
        if check:
            conflicts, unverified = yield from self._check(run, check, sent, failure)
            if failure is None and unverified:
                failure = TransientError(
                    f"{what}: not on the NAS after all: " + ", ".join(unverified[:3])
                )
        if failure is not None:
            raise failure
        return conflicts

    def _check(
        self, run: _Run, check: dict[str, Item], sent: set[str], failure: PublishError | None
    ) -> Generator[tuple[Item, bool], None, tuple[list[PermanentError], list[str]]]:
        """Prove ``check`` by the NAS's checksums: yield the items it holds, return
        (conflicts, paths missing). A failed dry run raises the call's ``failure``
        if it had one."""
        for path in run.staged.keys() - check.keys():
            (run.root / path).unlink()  # verified already; the dry run need not hash it
        try:
            same, conflicts, unverified = verify.compare(run.lane, run.root, check, run.timeout)
        except CommandFailed as exc:
            checksum = f"rsync --checksum to {run.lane.opts['host']}:{run.lane.opts['path']}"
            raise (failure or self.transport.classify(exc, checksum)) from None
        except PublishError:
            if failure is not None:
                raise failure from None
            raise
        for path in same:
            yield check[path], path in sent or run.stopped is not None
        if run.stopped:
            log.info(
                "%s: %d of %d segments in %.0fs; the rest go again in smaller calls",
                failure,
                len(same),
                len(run.staged),
                time.monotonic() - run.t0,
            )
            done = sum(check[p].size for p in same)
            self._pacer.measured(max(1, done), time.monotonic() - run.t0)
        return conflicts, unverified
