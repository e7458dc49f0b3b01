"""The ``nfs`` and ``local`` transports: copy into a directory, fsync, rename.

``nfs`` ships into a mounted share (NFS, or any type listed in ``fstypes``) and
refuses to write unless ``path`` really lies on such a mount: an unmounted share
is a bare directory on the SD card, and filling that would be worse than waiting.
``local`` is the same copy with no mount check (the demo, a disk on the node).

Both run the one publish protocol with a directory store (``livecam.transport.dirstore``:
temp name, fsync, size check, a final link or rename that never replaces). All
file I/O runs in a short-lived child process (``_nfs_child.py``) with a hard
timeout: a hung hard NFS mount freezes that child, which is abandoned, never the
shipper.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, ClassVar

import livecam
from livecam import hookimpl
from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.transport import TransientError, Transport, run_command
from livecam.transport.dirstore import outcome

CHILD = str(Path(__file__).with_name("_nfs_child.py"))
LIVECAM = os.path.dirname(livecam.__file__)


class DirectoryTransport(Transport):
    """Copy into a directory: temp name, fsync, size check, no-replace rename, fsync dir."""

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
            "livecam": LIVECAM,
            "root": os.path.abspath(self.opts["path"]),
            "fstypes": list(self.fstypes),
            "remote": remote,
            "local": str(local),
            "size": size,
            "digest": digest,
        }
        proc = run_command(
            [sys.executable, "-I", "-S", CHILD],
            input=json.dumps(job).encode(),
            timeout=self.timeout,
        )
        try:
            answer = json.loads(proc.stdout or b"{}")
        except ValueError:
            answer = {}
        if not answer:
            detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise TransientError(f"copy helper failed (exit {proc.returncode}): {detail[0]}")
        return outcome(answer, remote)


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
