"""The ``rsync`` transport: rsync over the OpenSSH client, one master connection per lane.

The NAS side is meant to restrict the node's key to
``command="rrsync -wo <dir>",restrict``: the node can write below its directory
and nothing else, it can neither read nor list. Everything here works within
that. docs/transports.md (rsync) tells the whole story, with the figures.

The modules, by concern (this package is ``livecam_plugins.rsync``):

- ``transport``: ``RsyncTransport``, its options and checks, ``classify``;
- ``calls``: a batch as several short rsync calls, two at once, or one at a
  time where the NAS's rrsync wants it;
- ``pacer``: how much a call carries (why calls are short), from the rate of
  the recent calls;
- ``send``: one call: sent over its lane, stopped when overdue, proven; a
  segment evicted during it;
- ``verify``: the staging tree of symlinks, and the dry runs that prove what
  the NAS holds without reading it back;
- ``master``: each lane's SSH master connection and the rsyncs it carries, the
  private control directory, stale ones of killed shippers;
- ``errors``: how ssh and rsync fail, as ``RsyncTransport.classify`` reads it.
"""

from __future__ import annotations

from livecam import hookimpl
from livecam.pluginhost.hookspecs import Register
from livecam_plugins.rsync.transport import RsyncTransport

__all__ = ["RsyncTransport", "livecam_register_transports"]


@hookimpl
def livecam_register_transports(register: Register) -> None:
    register("rsync", RsyncTransport)
