"""The ``sftp`` transport: SFTP from Python (paramiko), for chrooted SFTP-only accounts.

Such an account has no shell, so everything is an SFTP request, filling in the
one publish protocol (``livecam.transport.protocol``): stat, mkdir, write ``.<name>.part``,
FSTAT its size on the open handle after the pipelined writes, and the plain SFTP
``rename``, which never replaces (SFTP v3; OpenSSH's sftp-server links the new
name and then unlinks the old): a file that appears under the name meanwhile is
kept and compared, never overwritten. "Already there" means same size and, read
back only then, the same SHA-256. Every file is created with mode 0444 (the open
handle still writes): with the NAS role's ``internal-sftp -P`` list (no remove,
no posix-rename, no setstat), nothing published can be truncated, overwritten
or removed through this account, livecam's own included.

The NAS host key must be in ``known_hosts_file``; anything else is refused. One
connection is kept open between publishes, with SSH keepalives; every socket
read has a timeout, and a failed connection is dropped and made again next time.
paramiko is imported only when used, so this package loads without it. A batch
keeps ``workers`` segments in flight, each on its own SFTP channel of the
connection, with at most ``window`` bytes written and not yet acknowledged on
the connection (``livecam.transport.pipeline``). The private request calls of
paramiko this needs are all in ``upstream``.

``transport``: the connection and the error classes; ``store``: the protocol's
operations as SFTP requests; ``upstream``: paramiko's internals.
"""

from livecam import hookimpl
from livecam_plugins.sftp.store import SftpStore, SftpTemp
from livecam_plugins.sftp.transport import SftpTransport
from livecam_plugins.sftp.upstream import paramiko_problems

__all__ = ["SftpStore", "SftpTemp", "SftpTransport", "paramiko_problems"]


@hookimpl
def livecam_register_transports(register):
    register("sftp", SftpTransport)
