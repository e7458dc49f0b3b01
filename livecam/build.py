"""The configured parts of a node, built from a ``Config`` and the loaded ``Plugins``:
its disk (the two tiers, of the kinds the config names) and its transport.

It sits above both (the storage and transport modules stay free of them), so the
import graph runs one way: contracts and storage, then plugins and config, then
this, then the processes and readers that use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from livecam import config as configmod
from livecam.config import Config
from livecam.options import ConfigError
from livecam.pluginhost.manager import Plugins
from livecam.storage.layout import NodeDisk
from livecam.storage.tiers import Tier
from livecam.transport import Transport


def load(path: Path) -> tuple[Config, Plugins]:
    """The config in ``path``, validated, and the plugins it loads (entry points,
    then its ``plugin_dirs``); a ConfigError names the file, then the key."""
    raw = configmod.read(path)
    try:
        return from_document(raw, source=str(path))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def from_document(raw: Any, *, source: str = "<config>") -> tuple[Config, Plugins]:
    """An already-read YAML document, validated, and the plugins it loads."""
    plugins = Plugins(configmod.plugin_dirs(raw))
    return configmod.parse(raw, plugins, source=source), plugins


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


def disk(config: Config, plugins: Plugins) -> NodeDisk:
    """The node's disk: its RAM buffer and disk spool, and every path on them."""
    return NodeDisk(tier(config, plugins, "buffer"), tier(config, plugins, "spool"))


def transport(config: Config, plugins: Plugins) -> Transport:
    """The configured transport, not yet connected (transports connect lazily)."""
    cls = plugins.transports.get(config.transport_plugin, "transport.plugin")
    return cls(config.transport, timeout=config.transport_timeout)
