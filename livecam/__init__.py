"""livecam: record camera segments into RAM, spill to disk, ship to a NAS, lose nothing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pluggy

from livecam import _moved

__version__ = "0.1.0"

_moved.install()  # a site plugin written for the flat layout still imports

#: Decorator for plugin hook implementations: ``@livecam.hookimpl`` (or
#: ``from livecam import hookimpl``).
hookimpl: pluggy.HookimplMarker


def __getattr__(name: str) -> Any:
    # ``hookimpl`` is made on first use (PEP 562), so that a command that loads no
    # plugin (``livecam export``, ``livecam nas``) does not import pluggy at start:
    # about 10 ms of every such command (docs/benchmarks.md).
    if name == "hookimpl":
        import pluggy

        marker = globals()["hookimpl"] = pluggy.HookimplMarker("livecam")
        return marker
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
