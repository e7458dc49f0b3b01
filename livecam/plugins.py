"""The plugin manager: loads plugins once and is the only place that calls hooks.

Plugins come from the entry-point group ``livecam`` (the built-ins included, so
they load exactly like a third-party plugin) and from ``.py`` files in the
config's ``plugin_dirs``. Core code calls hooks through the small typed methods
of ``Plugins``, never through ``pm.hook`` directly.
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
from typing import Any

import pluggy

from livecam import hookspecs
from livecam.options import ConfigError

log = logging.getLogger("livecam.plugins")


class PluginError(ConfigError):
    """A plugin could not be loaded or registered something invalid."""


@dataclass
class PluginInfo:
    """What ``livecam plugins`` shows for one loaded plugin."""

    name: str
    source: str
    registers: list[str] = field(default_factory=list)
    hooks: list[str] = field(default_factory=list)


class Registry:
    """name -> class, remembering which plugin registered each name."""

    def __init__(self, kind: str, base: type):
        self.kind = kind
        self.base = base
        self.classes: dict[str, type] = {}
        self.owners: dict[str, str] = {}

    def add(self, owner: str, name: str, cls: Any) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {owner}: {self.kind} name must be a non-empty string")
        if not (isinstance(cls, type) and issubclass(cls, self.base)):
            raise PluginError(
                f"plugin {owner}: {self.kind} {name!r} must be a subclass of "
                f"{self.base.__module__}.{self.base.__name__}"
            )
        if name in self.classes:
            raise PluginError(
                f"plugin {owner}: {self.kind} {name!r} is already registered by {self.owners[name]}"
            )
        self.classes[name] = cls
        self.owners[name] = owner

    def get(self, name: str, key: str) -> type:
        try:
            return self.classes[name]
        except KeyError:
            known = ", ".join(sorted(self.classes)) or "none"
            raise ConfigError(f"{key}: unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self.classes)


class Plugins:
    """Loaded plugins, their registries, and typed wrappers around every hook."""

    def __init__(self, plugin_dirs: Iterable[Path] = (), *, entry_points: bool = True):
        from livecam import core_plugin
        from livecam.camera import CameraBackend
        from livecam.tiers import Tier
        from livecam.transport import Transport

        self.pm = pluggy.PluginManager("livecam")
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
                f"{hook[1] if hook else exc}: unknown hook (see livecam/hookspecs.py)"
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
        for spec, registry in (
            ("livecam_register_cameras", self.cameras),
            ("livecam_register_transports", self.transports),
            ("livecam_register_tiers", self.tiers),
        ):
            caller = getattr(self.pm.hook, spec)
            for impl in caller.get_hookimpls():
                owner = self.pm.get_name(impl.plugin) or "?"

                def register(name: str, cls: type, _owner: str = owner, _r: Registry = registry):
                    _r.add(_owner, name, cls)
                    self.info[_owner].registers.append(f"{_r.kind} {name}")

                try:
                    impl.function(register=register)
                except PluginError:
                    raise
                except Exception as exc:
                    raise PluginError(
                        f"plugin {owner}: {spec} failed: {type(exc).__name__}: {exc}"
                    ) from None

    # --- policy hooks ----------------------------------------------------------------

    def choose_evictions(self, *, tier: Any, segments: list, bytes_needed: int) -> list | None:
        return self.pm.hook.livecam_choose_evictions(
            tier=tier, segments=segments, bytes_needed=bytes_needed
        )

    def remote_path(self, *, segment: Any, node: str) -> str | None:
        return self.pm.hook.livecam_remote_path(segment=segment, node=node)

    # --- event hooks: a failing plugin is logged and never stops the appliance ------

    def _fire(self, spec: str, **kwargs: Any) -> None:
        for impl in getattr(self.pm.hook, spec).get_hookimpls():
            try:
                impl.function(**{a: kwargs[a] for a in impl.argnames})
            except Exception:
                log.exception("plugin %s failed in %s", self.pm.get_name(impl.plugin), spec)

    def segment_closed(self, *, segment: Any) -> None:
        self._fire("livecam_segment_closed", segment=segment)

    def segment_spilled(self, *, segment: Any) -> None:
        self._fire("livecam_segment_spilled", segment=segment)

    def segment_evicted(self, *, segment: Any, tier: Any, reason: str) -> None:
        self._fire("livecam_segment_evicted", segment=segment, tier=tier, reason=reason)

    def segment_published(self, *, segment: Any, remote: str, already_there: bool) -> None:
        self._fire(
            "livecam_segment_published", segment=segment, remote=remote, already_there=already_there
        )

    def publish_failed(self, *, segment: Any, error: Exception, permanent: bool) -> None:
        self._fire("livecam_publish_failed", segment=segment, error=error, permanent=permanent)

    def camera_failed(self, *, camera: str, error: Exception, restarts: int) -> None:
        self._fire("livecam_camera_failed", camera=camera, error=error, restarts=restarts)


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
