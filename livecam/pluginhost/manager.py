"""The plugin manager: loads plugins once and is the only place that calls hooks.

Plugins come from the entry-point group ``livecam`` (the built-ins included, so
they load exactly like a third-party plugin) and from ``.py`` files in the
config's ``plugin_dirs``. Core code calls hooks through the small typed methods
of ``Plugins``, never through ``pm.hook`` directly; those methods call
``pm.hook``, so pluggy orders implementations and runs wrappers as it documents,
and ``livecam.pluginhost.hookguard`` keeps one plugin's failure from reaching the others.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import sys
import traceback
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, cast

import pluggy

from livecam.camera import CameraBackend
from livecam.pluginhost import core_plugin, hookguard, hookspecs
from livecam.pluginhost.registry import PluginError, Registry
from livecam.storage.segment import Segment
from livecam.storage.tiers import Tier
from livecam.transport import Transport

__all__ = ["PluginError", "PluginInfo", "Plugins", "Registry", "load_file"]

log = logging.getLogger("livecam.plugins")


@dataclass
class PluginInfo:
    """What ``livecam plugins`` shows for one loaded plugin."""

    name: str
    source: str
    registers: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)


class _Manager(pluggy.PluginManager):
    """pluggy's manager, isolating each implementation as its plugin registers."""

    def register(self, plugin: object, name: str | None = None) -> str | None:
        plugin_name = super().register(plugin, name)
        for caller in self.get_hookcallers(plugin) or []:
            for impl in caller.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                if caller.name in hookspecs.EVENT_HOOKS:
                    hookguard.isolate_event(impl, caller.name)
                elif caller.name in hookspecs.REGISTRATION_HOOKS:
                    hookguard.isolate_registration(impl, caller.name)
        return plugin_name


class Plugins:
    """Loaded plugins, their registries, and typed wrappers around every hook."""

    def __init__(self, plugin_dirs: Iterable[Path] = (), *, entry_points: bool = True):
        self.pm = _Manager("livecam")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.cameras = Registry("camera backend", CameraBackend)
        self.transports = Registry("transport", Transport)
        self.tiers = Registry("tier", Tier)
        self._register(core_plugin, "core", "livecam.core_plugin")
        if entry_points:
            self._load_entry_points()
        for directory in plugin_dirs:
            self._load_dir(Path(directory))
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            name = self.pm.get_name(exc.plugin) or "?"
            hook = re.search(r"hook '(\w+)'", str(exc))
            raise PluginError(
                f"plugin {name} ({self.info[name].source}): "
                f"{hook[1] if hook else exc}: unknown hook (see livecam/pluginhost/hookspecs.py)"
            ) from None
        self._collect_registrations()

    # --- loading ----------------------------------------------------------------

    def _register(self, module: object, name: str, source: str) -> None:
        try:
            self.pm.register(module, name=name)
        except (pluggy.PluginValidationError, ValueError) as exc:
            raise PluginError(f"plugin {name} ({source}): {exc}") from None
        hooks = [i.name for i in self.pm.get_hookcallers(module) or []]
        self.info[name] = PluginInfo(name, source, hooks=sorted(hooks))

    def _load_entry_points(self) -> None:
        for ep in importlib.metadata.entry_points(group="livecam"):
            if ep.name in self.info:
                continue
            try:
                module = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name} (entry point {ep.value}) failed to load: "
                    f"{type(exc).__name__}: {exc}"
                ) from None
            self._register(module, ep.name, f"entry point {ep.value}")

    def _load_dir(self, directory: Path) -> None:
        if not directory.is_dir():
            log.debug("plugin directory %s does not exist; skipped", directory)
            return
        for file in sorted(directory.glob("*.py")):
            name = f"site:{file.stem}"
            self._register(load_file(file, name), name, str(file))

    def _collect_registrations(self) -> None:
        for hook, registry in (
            (self.pm.hook.livecam_register_cameras, self.cameras),
            (self.pm.hook.livecam_register_transports, self.transports),
            (self.pm.hook.livecam_register_tiers, self.tiers),
        ):
            calls: list[tuple[str, object, object]] = []

            def register(name: str, cls: type, _calls: list[Any] = calls) -> None:
                _calls.append((hookguard.current_owner.get(), name, cls))

            hook(register=register)
            # pluggy calls the last-loaded plugin first; a name registered twice is
            # blamed on the plugin loaded later, so record in load order.
            order = list(self.info)
            for owner, name, cls in sorted(calls, key=lambda c: _index(order, c[0])):
                registry.add(owner, name, cls)
                if owner in self.info:  # "?" for a call from an old-style hookwrapper
                    self.info[owner].registers.append(f"{registry.kind} {name}")

    # --- policy hooks ----------------------------------------------------------------

    def choose_evictions(
        self, *, tier: Tier, segments: list[Segment], bytes_needed: int
    ) -> list[Segment] | None:
        chosen = self.pm.hook.livecam_choose_evictions(
            tier=tier, segments=segments, bytes_needed=bytes_needed
        )
        return cast("list[Segment] | None", chosen)

    def remote_path(self, *, segment: Segment, node: str) -> str | None:
        return cast("str | None", self.pm.hook.livecam_remote_path(segment=segment, node=node))

    # --- event hooks: a failing plugin is logged and never stops the appliance ------

    def segment_closed(self, *, segment: Segment) -> None:
        self.pm.hook.livecam_segment_closed(segment=segment)

    def segment_spilled(self, *, segment: Segment) -> None:
        self.pm.hook.livecam_segment_spilled(segment=segment)

    def segment_evicted(self, *, segment: Segment, tier: Tier, reason: str) -> None:
        self.pm.hook.livecam_segment_evicted(segment=segment, tier=tier, reason=reason)

    def segment_published(self, *, segment: Segment, remote: str, already_there: bool) -> None:
        self.pm.hook.livecam_segment_published(
            segment=segment, remote=remote, already_there=already_there
        )

    def publish_failed(self, *, segment: Segment, error: Exception, permanent: bool) -> None:
        self.pm.hook.livecam_publish_failed(segment=segment, error=error, permanent=permanent)

    def camera_failed(self, *, camera: str, error: Exception, restarts: int) -> None:
        self.pm.hook.livecam_camera_failed(camera=camera, error=error, restarts=restarts)


def _index(order: list[str], name: str) -> int:
    return order.index(name) if name in order else len(order)


def load_file(file: Path, name: str) -> ModuleType:
    """Import a site plugin file; any failure is a PluginError naming the file and line."""
    spec = importlib.util.spec_from_file_location(f"livecam_site_{file.stem}", file)
    if spec is None or spec.loader is None:
        raise PluginError(f"plugin file {file}: cannot be imported")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise PluginError(f"plugin file {file}:{exc.lineno}: syntax error: {exc.msg}") from None
    except Exception as exc:
        line = _line_in(file, exc)
        where = f"{file}:{line}" if line else str(file)
        raise PluginError(
            f"plugin file {where}: failed to load: {type(exc).__name__}: {exc}"
        ) from None
    sys.modules.setdefault(spec.name, module)
    return module


def _line_in(file: Path, exc: BaseException) -> int | None:
    line = None
    for frame in traceback.extract_tb(exc.__traceback__):
        if Path(frame.filename) == file:
            line = frame.lineno
    return line
