"""The transport contract, and what the transports share.

``livecam.transport`` itself is the contract a transport plugin subclasses
(``Transport``, ``Item``, the error classes, ``run_command``, ``answers``; see
``livecam.transport.base``). Beside it: ``errors`` (the error classes alone,
standard library only), ``protocol`` (the one publish protocol over a few
store operations), ``stores`` (a transport made of stores, with concurrent
batches), ``pipeline`` (writes with many requests in flight within a window:
``sftp``, ``smb``) and ``dirstore`` (a directory as a store: the ``local`` and
``nfs`` transports).
"""

from livecam.transport.base import CommandFailed, Hold, Item, Transport, answers, run_command
from livecam.transport.errors import (
    ConflictError,
    PermanentError,
    PublishError,
    ServerBusy,
    TransientError,
    conflict_path,
)

__all__ = [
    "CommandFailed",
    "ConflictError",
    "Hold",
    "Item",
    "PermanentError",
    "PublishError",
    "ServerBusy",
    "TransientError",
    "Transport",
    "answers",
    "conflict_path",
    "run_command",
]
