"""The sftp transport's store: the publish protocol's operations as SFTP requests."""

from __future__ import annotations

import posixpath
import stat
import time
from typing import Any, BinaryIO

from livecam.transport import PermanentError, PublishError, TransientError
from livecam.transport.pipeline import PipelinedWriter, Wait, Window
from livecam.transport.protocol import Directories, TempFile, TempRenameStore, read_digest
from livecam_plugins.sftp import upstream

REQUEST = 32768  # bytes per SFTP write request (OpenSSH's sftp does the same)
READ = 8 * REQUEST  # bytes read from the local file at once: small buffers per worker


class SftpStore(TempRenameStore):
    """The protocol's operations as SFTP requests over one session (channel)."""

    def __init__(self, sftp: Any, dirs: Directories, root: str, window: Window):
        super().__init__(dirs, root)
        self.sftp, self.window = sftp, window
        self.limit, self.deadline = 0.0, float("inf")  # per item: the transport's ``attempt``

    def path(self, remote: str) -> str:
        return posixpath.join(self.root, remote)

    def where(self, remote: str) -> str:
        return f"sftp {self.path(remote)}"

    def size(self, remote: str) -> int | None:
        try:
            return int(self.sftp.stat(self.path(remote)).st_size)
        except FileNotFoundError:
            return None

    def digest(self, remote: str) -> str:
        with self.sftp.open(self.path(remote), "rb") as f:
            f.prefetch()
            return read_digest(f)

    def mkdir(self, directory: str) -> None:
        try:
            self.sftp.mkdir(directory)
        except FileNotFoundError:
            raise
        except OSError:
            # OpenSSH answers EEXIST (and EROFS) with a bare "Failure", a chroot's
            # root-owned parent with EACCES: there already, or a real refusal.
            if not self._is_dir(directory):
                raise

    def _is_dir(self, path: str) -> bool:
        try:
            return stat.S_ISDIR(self.sftp.stat(path).st_mode or 0)
        except OSError:
            return False

    def open_temp(self, temp: str) -> TempFile:
        path = self.path(temp)
        return SftpTemp(self, path, upstream.create_read_only(self.sftp, path))

    def leftover_refused(self, error: OSError) -> bool:
        # Our own leftover from a cut attempt is read-only since it was made.
        return isinstance(error, PermissionError)

    def remove_leftover(self, temp: str) -> bool:
        # A NAS that allows removes gets it removed; the role's account may not
        # remove, and writes beside it (the NAS's retention clears leftovers).
        self.sftp.remove(self.path(temp))
        return True

    def short_write(self, remote: str, written: int, size: int) -> PublishError:
        # Pipelined writes that the server refused (ENOSPC) come back as a short file.
        return PermanentError(
            f"{self.where(remote)}: the NAS stored {written} of {size} bytes (no space left?)"
        )


class SftpTemp(TempFile):
    """``.<name>.part`` open on the NAS, written with pipelined requests.

    The requests go out without waiting and their answers are read in order
    (``livecam.transport.pipeline``), so every write is acknowledged before the
    size is believed, and the bytes not yet acknowledged stay within the
    connection's ``Window``.
    """

    def __init__(self, store: SftpStore, path: str, handle: bytes):
        self.store, self.path, self.handle = store, path, handle
        self.closed = False

    def write(self, src: BinaryIO) -> None:
        writer = PipelinedWriter(
            self.store.window, self._send, REQUEST, read=READ, between=self._in_time
        )
        writer.write(src)

    def _send(self, chunk: memoryview, offset: int, alone: bool) -> tuple[int, Wait]:
        sftp = self.store.sftp
        num = upstream.send_write(sftp, self.handle, offset, bytes(chunk))
        return len(chunk), lambda: upstream.acknowledged(sftp, num, self.path)

    def _in_time(self) -> None:
        # paramiko's reads time out (IO_TIMEOUT), but a write that keeps going does
        # not: the item's limit is checked between blocks.
        if time.monotonic() > self.store.deadline:
            raise TransientError(f"sftp {self.path}: timed out after {self.store.limit:g}s")

    def size(self) -> int:
        """FSTAT on the open handle, its close sent right behind it (no round trip)."""
        nums = upstream.fstat_then_close(self.store.sftp, self.handle)
        self.closed = True
        return upstream.size_answer(self.store.sftp, nums, self.path)

    def rename(self, remote: str) -> None:
        self._close()
        target = self.store.path(remote)
        try:
            self.store.sftp.rename(self.path, target)
        except OSError:
            # A taken name comes back as a bare "Failure", like other refusals.
            if self.store.size(remote) is not None:
                raise FileExistsError(target) from None
            raise

    def _close(self) -> None:
        if not self.closed:
            self.closed = True
            upstream.close(self.store.sftp, self.handle)

    def remove(self) -> None:
        try:
            self._close()
        finally:
            self.store.sftp.remove(self.path)
