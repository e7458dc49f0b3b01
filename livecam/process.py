"""Process helpers shared by the supervisor and camera backends."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

_PR_SET_PDEATHSIG = 1


def dies_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get ``sig`` when its parent dies.

    So a recorder killed with -9 never leaves an orphaned ffmpeg holding the camera.
    """

    def preexec() -> None:
        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, sig)

    return preexec


def command_lines() -> Iterator[tuple[int, str]]:
    """(pid, command line with spaces) of every process that can be read now."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        yield int(entry), raw.replace(b"\0", b" ").decode(errors="replace")
