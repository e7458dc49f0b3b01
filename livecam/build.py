"""The configured parts of a node, built from a ``Config`` and the loaded ``Plugins``.

It sits above both (the model modules stay free of them), so the import graph
runs one way: contracts and models, then plugins and config, then this, then the
processes that use it.
"""

from __future__ import annotations

from livecam.config import Config
from livecam.plugins import Plugins
from livecam.tiers import Tier
from livecam.transport import Transport


def tier(config: Config, plugins: Plugins, role: str) -> Tier:
    """The ``buffer`` or ``spool`` tier of ``config``, of the kind it names."""
    tc = config.buffer if role == "buffer" else config.spool
    cls = plugins.tiers.get(tc.kind, f"{role}.kind")
    return cls(
        role,
        tc.path,
        max_bytes=tc.max_bytes,
        min_free_bytes=tc.min_free_bytes,
        high_water=tc.high_water,
    )


def transport(config: Config, plugins: Plugins) -> Transport:
    """The configured transport, not yet connected (transports connect lazily)."""
    cls = plugins.transports.get(config.transport_plugin, "transport.plugin")
    return cls(config.transport, timeout=config.transport_timeout)
