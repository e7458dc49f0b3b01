"""Import paths from before livecam's modules moved into folders: a site plugin
that still imports one keeps working, and the log says once where it went.

The public plugin API did not move (``livecam.hookimpl``, ``livecam.camera``,
``livecam.options``, ``livecam.transport``). ``livecam.recorder`` and
``livecam.shipper`` are folders now; nothing of theirs was ever a plugin's to import.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import sys
from types import ModuleType

log = logging.getLogger("livecam.plugins")

MOVED = {
    "livecam.segment": "livecam.storage.segment",
    "livecam.tiers": "livecam.storage.tiers",
    "livecam.state": "livecam.storage.state",
    "livecam.losses": "livecam.storage.losses",
    "livecam.clock": "livecam.storage.clock",
    "livecam.snapshot": "livecam.storage.snapshot",
    "livecam.errors": "livecam.transport.errors",
    "livecam.publish": "livecam.transport.protocol",
    "livecam.store_transport": "livecam.transport.stores",
    "livecam.dirstore": "livecam.transport.dirstore",
    "livecam.hookspecs": "livecam.pluginhost.hookspecs",
    "livecam.hookguard": "livecam.pluginhost.hookguard",
    "livecam.registry": "livecam.pluginhost.registry",
    "livecam.core_plugin": "livecam.pluginhost.core_plugin",
    "livecam.plugins": "livecam.pluginhost.manager",
    "livecam.sink": "livecam.recorder.sink",
    "livecam.ended": "livecam.recorder.ended",
    "livecam.publisher": "livecam.shipper.publisher",
    "livecam.housekeeper": "livecam.shipper.housekeeper",
    "livecam.evictions": "livecam.shipper.evictions",
    "livecam.claims": "livecam.shipper.handoff",
    "livecam.retry": "livecam.shipper.retry",
    "livecam.status": "livecam.ops.status",
    "livecam.metrics": "livecam.ops.prometheus",
    "livecam.textfile": "livecam.ops.metrics",
    "livecam.heartbeat": "livecam.ops.heartbeat",
    "livecam.sdnotify": "livecam.ops.sdnotify",
    "livecam.supervisor": "livecam.ops.supervisor",
    "livecam.process": "livecam.ops.lifecycle",
}


class _Alias(importlib.abc.Loader):
    """Loads an old name as the module now at ``new`` (the same module object)."""

    def __init__(self, new: str):
        self.new = new
        self._spec: importlib.machinery.ModuleSpec | None = None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        log.warning("%s is now %s: import it from there", spec.name, self.new)
        module = importlib.import_module(self.new)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        module.__spec__ = self._spec  # the import system gave it the alias's


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED.get(fullname)
        return importlib.util.spec_from_loader(fullname, _Alias(new)) if new else None


def install() -> None:
    """Let the old paths import (after every real one: a module that exists wins)."""
    if not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.append(_Finder())
