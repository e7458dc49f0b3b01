"""lazyfs's state: the cache (what the file system holds now) and the durable state
(what a power cut would leave), and the backing directory that mirrors the latter
at every moment. See ``tests/powercut/lazyfs.py`` for the model it implements.

Errors are OSErrors with an errno, which the FUSE layer answers as they are.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


@dataclass(eq=False)
class Inode:
    """A file or directory: what the cache holds now, and what is durable."""

    ino: int
    mode: int  # type and permission bits
    uid: int = 0
    gid: int = 0
    atime: int = 0  # ns
    mtime: int = 0
    ctime: int = 0
    data: bytearray = field(default_factory=bytearray)  # a file's content now
    entries: dict[str, int] = field(default_factory=dict)  # a directory's, now
    links: int = 0  # directory entries naming a file, now
    durable_data: bytes = b""
    durable_entries: dict[str, int] = field(default_factory=dict)
    durable_attrs: tuple[int, int, int, int, int] = (0, 0, 0, 0, 0)

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def attrs(self) -> tuple[int, int, int, int, int]:
        return (self.mode, self.uid, self.gid, self.atime, self.mtime)


class Model:
    """The cache and the durable state; the backing directory mirrors the latter."""

    def __init__(self, backing: Path):
        self.backing = backing
        self.inodes: dict[int, Inode] = {}
        self.root = self._load(backing, {})

    # --- the durable state, loaded and written ----------------------------------------

    def _new(self, mode: int, **kw: Any) -> Inode:
        node = Inode(len(self.inodes) + 1, mode, **kw)
        self.inodes[node.ino] = node
        return node

    def _load(self, path: Path, seen: dict[tuple[int, int], Inode]) -> Inode:
        st = os.lstat(path)
        if (st.st_dev, st.st_ino) in seen:  # a hard link
            return seen[(st.st_dev, st.st_ino)]
        times = {"uid": st.st_uid, "gid": st.st_gid, "atime": st.st_atime_ns}
        times.update(mtime=st.st_mtime_ns, ctime=st.st_ctime_ns)
        if stat.S_ISDIR(st.st_mode):
            node = self._new(st.st_mode, **times)
            for name in sorted(os.listdir(path)):
                child = self._load(path / name, seen)
                node.entries[name] = child.ino
                child.links += 1
        elif stat.S_ISREG(st.st_mode):
            node = self._new(st.st_mode, data=bytearray(path.read_bytes()), **times)
            seen[(st.st_dev, st.st_ino)] = node
        else:
            raise OSError(errno.EINVAL, f"lazyfs keeps files and directories only: {path}")
        node.durable_data, node.durable_entries = bytes(node.data), dict(node.entries)
        node.durable_attrs = node.attrs()
        return node

    def durable_paths(self, ino: int) -> list[Path]:
        """Where the durable state names ``ino``: its paths in the backing directory."""
        found: list[Path] = []

        def walk(node: Inode, path: Path, above: tuple[int, ...]) -> None:
            if node.ino == ino:
                found.append(path)
            if node.is_dir and node.ino not in above:  # the durable state may hold a cycle
                for name, child in node.durable_entries.items():
                    walk(self.inodes[child], path / name, (*above, node.ino))

        walk(self.root, self.backing, ())
        return found

    def sync_file(self, node: Inode) -> None:
        """fsync of a file: its data, size and attributes as they are now."""
        node.durable_data, node.durable_attrs = bytes(node.data), node.attrs()
        for path in self.durable_paths(node.ino):
            path.write_bytes(node.durable_data)
            _set_attrs(path, node.durable_attrs)

    def sync_dir(self, node: Inode) -> None:
        """fsync of a directory: its entries as they are now (and its attributes)."""
        old, new = node.durable_entries, dict(node.entries)
        node.durable_entries, node.durable_attrs = new, node.attrs()
        for base in self.durable_paths(node.ino):
            for name, ino in old.items():
                if new.get(name) != ino:
                    _remove(base / name)
            for name, ino in new.items():
                if old.get(name) != ino:
                    self._materialize(self.inodes[ino], base / name, (node.ino,))
            _set_attrs(base, node.durable_attrs)

    def _materialize(self, node: Inode, path: Path, above: tuple[int, ...]) -> None:
        """Write ``node``'s durable state at ``path`` (a hard link where it has one)."""
        if node.is_dir:
            path.mkdir()
            if node.ino not in above:
                for name, child in node.durable_entries.items():
                    self._materialize(self.inodes[child], path / name, (*above, node.ino))
        else:
            twin = next((p for p in self.durable_paths(node.ino) if p != path and p.exists()), None)
            if twin is not None:
                os.link(twin, path)
                return
            path.write_bytes(node.durable_data)
        _set_attrs(path, node.durable_attrs)

    # --- the cache: paths --------------------------------------------------------------

    def lookup(self, path: str) -> Inode:
        node = self.root
        for part in filter(None, path.split("/")):
            if not node.is_dir:
                raise _error(errno.ENOTDIR)
            if part not in node.entries:
                raise _error(errno.ENOENT)
            node = self.inodes[node.entries[part]]
        return node

    def parent(self, path: str) -> tuple[Inode, str]:
        head, _, name = path.rstrip("/").rpartition("/")
        folder = self.lookup(head or "/")
        if not folder.is_dir:
            raise _error(errno.ENOTDIR)
        return folder, name

    def make(self, path: str, mode: int, uid: int, gid: int) -> Inode:
        """A new file or directory at ``path`` (EEXIST if the name is taken)."""
        folder, name = self.parent(path)
        if name in folder.entries:
            raise _error(errno.EEXIST)
        now = time.time_ns()
        node = self._new(mode, uid=uid, gid=gid, atime=now, mtime=now, ctime=now)
        node.durable_attrs = node.attrs()
        folder.entries[name] = node.ino
        node.links = 1
        folder.mtime = folder.ctime = now
        return node


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _set_attrs(path: Path, attrs: tuple[int, int, int, int, int]) -> None:
    mode, uid, gid, atime, mtime = attrs
    os.chown(path, uid, gid)
    os.chmod(path, stat.S_IMODE(mode))
    os.utime(path, ns=(atime, mtime))
