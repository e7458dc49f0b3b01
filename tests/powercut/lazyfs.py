"""A file system that forgets what was not made durable, as a power cut does.

In the model of LazyFS (the FUSE file system Jepsen uses, VLDB 2024): a FUSE
file system (mfusepy over libfuse 3) over a real directory, with its own cache.
Every change lives in the cache (this process's memory) and reaches the backing
directory only when it is made durable, so the backing directory holds, at every
moment, exactly what a disk would hold after a power cut then.

**The model it assumes: strict POSIX, nothing more.**

- A file's data, its size and its attributes (mode, owner, times) become durable
  by ``fsync`` or ``fdatasync`` of that file, through any descriptor of it, as
  they are at that moment. Before its first one a file is durable as empty.
- A directory's entries (what create, mkdir, rename in or out, link, unlink and
  rmdir changed) become durable by ``fsync`` of that directory, all of them as they
  are at that moment, and no other directory's. A rename between two directories
  needs both. A new directory and everything in it is reachable after a cut only
  once its entry in its parent is durable.
- Nothing becomes durable by itself: no write-back after a while, nothing on
  close, none of the ordering a journal gives (ext4 in ``data=ordered`` commits a
  rename together with the data it renames, and a file's fsync together with its
  new directory entry; this file system does neither, so it finds code that only
  works because of them).
- An operation is atomic: a cut falls between two operations, never inside one (one
  lock serializes them). Torn writes inside a sector or an fsync are not modelled.

**A cut** (the ``cut`` command, or an armed trigger: "cut before/after the Nth
operation of this kind on a path matching this pattern") forgets every change not
yet durable: under the lock, it kills the processes of a cgroup (``--cgroup``:
``cgroup.kill`` of cgroup v2, the processes under test) and from then on answers
every operation with EIO. Nothing that happens after the cut can make anything
durable, nor reach the network from a killed process. Unmounting and mounting the
backing directory again is the reboot: the new mount serves the durable state.

Kernel caches would hide the model: the mount uses ``direct_io`` (no page cache)
and zero entry, attribute and negative timeouts, so every read and lookup asks
this process. Symbolic links, device files and extended attributes are not
supported (the spool has none).

Control: one JSON object per line on stdin, answered on stdout (``{"reply": ...}``);
events (``{"event": "mounted"}``, ``{"event": "cut", ...}``) come on stdout too.
Run as ``python -m tests.powercut.lazyfs BACKING MOUNTPOINT [--cgroup DIR]``;
``tests/powercut/mount.py`` drives it. Its state (the cache, the durable state and
how the backing directory follows it) is ``tests/powercut/model.py``.
"""

from __future__ import annotations

import argparse
import errno
import functools
import json
import os
import re
import stat
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")  # libfuse 3, as scripts/bootstrap installs
import mfusepy  # reads FUSE_LIBRARY_NAME when imported

from tests.powercut.model import Inode, Model

FuseOSError = mfusepy.FuseOSError


@dataclass
class Trigger:
    """Cut ``when`` ("before" or "after") the operation ``op`` on a path matching
    ``pattern``, once ``skip`` such operations have passed."""

    when: str
    op: str
    pattern: str
    skip: int = 0

    def matches(self, when: str, op: str, paths: tuple[str, ...]) -> bool:
        if when != self.when or op != self.op:
            return False
        if not any(re.search(self.pattern, p) for p in paths if p):
            return False
        self.skip -= 1
        return self.skip < 0


def fsop(kind: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """An operation under the lock: EIO once cut; counted; a trigger may cut before
    or after it (then the caller, killed, gets EIO)."""

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def run(self: LazyFS, *args: Any) -> Any:
            paths = tuple(a for a in args[:2] if isinstance(a, str))
            with self.mutex:
                if self.cut_at is not None:
                    raise FuseOSError(errno.EIO)
                self.counts[kind] += 1
                self._busy(mfusepy.fuse_get_context()[2])
                self._maybe_cut("before", kind, paths)
                result = fn(self, *args)
                self._maybe_cut("after", kind, paths)
                return result

        return run

    return wrap


class LazyFS(mfusepy.Operations):
    """The FUSE operations over a ``Model``; see the module doc."""

    use_ns = True

    def __init__(self, model: Model, cgroup: Path | None, emit: Callable[[dict[str, Any]], None]):
        self.model = model
        self.cgroup = cgroup
        self.emit = emit
        self.mutex = threading.RLock()
        self.handles: dict[int, int] = {}  # fh -> ino
        self.next_fh = 1
        self.counts: Counter[str] = Counter()
        self.trigger: Trigger | None = None
        self.cut_at: float | None = None
        self.bursts: dict[int, tuple[float, float]] = {}  # thread id -> (burst began, last op)

    # --- cutting -----------------------------------------------------------------------

    def _busy(self, tid: int) -> None:
        """Note an operation of thread ``tid``: a burst of them (one housekeeping pass's
        work, say) begins after a pause of ``BURST_GAP``."""
        now = time.time()
        began, last = self.bursts.get(tid, (now, 0.0))
        self.bursts[tid] = (now if now - last > BURST_GAP else began, now)

    def cut(self, why: dict[str, Any]) -> dict[str, Any]:
        """Forget what is not durable: kill the cgroup, answer EIO from now on. The cut:
        its time, and since when each thread busy at the cut had been busy."""
        with self.mutex:
            if self.cut_at is None:
                if self.cgroup is not None:
                    (self.cgroup / "cgroup.kill").write_text("1")
                self.cut_at = now = time.time()
                bursts = self.bursts.items()
                busy = {t: began for t, (began, last) in bursts if now - last < BURST_GAP}
                self.emit({"event": "cut", "time": now, "busy_since": busy, **why})
            return {"time": self.cut_at}

    def _maybe_cut(self, when: str, kind: str, paths: tuple[str, ...]) -> None:
        if self.trigger is not None and self.trigger.matches(when, kind, paths):
            self.trigger = None
            self.cut({"when": when, "op": kind, "paths": list(paths)})
            raise FuseOSError(errno.EIO)

    # --- handles -----------------------------------------------------------------------

    def _handle(self, node: Inode) -> int:
        fh, self.next_fh = self.next_fh, self.next_fh + 1
        self.handles[fh] = node.ino
        return fh

    def _make(self, path: str, mode: int) -> Inode:
        uid, gid, _pid = mfusepy.fuse_get_context()
        return self.model.make(path, mode, uid, gid)

    def _node(self, path: str | None, fh: int | None = None) -> Inode:
        if fh is not None and fh in self.handles:
            return self.model.inodes[self.handles[fh]]
        if path is None:
            raise FuseOSError(errno.EBADF)
        return self.model.lookup(path)

    # --- reading -------------------------------------------------------------------------

    @fsop("getattr")
    def getattr(self, path: str | None, fh: int | None = None) -> dict[str, Any]:
        node = self._node(path, fh)
        size = len(node.data) if not node.is_dir else 4096
        if node.is_dir:
            subdirs = sum(1 for i in node.entries.values() if self.model.inodes[i].is_dir)
            nlink = 2 + subdirs
        else:
            nlink = node.links
        return {"st_mode": node.mode, "st_ino": node.ino, "st_nlink": nlink, "st_size": size,
                "st_uid": node.uid, "st_gid": node.gid, "st_atime": node.atime,
                "st_mtime": node.mtime, "st_ctime": node.ctime, "st_blksize": 4096,
                "st_blocks": (size + 511) // 512}  # fmt: skip

    @fsop("readdir")
    def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
        # With use_ino the kernel gets each entry's inode number, and readdir(3)
        # skips an entry numbered 0: give every entry its own.
        node = self._node(path, fh)
        named = {".": node.ino, "..": node.ino, **node.entries}
        inodes = self.model.inodes
        return [(n, {"st_ino": i, "st_mode": inodes[i].mode}, 0) for n, i in named.items()]

    @fsop("opendir")
    def opendir(self, path: str) -> int:
        node = self.model.lookup(path)
        if not node.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return self._handle(node)

    @fsop("releasedir")
    def releasedir(self, path: str | None, fh: int) -> int:
        self.handles.pop(fh, None)
        return 0

    @fsop("open")
    def open(self, path: str, flags: int) -> int:
        node = self.model.lookup(path)
        if flags & os.O_TRUNC and flags & os.O_ACCMODE != os.O_RDONLY:
            self._truncate(node, 0)
        return self._handle(node)

    @fsop("read")
    def read(self, path: str | None, size: int, offset: int, fh: int) -> bytes:
        return bytes(self._node(path, fh).data[offset : offset + size])

    @fsop("statfs")
    def statfs(self, path: str) -> dict[str, int]:
        st = os.statvfs(self.model.backing)
        keys = ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree",
                "f_favail", "f_namemax")  # fmt: skip
        return {k: getattr(st, k) for k in keys}

    @fsop("access")
    def access(self, path: str, amode: int) -> int:
        self.model.lookup(path)
        return 0

    # --- writing: the cache only ------------------------------------------------------------

    @fsop("create")
    def create(self, path: str, mode: int, flags: int) -> int:
        try:
            node = self._make(path, stat.S_IFREG | stat.S_IMODE(mode))
        except FuseOSError as exc:
            if exc.errno != errno.EEXIST or flags & os.O_EXCL:
                raise
            node = self.model.lookup(path)
            if flags & os.O_TRUNC:
                self._truncate(node, 0)
        return self._handle(node)

    @fsop("write")
    def write(self, path: str | None, data: bytes, offset: int, fh: int) -> int:
        node = self._node(path, fh)
        if offset > len(node.data):
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset : offset + len(data)] = data
        node.mtime = node.ctime = time.time_ns()
        return len(data)

    @fsop("truncate")
    def truncate(self, path: str | None, length: int, fh: int | None = None) -> int:
        self._truncate(self._node(path, fh), length)
        return 0

    def _truncate(self, node: Inode, length: int) -> None:
        if node.is_dir:
            raise FuseOSError(errno.EISDIR)
        del node.data[length:]
        node.data.extend(bytes(length - len(node.data)))
        node.mtime = node.ctime = time.time_ns()

    @fsop("flush")
    def flush(self, path: str | None, fh: int) -> int:
        return 0  # close makes nothing durable

    @fsop("release")
    def release(self, path: str | None, fh: int) -> int:
        self.handles.pop(fh, None)
        return 0

    @fsop("mkdir")
    def mkdir(self, path: str, mode: int) -> int:
        self._make(path, stat.S_IFDIR | stat.S_IMODE(mode))
        return 0

    @fsop("rmdir")
    def rmdir(self, path: str) -> int:
        folder, name = self.model.parent(path)
        node = self.model.lookup(path)
        if not node.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        if node.entries:
            raise FuseOSError(errno.ENOTEMPTY)
        del folder.entries[name]
        folder.mtime = folder.ctime = time.time_ns()
        return 0

    @fsop("unlink")
    def unlink(self, path: str) -> int:
        folder, name = self.model.parent(path)
        node = self.model.lookup(path)
        if node.is_dir:
            raise FuseOSError(errno.EISDIR)
        del folder.entries[name]
        node.links -= 1
        folder.mtime = folder.ctime = node.ctime = time.time_ns()
        return 0

    @fsop("link")
    def link(self, target: str, source: str) -> int:
        node = self.model.lookup(source)
        if node.is_dir:
            raise FuseOSError(errno.EPERM)
        folder, name = self.model.parent(target)
        if name in folder.entries:
            raise FuseOSError(errno.EEXIST)
        folder.entries[name] = node.ino
        node.links += 1
        folder.mtime = folder.ctime = node.ctime = time.time_ns()
        return 0

    @fsop("rename")
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags & ~RENAME_NOREPLACE:
            raise FuseOSError(errno.EINVAL)  # RENAME_EXCHANGE, RENAME_WHITEOUT: not modelled
        src_dir, src_name = self.model.parent(old)
        node = self.model.lookup(old)
        dst_dir, dst_name = self.model.parent(new)
        if node.is_dir and (new + "/").startswith(old.rstrip("/") + "/"):
            raise FuseOSError(errno.EINVAL)  # into itself
        replaced = dst_dir.entries.get(dst_name)
        if replaced is not None:
            if flags & RENAME_NOREPLACE:
                raise FuseOSError(errno.EEXIST)
            if replaced == node.ino:
                return 0  # two names of one file: POSIX does nothing
            self._check_replace(node, self.model.inodes[replaced])
        del src_dir.entries[src_name]
        dst_dir.entries[dst_name] = node.ino
        if replaced is not None and not self.model.inodes[replaced].is_dir:
            self.model.inodes[replaced].links -= 1
        now = time.time_ns()
        src_dir.mtime = src_dir.ctime = dst_dir.mtime = dst_dir.ctime = node.ctime = now
        return 0

    @staticmethod
    def _check_replace(node: Inode, replaced: Inode) -> None:
        if replaced.is_dir and not node.is_dir:
            raise FuseOSError(errno.EISDIR)
        if node.is_dir and not replaced.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        if replaced.is_dir and replaced.entries:
            raise FuseOSError(errno.ENOTEMPTY)

    @fsop("chmod")
    def chmod(self, path: str | None, mode: int) -> int:
        node = self._node(path)
        node.mode = stat.S_IFMT(node.mode) | stat.S_IMODE(mode)
        node.ctime = time.time_ns()
        return 0

    @fsop("chown")
    def chown(self, path: str | None, uid: int, gid: int) -> int:
        node = self._node(path)
        node.uid = node.uid if uid == -1 else uid
        node.gid = node.gid if gid == -1 else gid
        node.ctime = time.time_ns()
        return 0

    @fsop("utimens")
    def utimens(self, path: str | None, times: tuple[int, int] | None = None) -> int:
        node = self._node(path)
        now = time.time_ns()
        node.atime, node.mtime = times if times is not None else (now, now)
        node.ctime = now
        return 0

    # --- durability ----------------------------------------------------------------------

    @fsop("fsync")
    def fsync(self, path: str | None, datasync: int, fh: int) -> int:
        node = self._node(path, fh)
        (self.model.sync_dir if node.is_dir else self.model.sync_file)(node)
        return 0

    @fsop("fsyncdir")
    def fsyncdir(self, path: str | None, datasync: int, fh: int) -> int:
        self.model.sync_dir(self._node(path, fh))
        return 0

    def init(self, path: str) -> None:
        self.emit({"event": "mounted"})


RENAME_NOREPLACE = 1
BURST_GAP = 0.25  # seconds without an operation that end a thread's burst of them


class _FUSE(mfusepy.FUSE):
    """mfusepy drops rename's flags under libfuse 3; a rename that must not replace
    would then replace. Hand them to the operation."""

    def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
        decode = functools.partial(bytes.decode, encoding=self.encoding, errors=self.errors)
        return int(self.operations.rename(decode(old), decode(new), flags))


def serve_commands(
    fs: LazyFS, lines: Iterator[str], emit: Callable[[dict[str, Any]], None]
) -> None:
    """Answer the control commands (see the module doc) until stdin closes."""
    for line in lines:
        cmd = json.loads(line)
        what = cmd.pop("cmd")
        if what == "cut":
            emit({"reply": what, **fs.cut({"op": "command"})})
        elif what == "arm":
            with fs.mutex:
                fs.trigger = Trigger(**cmd)
            emit({"reply": what})
        elif what == "stats":
            with fs.mutex:
                counts, armed = dict(fs.counts), fs.trigger is not None
                emit({"reply": what, "counts": counts, "armed": armed, "cut_at": fs.cut_at})
        else:
            emit({"reply": what, "error": f"unknown command {what!r}"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("backing", type=Path)
    parser.add_argument("mountpoint", type=Path)
    parser.add_argument("--cgroup", type=Path)
    args = parser.parse_args()
    out = threading.Lock()

    def emit(message: dict[str, Any]) -> None:
        with out:
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    fs = LazyFS(Model(args.backing.resolve()), args.cgroup, emit)

    def control() -> None:
        serve_commands(fs, iter(sys.stdin.readline, ""), emit)
        # The test is gone: do not stay mounted.
        os.spawnlp(os.P_WAIT, "fusermount3", "fusermount3", "-u", "-z", str(args.mountpoint))

    threading.Thread(target=control, daemon=True).start()
    _FUSE(
        fs,
        str(args.mountpoint),
        foreground=True,
        direct_io=True,
        hard_remove=True,
        use_ino=True,
        attr_timeout=0,
        entry_timeout=0,
        negative_timeout=0,
        fsname="lazyfs",
        subtype="lazyfs",
    )


if __name__ == "__main__":
    main()
