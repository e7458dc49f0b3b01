"""livecam: record camera segments into RAM, spill to disk, ship to a NAS, lose nothing."""

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin hook implementations: ``@livecam.hookimpl``.
hookimpl = pluggy.HookimplMarker("livecam")
