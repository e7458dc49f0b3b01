"""Name -> class registries that the YAML config selects plugins' classes from."""

from __future__ import annotations

from typing import Generic, TypeVar

from livecam.options import ConfigError


class PluginError(ConfigError):
    """A plugin could not be loaded or registered something invalid."""


T = TypeVar("T")


class Registry(Generic[T]):
    """name -> subclass of ``base``, remembering which plugin registered each name."""

    def __init__(self, kind: str, base: type[T]):
        self.kind = kind
        self.base = base
        self.classes: dict[str, type[T]] = {}
        self.owners: dict[str, str] = {}

    def add(self, owner: str, name: object, cls: object) -> None:
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

    def get(self, name: str, key: str) -> type[T]:
        """The class registered as ``name``; a ConfigError naming ``key`` if there is none."""
        try:
            return self.classes[name]
        except KeyError:
            known = ", ".join(sorted(self.classes)) or "none"
            raise ConfigError(f"{key}: unknown {self.kind} {name!r} (known: {known})") from None

    def names(self) -> list[str]:
        return sorted(self.classes)
