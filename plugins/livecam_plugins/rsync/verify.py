"""What a call sends, and how the NAS proves what it holds: staging tree and dry runs.

- **Staging.** Each segment of a call is a symlink in a private staging tree that
  mirrors the remote paths, sent with ``-r --copy-links``: segments of different
  ``{site}/{node}/{camera}/{date}`` directories go together, and rsync itself
  makes missing directories (``-r``; ``--mkpath`` for ``path``).
- **Proof.** ``--ignore-existing`` never overwrites a file on the NAS. For the
  files rsync skipped because one is there, a second, dry run with
  ``--checksum`` asks the NAS to compare contents (the receiver hashes its own
  file; nothing is read back), so "already there" means same size and same
  content. Where the NAS enforces ``--ignore-existing`` itself (``rrsync
  -no-overwrite``, as the NAS role sets it up) that dry run skips existing files
  too; the files it skipped are compared by a third dry run into a directory
  that is never made (``CHECK_DIR``), with ``path`` as its ``--compare-dest``.
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from livecam.transport import CommandFailed, Item, PermanentError
from livecam.transport.protocol import check_remote, conflict
from livecam_plugins.rsync.errors import PARTIAL
from livecam_plugins.rsync.master import Lane

# The destination of the compare dry run under rrsync -no-overwrite: never made.
CHECK_DIR = ".livecam-compare"
# An itemized line: 11 flag characters, a space, the path ('<f+++++++++ a/b.mp4').
ITEMIZED = re.compile(r"^([<>ch.*][fdLDS][ .+?a-zA-Z]{9}) (.+)$")


@contextlib.contextmanager
def staging(items: Sequence[Item], parent: Path) -> Iterator[tuple[Path, dict[str, Item], list]]:
    """A tree of symlinks in ``parent`` named like the remote paths below ``path``.

    Yields (root, {relative path: item}, [PermanentError for refused items]).
    rsync follows the links (``--copy-links``, a sender-side option rrsync
    never sees) and recreates the tree, directories included, on the NAS.
    """
    root = Path(tempfile.mkdtemp(prefix="stage-", dir=parent))
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


def compare(
    lane: Lane, root: Path, check: dict[str, Item], timeout: float
) -> tuple[list[str], list[PermanentError], list[str]]:
    """Ask the NAS to checksum its copies of ``check`` (a dry run; nothing is sent).

    Returns (identical paths, conflicts, paths missing or not itemized).
    Raises CommandFailed when a dry run fails, or what ``Lane.rsync`` raises.
    """
    same, conflicts, missing, skipped = dry_run(lane, root, check, timeout)
    if skipped:
        # Not itemized: the NAS enforces --ignore-existing (rrsync -no-overwrite)
        # and skipped them unread. Compare them there as a reference directory.
        more = {p: check[p] for p in skipped}
        same2, conflicts2, missing2, skipped2 = dry_run(lane, root, more, timeout, beside=True)
        same += same2
        conflicts += conflicts2
        missing += missing2 + skipped2
    return same, conflicts, sorted(missing)


def dry_run(
    lane: Lane, root: Path, check: dict[str, Item], timeout: float, *, beside: bool = False
) -> tuple[list[str], list[PermanentError], list[str], list[str]]:
    """One ``--dry-run --checksum`` of ``root``; returns (identical, conflicts,
    missing, not itemized) among ``check``.

    ``beside``: into CHECK_DIR (never made: a dry run) with ``path`` as the
    ``--compare-dest``, so the NAS compares files that --ignore-existing would
    skip. The reference is anchored at the restricted root, as rrsync wants.
    """
    opts = lane.opts
    args = ["-r", "--copy-links", "--dry-run", "--checksum", "-ii"]
    subdir = ""
    if beside:
        args.append("--compare-dest=" + posixpath.normpath("/" + opts["path"].lstrip("/")))
        subdir = CHECK_DIR
    code, out, err = lane.rsync(*args, source=root, timeout=timeout, subdir=subdir)
    if code not in (0, *PARTIAL):
        raise CommandFailed(code, err)
    same: list[str] = []
    conflicts: list[PermanentError] = []
    missing: list[str] = []
    left = dict(check)
    for flags, path in itemized(out):
        if left.pop(path, None) is None:
            continue
        if flags.startswith(".f") and not flags[2:].strip():
            same.append(path)
        elif flags.startswith("<f+"):
            missing.append(path)  # not there (after a failure: simply not sent)
        else:
            where = f"{opts['host']}:{posixpath.join(opts['path'], path)}"
            conflicts.append(conflict(where, check[path].remote))
    return same, conflicts, missing, sorted(left)


def itemized(out: str) -> Iterator[tuple[str, str]]:
    """(flags, path) of each itemized line of rsync's output."""
    for line in out.splitlines():
        if m := ITEMIZED.match(line):
            yield m.group(1), m.group(2)


def gone(link: Path) -> bool:
    """Whether the staged symlink ``link`` points at nothing any more."""
    return not link.exists()
