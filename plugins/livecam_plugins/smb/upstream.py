"""The only code of the smb transport that touches smbclient._io and smbprotocol's
credit window, one small function each.

Tested with smbprotocol 1.17; pyproject caps it below 1.18. tests/transports/
test_protocol.py runs ``upstream_problems()`` and ``live_problems()``, so an
upgrade that moves any of these fails there by name, and check-config (and every
connect) refuses with the same one line.
"""

from __future__ import annotations

import functools
from typing import Any

from livecam_plugins._upstream import Internals

INTERNALS = Internals(
    library="smbprotocol",
    transport="smb",
    pin="smbprotocol<1.18",
    source="plugins/livecam_plugins/smb/upstream.py",
    names={
        "smbclient._io": ("SMBFileIO", "SMBFileTransaction", "query_info", "set_info"),
        "smbprotocol": ("MAX_PAYLOAD_SIZE",),
        "smbprotocol.file_info": (
            "FileLinkInformation",
            "FileRenameInformation",
            "FileStandardInformation",
        ),
        "smbprotocol.open": ("FilePipePrinterAccessMask", "Open"),
        "smbprotocol.connection": ("Connection",),
    },
)
# Attributes of live objects: a connection, and the ``fd`` (an Open) of a raw handle.
_CONNECTION_ATTRS = ("sequence_window", "send", "max_write_size")
_OPEN_ATTRS = ("write", "file_name", "connection", "tree_connect")


@functools.cache
def upstream_problems() -> str:
    """'' when smbprotocol still has the internals used below, else what moved."""
    return INTERNALS.problems()


def live_problems(raw: Any) -> str:
    """'' when an open raw handle and its connection still have what is used below."""
    fd = getattr(raw, "fd", None)
    missing = [f"Open.{a}" for a in _OPEN_ATTRS if not hasattr(fd, a)]
    conn = getattr(fd, "connection", None)
    missing += [f"Connection.{a}" for a in _CONNECTION_ATTRS if not hasattr(conn, a)]
    window = getattr(conn, "sequence_window", None)
    if not (isinstance(window, dict) and {"low", "high"} <= window.keys()):
        missing.append("Connection.sequence_window['low'/'high']")
    return INTERNALS.moved(missing)


def open_raw(unc: str, kw: dict[str, Any], *, write: bool = True) -> Any:
    """A raw smbclient handle on ``unc``: created or truncated for writing, size
    queries and renaming; with ``write`` false an existing file, only to be linked
    (left closed: ``link_and_close`` opens it in its compound)."""
    from smbclient._io import SMBFileIO
    from smbprotocol.open import FilePipePrinterAccessMask as Access

    if not write:
        return SMBFileIO(unc, mode="r", desired_access=Access.FILE_READ_ATTRIBUTES, **kw)
    access = Access.FILE_WRITE_DATA | Access.DELETE | Access.FILE_READ_ATTRIBUTES
    raw = SMBFileIO(unc, mode="w", desired_access=access, **kw)
    raw.open()
    return raw


def query_size(raw: Any) -> int:
    """The end of file the server holds for the open ``raw`` handle."""
    from smbclient._io import SMBFileTransaction, query_info
    from smbprotocol.file_info import FileStandardInformation

    with SMBFileTransaction(raw) as query:
        query_info(query, FileStandardInformation)
    return int(query.results[0]["end_of_file"].get_value())


def rename_and_close(raw: Any, unc: str) -> None:
    """Rename the open ``raw`` to ``unc`` WITHOUT replacing, and close it: one compound.
    Raises SMBOSError (EEXIST when the name is taken)."""
    import ntpath

    from smbclient._io import SMBFileTransaction, set_info
    from smbprotocol.file_info import FileRenameInformation

    rename = FileRenameInformation()
    rename["replace_if_exists"] = False
    # Below the share, as the handle's own name is.
    rename["file_name"] = ntpath.join(ntpath.dirname(raw.fd.file_name), ntpath.basename(unc))
    with SMBFileTransaction(raw) as commit:
        set_info(commit, rename)
        raw.close(transaction=commit)


def link_and_close(raw: Any, unc: str) -> None:
    """Give the file of ``raw`` the name ``unc`` too (a hard link, never replacing) and
    close it: one compound, which opens ``raw`` first when it is closed. Raises
    SMBOSError (EEXIST when the name is taken)."""
    import ntpath

    from smbclient._io import SMBFileTransaction, set_info
    from smbprotocol.file_info import FileLinkInformation

    link = FileLinkInformation()
    link["replace_if_exists"] = False
    link["file_name"] = ntpath.join(ntpath.dirname(raw.fd.file_name), ntpath.basename(unc))
    with SMBFileTransaction(raw) as commit:
        set_info(commit, link)
        if not raw.closed:
            raw.close(transaction=commit)


def max_write(raw: Any) -> int:
    """The largest write the connection of the open ``raw`` handle takes."""
    return int(raw.fd.connection.max_write_size)


def writable(raw: Any, want: int) -> tuple[int, bool]:
    """(bytes of ``want`` one write on ``raw``'s connection may carry, whether credits
    for it are free now); one credit stays for a small request. Call under the
    credit lock."""
    from smbprotocol import MAX_PAYLOAD_SIZE

    window = raw.fd.connection.sequence_window
    free = window["high"] - window["low"] - 1
    return min(want, max(free, 1) * MAX_PAYLOAD_SIZE), free >= 1


def send_write(raw: Any, data: bytes, offset: int, growth: int) -> Any:
    """Send one write of ``data`` at ``offset`` on ``raw`` without waiting, asking
    ``growth`` credits more than it uses; returns a function that waits for the
    reply and returns how many bytes the server took."""
    from smbprotocol import MAX_PAYLOAD_SIZE

    fd = raw.fd
    conn = fd.connection
    msg, receive = fd.write(data, offset=offset, send=False)
    credits = (len(data) - 1) // MAX_PAYLOAD_SIZE + 1
    request = conn.send(
        msg,
        sid=fd.tree_connect.session.session_id,
        tid=fd.tree_connect.tree_connect_id,
        credit_request=credits + growth,
    )
    return lambda: receive(request)
