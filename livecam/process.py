"""Process helpers for the supervisor and camera backends."""

from __future__ import annotations

import ctypes
import signal
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def dies_with_parent(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get ``sig`` when its parent dies.

    So a recorder killed with -9 never leaves an orphaned ffmpeg holding the camera.
    """

    def preexec() -> None:
        ctypes.CDLL("libc.so.6").prctl(_PR_SET_PDEATHSIG, sig)

    return preexec
