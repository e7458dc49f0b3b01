"""The publish protocol, written once; a transport fills in a few store operations.

``publish(store, item)`` puts one segment on the NAS under the transport contract
(see ``livecam.transport``)::

    size(target) ── there: same size and digest -> "already there" (False)
        │                  otherwise            -> ConflictError, never overwritten
        └ missing: put(item, target) -> True
              └ the name was taken meanwhile (FileExistsError): compared as above

``put`` must never replace a file under the target name. ``TempRenameStore``
implements it for stores with directories and renames (nfs, sftp, smb): make the
directories, write ``.<name>.part`` beside the target (``.<name>.part-<8 hex>``
beside an earlier attempt's leftover that cannot be written again), check the
size the store holds, rename it into place WITHOUT replacing, remove the temp
after any failure. An object store (S3) implements ``put`` itself: one
conditional PUT (``If-None-Match: *``) that the server verifies against the
SHA-256 it is given; it sets ``conditional_put``, as that PUT is the existence
check: ``publish`` then skips the first ``size``.

Stores raise what their library raises; the transport classes those errors
(``classify_oserror`` for errno-carrying ones). Nothing here goes beyond the
standard library: the ``nfs`` transport's helper process runs it under ``python
-I -S`` (so it imports ``livecam.transport.errors``, not ``livecam.transport``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import posixpath
import secrets
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, BinaryIO, Protocol

from livecam.transport.errors import ConflictError, PermanentError, PublishError, TransientError

if TYPE_CHECKING:
    from pathlib import Path

BLOCK = 1 << 20  # bytes per read or write request
# errno values a person must act on: permission, space, quota, a read-only target.
PERMANENT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS})


def temp_name(remote: str) -> str:
    """The temp beside ``remote``: a dot-name (never a final name), fixed, so a retry
    overwrites its own leftover instead of piling up temp files."""
    directory, name = posixpath.split(remote)
    return posixpath.join(directory, f".{name}.part")


def check_remote(remote: str) -> None:
    """Refuse a remote path that is absolute, leaves its root (``..``), or holds a
    control character or a backslash: PermanentError for that segment only."""
    path = posixpath.normpath(remote)
    if (
        path.startswith(("/", "../"))
        or path in (".", "..")
        or any(c < " " or c in "\\\x7f" for c in path)
    ):
        raise PermanentError(f"unsafe remote path {remote!r}")


def conflict(where: str, remote: str) -> ConflictError:
    """The error for other content under a segment's name (``where`` names it)."""
    return ConflictError(
        f"{where} already exists with other content; not overwritten", remote=remote
    )


class Publishable(Protocol):
    """What the protocol reads of an item: a ``livecam.transport.Item`` (whose digest
    is read from the file on first use), or anything with these attributes."""

    @property
    def local(self) -> Path: ...

    @property
    def remote(self) -> str: ...

    @property
    def size(self) -> int: ...

    @property
    def digest(self) -> str: ...


class Readable(Protocol):
    """A binary file open for reading (what ``hashlib.file_digest`` reads)."""

    def readinto(self, buffer: bytearray, /) -> int: ...

    def readable(self) -> bool: ...


def read_digest(f: Readable) -> str:
    """SHA-256 (hex) of what ``f`` (open for binary reading) holds from here on."""
    return hashlib.file_digest(f, "sha256").hexdigest()


def classify_oserror(exc: OSError, where: str) -> PublishError:
    """An errno-carrying failure as a PermanentError (see PERMANENT_ERRNOS) or a
    TransientError; the message names ``where`` and never holds a secret."""
    text = exc.strerror or str(exc) or type(exc).__name__
    cls = PermanentError if exc.errno in PERMANENT_ERRNOS else TransientError
    return cls(f"{where}: {text}")


class Store(ABC):
    """Where a transport puts files, by relative POSIX path: the operations it fills in.

    Each instance is used by one thread at a time (a batch gives every worker its own).
    """

    #: True when ``put`` is one conditional request that refuses a taken name by
    #: itself (S3's ``If-None-Match: *``): ``publish`` puts without asking ``size``
    #: first (a round trip saved; the data goes even when the name is taken).
    conditional_put: bool = False

    def where(self, remote: str) -> str:
        """``remote`` as a person finds it on the NAS, for messages (no secrets)."""
        return remote

    @abstractmethod
    def size(self, remote: str) -> int | None:
        """The size of the file at ``remote``, None when there is none."""

    @abstractmethod
    def digest(self, remote: str) -> str:
        """SHA-256 (hex) of the file at ``remote``: read back, or the store's own checksum."""

    @abstractmethod
    def put(self, item: Publishable, remote: str) -> None:
        """Store ``item``'s content at ``remote``, verified, without ever replacing a
        file there: raise FileExistsError when the name is taken."""


def publish(store: Store, item: Publishable) -> bool:
    """Publish ``item`` at ``item.remote``: True if sent, False if the same content
    was there already. Raises ConflictError for other content under the name (never
    overwritten), PermanentError for an unsafe path, or what the store raises."""
    check_remote(item.remote)
    remote = posixpath.normpath(item.remote)
    size = None if store.conditional_put else store.size(remote)
    if size is None:
        try:
            store.put(item, remote)
            return True
        except FileExistsError:
            # The name was taken between the check and the final step, which refused
            # to replace it: whatever is there now decides, as if it had been first.
            size = store.size(remote)
            if size is None:
                raise TransientError(f"{store.where(remote)}: appeared and vanished") from None
    if size == item.size and store.digest(remote) == item.digest:
        return False
    raise conflict(store.where(remote), item.remote)


class Directories:
    """``mkdir -p`` through a store, remembering what was made or seen.

    One per connection: a reconnect makes a new one, as a restarted NAS may have
    lost directories. ``mkdir(directory)`` (the calling store's) must raise
    FileNotFoundError when the parent is missing and may raise FileExistsError
    when the directory is there.
    """

    def __init__(self) -> None:
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def ensure(self, directory: str, mkdir: Callable[[str], None]) -> None:
        """Make ``directory`` and its missing parents (one mkdir when only it is new)."""
        if directory in self._known or directory in ("", ".", "/"):
            return
        with self._lock:  # one worker makes a new directory while the others wait
            self._ensure(directory, mkdir)

    def forget(self, directory: str) -> None:
        """The store lost ``directory`` (a create in it failed): make it again next time."""
        self._known.discard(directory)

    def _ensure(self, directory: str, mkdir: Callable[[str], None]) -> None:
        if directory in self._known or directory in ("", ".", "/"):
            return
        try:
            mkdir(directory)
        except FileNotFoundError:
            parent = posixpath.dirname(directory)
            if parent == directory:
                raise
            self._known.discard(parent)  # remembered, but the store lost it
            self._ensure(parent, mkdir)
            with contextlib.suppress(FileExistsError):
                mkdir(directory)
        except FileExistsError:
            pass
        self._known.add(directory)


class TempFile(ABC):
    """A temp file being written on the store; made by ``TempRenameStore.open_temp``."""

    @abstractmethod
    def write(self, src: BinaryIO) -> None:
        """Write all of ``src`` (read in blocks of BLOCK)."""

    @abstractmethod
    def size(self) -> int:
        """The size the store holds now, after every write (made durable first)."""

    @abstractmethod
    def rename(self, remote: str) -> None:
        """Close it and rename it to ``remote`` without replacing: raise FileExistsError
        when ``remote`` exists."""

    @abstractmethod
    def remove(self) -> None:
        """Close and delete it after a failure (best effort: may raise anything)."""


class TempRenameStore(Store):
    """A store with directories and renames: temp beside the target, size check,
    rename without replacing, the temp removed after any failure.

    ``root`` is the store's own POSIX path of the directory remote paths are
    relative to; ``dirs`` makes directories below it (``dirs``' ``mkdir`` gets
    ``root`` joined with the remote directory).
    """

    def __init__(self, dirs: Directories, root: str = ""):
        self.dirs = dirs
        self.root = root

    @abstractmethod
    def mkdir(self, directory: str) -> None:
        """Make ``directory`` (the store's own path, below ``root``); FileNotFoundError
        when its parent is missing, FileExistsError (or nothing) when it is there."""

    @abstractmethod
    def open_temp(self, temp: str) -> TempFile:
        """Create (or truncate) ``temp`` for writing; FileNotFoundError when its
        directory is missing."""

    def leftover_refused(self, error: OSError) -> bool:
        """Whether ``open_temp``'s ``error`` may mean an earlier attempt's temp is
        there and cannot be opened for writing again (checked then with ``size``).
        The default: never (a store that can always truncate its temp)."""
        return False

    def remove_leftover(self, temp: str) -> bool:
        """Remove such a leftover, so the temp keeps its fixed name: True when it
        is gone, False when the store does not try; OSError when refused. The
        default does not try (a store where such a leftover is immutable)."""
        return False

    def short_write(self, remote: str, written: int, size: int) -> PublishError:
        """The error when the store holds ``written`` of ``size`` bytes after the writes."""
        return TransientError(f"{self.where(remote)}: size check failed: {written} of {size} bytes")

    def put(self, item: Publishable, remote: str) -> None:
        directory = posixpath.join(self.root, posixpath.dirname(remote)).rstrip("/") or self.root
        # The local file first: one that cannot be read never leaves a temp on the NAS.
        with open(item.local, "rb") as src:
            self.dirs.ensure(directory, self.mkdir)
            try:
                f = self._temp(temp_name(remote))
            except FileNotFoundError:
                self.dirs.forget(directory)  # removed on the NAS since it was remembered
                self.dirs.ensure(directory, self.mkdir)
                f = self._temp(temp_name(remote))
            try:
                f.write(src)
                written = f.size()
                if written != item.size:
                    raise self.short_write(remote, written, item.size)
                f.rename(remote)
            except BaseException:
                # A partial temp would hold space on a full disk; the connection may still work.
                with contextlib.suppress(Exception):
                    f.remove()
                raise

    def _temp(self, temp: str) -> TempFile:
        """``open_temp(temp)``, or beside an earlier attempt's leftover that cannot be
        written again: the NAS's retention clears such leftovers."""
        try:
            return self.open_temp(temp)
        except OSError as exc:
            if not self.leftover_refused(exc) or self.size(temp) is None:
                raise
        with contextlib.suppress(OSError):
            if self.remove_leftover(temp):
                return self.open_temp(temp)
        return self.open_temp(f"{temp}-{secrets.token_hex(4)}")
