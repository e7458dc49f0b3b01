"""Whether a library still has the internals a transport uses (sftp: paramiko; smb:
smbprotocol).

Such a transport uses a few private names of its library, tested with the versions
its extra pins. An upgrade that moves any of them must fail in one line naming
what moved, in ``check-config`` and at connect, never as an AttributeError in
the middle of a publish: each transport lists its names in one ``Internals``.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Internals:
    """The private names of ``library`` that ``transport`` (in ``source``) uses.

    ``names`` maps a module to attribute paths in it (``"Class.method"`` too);
    ``pin`` is the requirement that keeps the versions tested (``"paramiko<6"``).
    """

    library: str
    transport: str
    pin: str
    source: str
    names: Mapping[str, tuple[str, ...]]

    def missing(self) -> list[str]:
        """The modules that do not import and the attribute paths not there, dotted."""
        gone = []
        for module, paths in self.names.items():
            try:
                mod = importlib.import_module(module)
            except ImportError:
                gone.append(module)
                continue
            gone += [f"{module}.{path}" for path in paths if not _has(mod, path)]
        return gone

    def problems(self) -> str:
        """'' when the library still has every name, else the line saying what moved."""
        return self.moved(self.missing())

    def moved(self, missing: Iterable[str]) -> str:
        """'' for nothing ``missing``, else one line naming it and the way out."""
        missing = list(missing)
        if not missing:
            return ""
        return (
            f"{self.library} changed internals that livecam's {self.transport} transport "
            f"uses ({', '.join(missing)}); pin {self.pin} (the versions tested) "
            f"or update {self.source}"
        )


def _has(owner: Any, path: str) -> bool:
    for part in path.split("."):
        owner = getattr(owner, part, None)
        if owner is None:
            return False
    return True
