"""How rsync and ssh fail: the stderr text and exit codes ``RsyncTransport.classify`` reads.

A failed command reaches ``classify`` as a ``CommandFailed`` (its exit code and
stderr). Text in ``PERMANENT`` needs a person; ``BUSY`` is transient, and so is
anything else (network, restarts); ``TURNED_AWAY`` is the NAS's sshd too busy to
greet (``ServerBusy``: the retry policy comes back in a moment).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from livecam.transport import Item, TransientError

# rsync's exits for "some files were not transferred / vanished": the rest may be there.
PARTIAL = (23, 24)

# rrsync's single-run lock per directory (a key without -no-lock): this node's
# other call, or the NAS side of one it gave up on (a timeout, a cut link), has
# not ended yet. Transient, not "refused".
BUSY = re.compile(r"Another instance of rrsync is already accessing")

# ssh's words for a connection the NAS's sshd closed before greeting (past its
# MaxStartups: a fleet connecting at once): busy, not down (``ServerBusy``).
TURNED_AWAY = re.compile(
    r"(?:kex|ssh)_exchange_identification: "
    r"(?:Connection closed by remote host|read: Connection reset by peer)"
    r"|ssh: connect to host \S+ port \d+: Connection reset by peer"
)

# stderr text -> why a person must act.
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

# The sender's lines for a source that is gone: before the file list (our symlink
# dangles) or after it (the file went before rsync opened it); and its summary.
VANISHED = re.compile(r'^(?:file has vanished|symlink has no referent): "(.+)"$')
VANISHED_SUMMARY = re.compile(
    r"^rsync (?:warning|error): some files(?: vanished before they could be transferred"
    r"|/attrs were not transferred \(see previous errors\)) \(code 2[34]\)"
)


class Busy(TransientError):
    """The NAS's rrsync holds its single-run lock (``BUSY``)."""


class Overdue(TransientError):
    """A call ran past ``pacer.OVERDUE`` times a call's seconds and was stopped."""


def detail(stderr: str) -> str:
    """The last lines of ``stderr`` worth a message, on one line (no ssh banners)."""
    lines = [
        ln.strip()
        for ln in stderr.splitlines()
        if ln.strip() and not ln.startswith("@") and "home directory" not in ln
    ]
    return "; ".join(lines[-3:]) or "no error output"


def only_taken_vanished(err: str, root: Path, staged: dict[str, Item]) -> bool:
    """Whether rsync's only complaints (``err``) are sources eviction took from
    the call of the staging tree ``root``: any other line, or a vanished source
    nobody took, is a failure.

    Eviction may take a segment of the call in flight (``takes_started``); its
    file is deleted at once. An rsync that had not opened it yet reports it
    vanished: that fails nothing here, and the shipper counts it as evicted.
    """
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
