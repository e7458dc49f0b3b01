"""A directory as a publish store: the ``local`` and ``nfs`` transports' operations.

Everything goes through one file descriptor of the target directory, opened after
the mount check (when there is one): an unmount between the check and a write
cannot redirect that write onto the local disk. Writes are fsynced before the
size check, and the directory after the rename.

The final step never replaces a file: ``link`` the temp to the final name (the
NFS server does it atomically and refuses a taken name) and unlink the temp; on
a filesystem without hard links (FAT), ``renameat2(RENAME_NOREPLACE)``. A
filesystem with neither is refused rather than risk an overwrite.

``run_job`` is all the ``nfs`` helper process does (see plugins/livecam_plugins/_nfs_child.py):
standard library only, so it starts fast under ``python -I -S``.
"""

from __future__ import annotations

import errno
import os
import posixpath
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from livecam.transport.errors import ConflictError, PermanentError, PublishError, TransientError
from livecam.transport.protocol import (
    BLOCK,
    Directories,
    TempFile,
    TempRenameStore,
    classify_oserror,
    publish,
    read_digest,
)

# errno values of a filesystem that has no hard links (FAT, some FUSE filesystems).
NO_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS, errno.EMLINK})
RENAME_NOREPLACE = 1  # linux/fs.h


class DirStore(TempRenameStore):
    """Files below the directory open as ``root_fd`` (owned by the caller)."""

    def __init__(self, root_fd: int, label: str):
        super().__init__(Directories())
        self.fd, self.label = root_fd, label

    def where(self, remote: str) -> str:
        return posixpath.join(self.label, remote)

    def size(self, remote: str) -> int | None:
        try:
            return os.stat(remote, dir_fd=self.fd).st_size
        except FileNotFoundError:
            return None

    def digest(self, remote: str) -> str:
        with os.fdopen(os.open(remote, os.O_RDONLY, dir_fd=self.fd), "rb") as f:
            return read_digest(f)

    def mkdir(self, directory: str) -> None:
        os.mkdir(directory, 0o755, dir_fd=self.fd)

    def open_temp(self, temp: str) -> TempFile:
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW
        return DirTemp(self, temp, os.open(temp, flags, 0o644, dir_fd=self.fd))


class DirTemp(TempFile):
    """The temp file, open by descriptor."""

    def __init__(self, store: DirStore, temp: str, fd: int):
        self.store, self.temp, self.fd = store, temp, fd

    def write(self, src: BinaryIO) -> None:
        while block := src.read(BLOCK):
            view = memoryview(block)
            while view:
                view = view[os.write(self.fd, view) :]

    def size(self) -> int:
        os.fsync(self.fd)
        return os.fstat(self.fd).st_size

    def _close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)

    def rename(self, remote: str) -> None:
        self._close()  # NFS: an open file unlinked becomes a .nfsXXXX leftover
        root = self.store.fd
        try:
            os.link(self.temp, remote, src_dir_fd=root, dst_dir_fd=root)
        except OSError as exc:
            if exc.errno not in NO_LINKS:
                raise  # FileExistsError: the name is taken; never replaced
            rename_noreplace(root, self.temp, remote)
        else:
            os.unlink(self.temp, dir_fd=root)
        directory = os.open(posixpath.dirname(remote) or ".", os.O_RDONLY, dir_fd=root)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)

    def remove(self) -> None:
        try:
            self._close()
        finally:
            os.unlink(self.temp, dir_fd=self.store.fd)


def rename_noreplace(dir_fd: int, src: str, dst: str) -> None:
    """renameat2(RENAME_NOREPLACE) within ``dir_fd``; FileExistsError when ``dst`` exists,
    PermanentError when the filesystem cannot rename without replacing."""
    import ctypes  # only here: most filesystems take the link, and the helper starts faster

    libc = ctypes.CDLL(None, use_errno=True)
    call = getattr(libc, "renameat2", None)
    if call is not None and call(dir_fd, src.encode(), dir_fd, dst.encode(), RENAME_NOREPLACE) == 0:
        return
    code = ctypes.get_errno() if call is not None else errno.ENOSYS
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        raise PermanentError(
            f"{dst}: this filesystem has neither hard links nor a rename that refuses to "
            "replace; livecam does not publish where it could overwrite a file"
        )
    raise OSError(code, os.strerror(code), dst)


def mount_of(path: str) -> tuple[str, str, str] | None:
    """(mount point, 'major:minor', fstype) of the mount holding ``path`` (no fs access)."""
    best = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            point = fields[4].encode().decode("unicode_escape")
            inside = path == point or path.startswith(point.rstrip("/") + "/")
            if inside and (best is None or len(point) >= len(best[0])):
                best = (point, fields[2], right.split()[0])
    return best


def open_root(root: str, fstypes: list[str]) -> int:
    """Open ``root``; with ``fstypes``, only if it lies on a mount of one of them
    (TransientError otherwise: an unmounted share is a bare local directory).
    Without, the directory is made when missing."""
    if not fstypes:
        os.makedirs(root, exist_ok=True)
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    if fstypes:
        mount = mount_of(root)
        st = os.fstat(fd)
        dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        if mount is None or mount[2] not in fstypes or mount[1] != dev:
            os.close(fd)
            found = f"{mount[2]} at {mount[0]}" if mount else "nothing"
            raise TransientError(
                f"{root} is not on a mounted {'/'.join(fstypes)} share "
                f"(found {found}); not writing to local storage"
            )
    return fd


class Job(NamedTuple):
    """The item a helper process publishes (its digest came with the job)."""

    local: Path
    remote: str
    size: int
    digest: str


def run_job(job: dict[str, Any]) -> dict[str, str]:
    """Publish one file as ``job`` says; the outcome as JSON-able data (see ``outcome``)."""
    item = Job(Path(job["local"]), job["remote"], job["size"], job["digest"])
    try:
        fd = open_root(job["root"], job["fstypes"])
        try:
            sent = publish(DirStore(fd, job["root"]), item)
        finally:
            os.close(fd)
    except PublishError as exc:
        kind = "conflict" if isinstance(exc, ConflictError) else "permanent"
        return {kind if exc.permanent else "transient": str(exc)}
    except OSError as exc:
        error = classify_oserror(exc, exc.filename or job["root"])
        return {"permanent" if error.permanent else "transient": str(error)}
    return {"result": "sent" if sent else "already"}


def outcome(answer: dict[str, Any], remote: str) -> bool:
    """``run_job``'s answer back as ``publish``'s: True, False, or the error raised."""
    if "conflict" in answer:
        raise ConflictError(answer["conflict"], remote=remote)
    if "permanent" in answer:
        raise PermanentError(answer["permanent"])
    if "transient" in answer:
        raise TransientError(answer["transient"])
    if answer.get("result") not in ("sent", "already"):
        raise TransientError(f"copy helper gave no outcome: {answer}")
    return bool(answer["result"] == "sent")
