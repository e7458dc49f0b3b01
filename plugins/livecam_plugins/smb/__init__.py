"""The ``smb`` transport: SMB2/3 from Python (smbprotocol), no kernel mount.

It fills in the one publish protocol (``livecam.transport.protocol``) with SMB requests:
write ``.<name>.part`` beside the target (a fixed name: a retry overwrites its own
leftover), query its size on the open handle, then rename (without replacing:
``replace_if_exists`` false, so a file that appeared under the name meanwhile is
kept and compared, never overwritten) and close in one compound request. "Already
there" means same size and, read back only then, the same SHA-256.

On an append-only share (the NAS role's: Samba's vfs_worm with no grace period)
a file is immutable as soon as it exists and was written, so even the temp cannot
be renamed: after the first refusal on a connection the final step hard-links the
temp to the target name (never replacing) and leaves the temp for the NAS's
retention, and a retry writes beside an earlier attempt's immutable temp.

Encryption (SMB3) is required by default: a server that cannot encrypt is an
error, never a silent downgrade; ``encrypt: false`` allows plaintext. The password
comes from ``password_file`` only and is read when connecting (so a rotated
password is picked up), never logged or shown.

Round trips, not bytes, limit a backlog over a link with latency: directories
made are remembered for the connection (forgotten on reconnect), writes overlap
(as many as the connection's ``window`` of unacknowledged bytes allows:
``livecam.transport.pipeline``), and a batch keeps ``workers`` segments in flight
over the one session. Those need smbprotocol's internals, all in ``upstream``
(``upstream_problems`` says when an upgrade moved them).

The connection is kept between publishes in this transport's own pool. After any
network failure (an smbd restart, a cut link) the pool is dropped and the next
publish connects again. smbprotocol's own requests wait without limit, so a
watchdog closes the socket when an attempt exceeds ``timeout``: a silent server
fails the attempt instead of hanging the shipper.

``transport``: the session, the watchdog and the error classes; ``store``: the
protocol's operations as SMB requests; ``upstream``: smbprotocol's internals.
"""

from livecam import hookimpl
from livecam_plugins.smb.store import SmbStore, SmbTemp
from livecam_plugins.smb.transport import SmbTransport
from livecam_plugins.smb.upstream import live_problems, upstream_problems

__all__ = ["SmbStore", "SmbTemp", "SmbTransport", "live_problems", "upstream_problems"]


@hookimpl
def livecam_register_transports(register):
    register("smb", SmbTransport)
