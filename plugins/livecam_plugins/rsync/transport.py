"""``RsyncTransport``: the options, the checks, and the parts put together.

A batch is ``calls.Calls``'s: rsync calls sized by ``pacer.Pacer``, each sent
and proven by ``send.Sender`` over its lane's master connection
(``master.Lane``); ``errors`` holds what ``classify`` reads.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.transport import (
    CommandFailed,
    Item,
    PermanentError,
    PublishError,
    ServerBusy,
    TransientError,
    Transport,
)
from livecam_plugins._ssh import SSH_OPTIONS, check_ssh_options, return_spread, ssh_answers
from livecam_plugins.rsync import errors
from livecam_plugins.rsync.calls import Calls
from livecam_plugins.rsync.master import TURNED_AWAY, ControlDir
from livecam_plugins.rsync.pacer import Pacer


def kib_per_second(value: Any, key: str) -> int:
    """``bwlimit``: a whole number is KiB/s as in rsync; '5M' or '800K' are bytes/s."""
    if isinstance(value, int) and not isinstance(value, bool):
        return o.integer(0)(value, key)
    return o.size(value, key) // 1024


class RsyncTransport(Transport):
    """rsync over persistent, multiplexed OpenSSH connections (see the package doc)."""

    description = "rsync over OpenSSH, one multiplexed connection (rrsync -wo on the NAS)"
    #: Segments per batch from the shipper (which also keeps a batch within
    #: ``batch_limit`` bytes); publish_batch splits a batch into rsync calls.
    batch_size = 256
    #: Eviction may delete a segment of the call in flight (see ``send``).
    takes_started = True
    options: ClassVar = {
        **SSH_OPTIONS,
        "bwlimit": Option(kib_per_second, 0, "KiB/s (or '5M' bytes/s); 0: unlimited"),
        "compress": Option(o.boolean, False, "H.264 does not compress; leave off"),
        "control_persist": Option(o.positive_duration, "5m", "idle master connection lifetime"),
    }

    def __init__(self, options: Any, *, timeout: float):
        super().__init__(options, timeout=timeout)
        self._control = ControlDir()  # the sockets and staging trees
        self._pacer = Pacer()
        self._calls = Calls(self, self._control, self._pacer)

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        check_ssh_options(opts, key)
        for tool in ("rsync", "ssh"):
            if shutil.which(tool) is None:
                raise ConfigError(f"{key}.plugin: rsync needs the {tool} command installed")

    def reachable(self, timeout: float) -> bool:
        """Whether the NAS's sshd greets (its banner; no login): see Transport.reachable."""
        return ssh_answers(self.opts["host"], self.opts["port"], timeout)

    def return_spread(self) -> float:
        """From sshd's greeting time (``livecam_plugins._ssh.return_spread``)."""
        return return_spread(self.opts["host"], self.opts["port"])

    def describe(self) -> str:
        o_ = self.opts
        return f"rsync to {o_['user']}@{o_['host']}:{o_['port']} {o_['path']}"

    def classify(self, error: BaseException, where: str) -> PublishError:
        """A failed ssh or rsync (``CommandFailed``) by its stderr: ``errors.BUSY``
        (transient: ``errors.Busy``), ``errors.TURNED_AWAY`` (``ServerBusy``: sshd
        closed the connection before greeting), ``errors.PERMANENT`` (a person
        must act), else transient; any other error as ``Transport.classify``."""
        if not isinstance(error, CommandFailed):
            return super().classify(error, where)
        detail = errors.detail(error.stderr)
        if errors.BUSY.search(error.stderr):
            return errors.Busy(f"{where}: the NAS still runs this node's previous call: {detail}")
        if errors.TURNED_AWAY.search(error.stderr):
            return ServerBusy(f"{where}: {TURNED_AWAY}: {detail}")
        for pattern, reason in errors.PERMANENT:
            if pattern.search(error.stderr):
                return PermanentError(f"{where}: {reason}: {detail}")
        return TransientError(f"{where}: {detail}")

    def publish(self, local: Path, remote: str, *, size: int, digest: str) -> bool:
        """Publish one file (a batch of one); False if the NAS holds the same content.

        Raises PermanentError (host key, auth, permission, no space, other content
        under the name) or TransientError (network, timeout, server restart).
        """
        # publish_batch yields every item it does not raise for: exactly one here.
        ((_, sent),) = self.publish_batch([Item(local, remote, size, digest)])
        return sent

    def batch_limit(self) -> int:
        """Bytes of the next batch (``Pacer.batch_limit``); 0: one segment."""
        return self._pacer.batch_limit()

    def publish_batch(self, items: Sequence[Item]) -> Iterator[tuple[Item, bool]]:
        """Publish ``items`` in rsync calls of a few seconds, two at once where they
        overlap (``calls``).

        Yields ``(item, sent)`` for each item verified on the NAS when its call
        ends (sent=False: the same content was there already). Raises
        TransientError (network, timeout, server restart, a source that vanished)
        or PermanentError (host key, auth, permission, no space, a remote path
        that leaves ``path``, other content under the name) for the items not
        yielded; a per-item PermanentError does not stop the other items. After a
        failure no call starts; the ones running are waited for and reported.
        """
        yield from self._calls.publish(items)

    def close(self) -> None:
        if not self._control.made:
            return
        self._calls.close()
        self._control.remove()
