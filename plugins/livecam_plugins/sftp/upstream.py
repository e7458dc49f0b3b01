"""The only code of the sftp transport that touches paramiko's private request calls.

``SFTPClient.open`` sends no mode and waits for every answer; the transport needs an
OPEN with a mode (``_request``), writes sent without waiting (``_async_request``)
and their answers read in order (``_read_response``, which raises on an error
status), and FSTAT with the close right behind it. Tested with paramiko 5.1; the
sftp extra caps it below 6. ``paramiko_problems`` names what an upgrade moved
(check-config refuses with that one line; tests/transports/test_check_config.py
removes one to see it). paramiko is imported only here and only when used.
"""

from __future__ import annotations

from typing import Any

from livecam_plugins._upstream import Internals

READ_ONLY = 0o444  # every file this transport creates, from its creation

# The names used, by module (tested with paramiko 5.1).
NAMES = {
    "paramiko.sftp": ("CMD_OPEN", "CMD_HANDLE", "CMD_WRITE", "CMD_STATUS", "CMD_FSTAT",
                      "CMD_ATTRS", "CMD_CLOSE", "int64"),
    "paramiko.sftp_client": ("SFTPClient._request", "SFTPClient._async_request",
                             "SFTPClient._read_response"),
    "paramiko.sftp_attr": ("SFTPAttributes._from_msg",),
}  # fmt: skip
INTERNALS = Internals(
    library="paramiko",
    transport="sftp",
    pin="paramiko<6",
    source="plugins/livecam_plugins/sftp/upstream.py",
    names=NAMES,
)


def load_paramiko() -> Any:
    """The paramiko module, or None when it is not installed."""
    try:
        import paramiko
    except ImportError:
        return None
    return paramiko


def paramiko_problems() -> str:
    """'' when paramiko still has the internals used here, else what moved."""
    return INTERNALS.problems()


def create_read_only(sftp: Any, path: str) -> bytes:
    """Open ``path`` for writing (created or truncated), mode 0444 from its creation:
    the handle writes, but nobody can open the file for writing again, so once
    renamed into place it is never truncated or overwritten (the NAS role refuses
    chmod). Returns the handle."""
    from paramiko.sftp import (
        CMD_HANDLE,
        CMD_OPEN,
        SFTP_FLAG_CREATE,
        SFTP_FLAG_TRUNC,
        SFTP_FLAG_WRITE,
        SFTPError,
    )
    from paramiko.sftp_attr import SFTPAttributes

    attrs = SFTPAttributes()
    attrs.st_mode = READ_ONLY
    flags = SFTP_FLAG_WRITE | SFTP_FLAG_CREATE | SFTP_FLAG_TRUNC
    kind, msg = sftp._request(CMD_OPEN, path, flags, attrs)
    if kind != CMD_HANDLE:
        raise SFTPError("Expected handle")
    return bytes(msg.get_binary())


def send_write(sftp: Any, handle: bytes, offset: int, data: bytes) -> int:
    """Send one WRITE of ``data`` at ``offset`` without waiting; its request number."""
    from paramiko.sftp import CMD_WRITE, int64

    return int(sftp._async_request(type(None), CMD_WRITE, handle, int64(offset), data))


def acknowledged(sftp: Any, num: int, path: str) -> None:
    """Wait for write request ``num``'s answer; raises on an error status."""
    from paramiko.sftp import CMD_STATUS

    kind, _ = sftp._read_response(num)
    if kind != CMD_STATUS:
        raise OSError(f"sftp {path}: unexpected answer {kind} to a write")


def fstat_then_close(sftp: Any, handle: bytes) -> tuple[int, int]:
    """Send FSTAT on the open ``handle`` and its CLOSE right behind it, without
    waiting: the server answers in order, so the size is the handle's after every
    write, and the close costs no round trip of its own. Their request numbers."""
    from paramiko.sftp import CMD_CLOSE, CMD_FSTAT

    stat_num = sftp._async_request(type(None), CMD_FSTAT, handle)
    return stat_num, sftp._async_request(type(None), CMD_CLOSE, handle)


def size_answer(sftp: Any, nums: tuple[int, int], path: str) -> int:
    """The size FSTAT answered (``nums`` from ``fstat_then_close``), after the close's."""
    from paramiko.sftp import CMD_ATTRS
    from paramiko.sftp_attr import SFTPAttributes

    kind, msg = sftp._read_response(nums[0])
    if kind != CMD_ATTRS:
        raise OSError(f"sftp {path}: unexpected answer {kind} to FSTAT")
    size = int(SFTPAttributes._from_msg(msg).st_size)
    sftp._read_response(nums[1])
    return size


def close(sftp: Any, handle: bytes) -> None:
    """Close ``handle`` and wait for the answer."""
    from paramiko.sftp import CMD_CLOSE

    sftp._request(CMD_CLOSE, handle)
