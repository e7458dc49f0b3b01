"""The ``nfs`` and ``local`` transports: copy into a directory, fsync, rename.

``nfs`` ships into a mounted share (NFS, or any type listed in ``fstypes``) and
refuses to write unless ``path`` really lies on such a mount: an unmounted share
is a bare directory on the SD card, and filling that would be worse than waiting.
``local`` is the same copy with no mount check (the demo, a disk on the node).

All file I/O runs in a short-lived child process with a hard timeout. A hung
hard NFS mount can freeze a process in the kernel where no signal reaches it;
it then freezes that child, which is abandoned, never the shipper. The child
works through directory file descriptors opened after the mount check, so an
unmount in between cannot redirect a write onto the local disk.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

PERMANENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS}


# --- the child: stdlib only, so it starts fast (python -I -S) -----------------------------


def _mount_of(path: str) -> tuple[str, str, str] | None:
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


def _open_dir(parent_fd: int, name: str) -> int:
    with contextlib.suppress(FileExistsError):
        os.mkdir(name, 0o755, dir_fd=parent_fd)
    return os.open(name, os.O_RDONLY | os.O_DIRECTORY, dir_fd=parent_fd)


def _digest_at(dir_fd: int, name: str) -> str:
    h = hashlib.sha256()
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    with os.fdopen(fd, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def child_publish(job: dict[str, Any]) -> dict[str, Any]:
    """Copy one file into place under the contract; runs inside the child process."""
    root = job["root"]
    if not job["fstypes"]:
        os.makedirs(root, exist_ok=True)
    root_fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    if job["fstypes"]:
        mount = _mount_of(root)
        st = os.fstat(root_fd)
        dev = f"{os.major(st.st_dev)}:{os.minor(st.st_dev)}"
        if mount is None or mount[2] not in job["fstypes"] or mount[1] != dev:
            found = f"{mount[2]} at {mount[0]}" if mount else "nothing"
            return {"transient": f"{root} is not on a mounted {'/'.join(job['fstypes'])} share "
                                 f"(found {found}); not writing to local storage"}  # fmt: skip
    *dirs, name = job["remote"].split("/")
    fd = root_fd
    for part in dirs:
        nxt = _open_dir(fd, part)
        os.close(fd)
        fd = nxt
    size, digest = job["size"], job["digest"]
    try:
        st = os.stat(name, dir_fd=fd)
    except FileNotFoundError:
        st = None
    if st is not None:
        if st.st_size == size and _digest_at(fd, name) == digest:
            return {"result": "already"}
        return {"conflict": f"{job['remote']} already exists with other content; not overwritten"}
    tmp = f".{name}.part"
    out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644, dir_fd=fd)
    try:
        with open(job["local"], "rb") as src:
            while block := src.read(1 << 20):
                view = memoryview(block)
                while view:
                    view = view[os.write(out, view) :]
        os.fsync(out)
        written = os.fstat(out).st_size
    except OSError:
        os.unlink(tmp, dir_fd=fd)  # e.g. no space: leave no partial behind
        raise
    finally:
        os.close(out)
    if written != size:
        os.unlink(tmp, dir_fd=fd)
        return {"transient": f"size check failed for {job['remote']}: wrote {written} of {size}"}
    os.rename(tmp, name, src_dir_fd=fd, dst_dir_fd=fd)
    os.fsync(fd)
    if os.stat(name, dir_fd=fd).st_size != size:
        return {"transient": f"size check failed after rename for {job['remote']}"}
    return {"result": "sent"}


def _child_main() -> None:
    job = json.loads(sys.stdin.read())
    try:
        answer = child_publish(job)
    except OSError as exc:
        kind = "permanent" if exc.errno in PERMANENT_ERRNOS else "transient"
        answer = {kind: f"{exc.strerror or exc} ({exc.filename or job['root']})"}
    sys.stdout.write(json.dumps(answer))


if __name__ == "__main__":
    _child_main()
    sys.exit(0)


# --- the plugin (parent side) ------------------------------------------------------------

from livecam import hookimpl  # noqa: E402  (the child above needs none of this)
from livecam import options as o  # noqa: E402
from livecam.options import ConfigError, Option  # noqa: E402
from livecam.transport import (  # noqa: E402
    ConflictError,
    PermanentError,
    TransientError,
    Transport,
    run_command,
)


class DirectoryTransport(Transport):
    """Copy into a directory: temp name, fsync, size check, rename, fsync dir."""

    description = "copy into a local directory (no mount check)"
    options: ClassVar = {"path": Option(o.path, help="the target directory")}
    fstypes: tuple[str, ...] = ()

    def describe(self) -> str:
        return f"{self.name} to {self.opts['path']}"

    @property
    def name(self) -> str:
        return "local"

    def publish(self, local: Path, remote: str, *, size: int, digest: str) -> bool:
        job = {
            "root": os.path.abspath(self.opts["path"]),
            "fstypes": list(self.fstypes),
            "remote": remote,
            "local": str(local),
            "size": size,
            "digest": digest,
        }
        proc = run_command(
            [sys.executable, "-I", "-S", __file__],
            input=json.dumps(job).encode(),
            timeout=self.timeout,
        )
        try:
            answer = json.loads(proc.stdout or b"{}")
        except ValueError:
            answer = {}
        if "conflict" in answer:
            raise ConflictError(answer["conflict"], remote=remote)
        if "permanent" in answer:
            raise PermanentError(answer["permanent"])
        if "transient" in answer:
            raise TransientError(answer["transient"])
        if answer.get("result") not in ("sent", "already"):
            detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise TransientError(f"copy helper failed (exit {proc.returncode}): {detail[0]}")
        return answer["result"] == "sent"


class NfsTransport(DirectoryTransport):
    """Copy into a mounted share; refuses when ``path`` is not on a mount of ``fstypes``."""

    description = "copy into a mounted NFS share (refuses when not mounted)"
    options: ClassVar = {
        "path": Option(o.path, help="a directory on the mounted share"),
        "fstypes": Option(o.string_list, ["nfs", "nfs4"], "mount types accepted"),
    }

    @property
    def name(self) -> str:
        return "nfs"

    @property
    def fstypes(self) -> tuple[str, ...]:  # type: ignore[override]
        return tuple(self.opts["fstypes"])

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        if not opts["fstypes"]:
            raise ConfigError(f"{key}.fstypes: list at least one mount type, e.g. [nfs, nfs4]")
        if not opts["path"].is_absolute():
            raise ConfigError(f"{key}.path: must be an absolute path, got {opts['path']}")


@hookimpl
def livecam_register_transports(register):
    register("nfs", NfsTransport)
    register("local", DirectoryTransport)
