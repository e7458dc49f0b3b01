"""How a publish fails: the error classes of the transport contract.

Re-exported by ``livecam.transport`` (import them from there). They live in
this module of their own, importing nothing but ``typing``, because the ``nfs`` helper process
runs the publish protocol under ``python -I -S`` and pays for every module it
loads, on every segment.
"""

from __future__ import annotations

from typing import ClassVar


class PublishError(Exception):
    """A publish attempt failed; the local copy is kept."""

    permanent: ClassVar[bool] = False


class TransientError(PublishError):
    """Will likely heal by itself: network down, server restarting, timeout."""


class ServerBusy(TransientError):
    """The NAS is up but turned this connection away before greeting it (sshd past
    its ``MaxStartups``, with a fleet connecting at once): come back in a moment.
    The retry policy waits a short random time for it, without backing off
    (``livecam.shipper.retry``)."""


class PermanentError(PublishError):
    """Needs a person: auth refused, host key changed, no space, permission denied."""

    permanent = True


class ConflictError(PermanentError):
    """The NAS holds other content under the target name; it was not overwritten.

    ``remote`` is the item's remote path. The shipper then publishes that segment
    under a conflict name beside it (see ``conflict_path``), so one odd file on the
    NAS never holds up the segments behind it.
    """

    def __init__(self, message: str, *, remote: str):
        super().__init__(message)
        self.remote = remote


def conflict_path(remote: str, digest: str) -> str:
    """Where a segment goes when ``remote`` holds other content: same directory,
    a name that says why and cannot collide (it carries the segment's digest)."""
    stem, dot, ext = remote.rpartition(".")
    return f"{stem}.conflict-{digest[:12]}.{ext}" if dot else f"{remote}.conflict-{digest[:12]}"
