"""Every hook livecam calls: the single contract between the core and its plugins.

Hooks are called with keyword arguments only. A plugin implements a hook by
defining a function of the same name decorated with ``livecam.hookimpl``; it may
accept any subset of the arguments.

Registration hooks run once, when the plugin manager loads, and fill the
name -> class registries that the YAML config selects from. Event hooks fire
while the appliance runs; they return nothing, and an exception in one is logged
and never stops recording or shipping.
"""

from __future__ import annotations

from collections.abc import Callable

import pluggy

from livecam.storage.segment import Segment
from livecam.storage.tiers import Tier

hookspec = pluggy.HookspecMarker("livecam")

Register = Callable[[str, type], None]


# --- registration -------------------------------------------------------------


@hookspec
def livecam_register_cameras(register: Register) -> None:
    """Register camera backends.

    Called once at start-up. Call ``register(name, cls)`` for each backend, where
    ``name`` is what ``cameras.<cam>.backend`` selects in YAML and ``cls`` is a
    subclass of ``livecam.camera.CameraBackend``. Registering a name twice is an
    error that names both plugins.
    """


@hookspec
def livecam_register_transports(register: Register) -> None:
    """Register transports.

    Called once at start-up. Call ``register(name, cls)`` for each transport, where
    ``name`` is what ``transport.plugin`` selects in YAML and ``cls`` is a subclass
    of ``livecam.transport.Transport``.
    """


@hookspec
def livecam_register_tiers(register: Register) -> None:
    """Register storage tier kinds.

    Called once at start-up. Call ``register(name, cls)`` with a subclass of
    ``livecam.storage.tiers.Tier``. The core registers ``buffer`` (RAM) and ``spool``
    (disk); ``buffer.kind`` and ``spool.kind`` in YAML select another class.
    """


# --- policy (first non-None result wins) ----------------------------------------


@hookspec(firstresult=True)
def livecam_choose_evictions(
    tier: Tier, segments: list[Segment], bytes_needed: int
) -> list[Segment] | None:
    """Choose which segments to evict from a full tier.

    Called by the shipper when ``tier`` (the spool, or the buffer when the spool
    cannot take more) must free at least ``bytes_needed`` bytes. ``segments`` are
    the tier's ready segments, oldest first. Return the segments to delete (the
    shipper deletes them in the order given, counts and logs each, and fires
    ``livecam_segment_evicted``), or None to leave the choice to the next plugin
    and finally to the default: oldest first. Stops at the first non-None result.
    If the chosen segments free too little, the shipper evicts oldest first for
    the rest.
    """


@hookspec(firstresult=True)
def livecam_remote_path(segment: Segment, node: str) -> str | None:
    """Choose where ``segment`` lands on the NAS.

    Called before each publish. Return a relative POSIX path (no leading ``/``,
    no ``..``) below the transport's ``path``, or None to use the ``remote_path``
    template of the config. Stops at the first non-None result. The answer must
    be the same every time for the same segment, or a retried publish could
    leave a duplicate.

    Loss records come here too (``segment.is_record``): ``segment.camera`` is
    their folder ``_losses`` and ``segment.name`` a ``.json`` name (a record an
    older livecam named ``.mp4`` comes renamed so).
    """


# --- events (return nothing) ----------------------------------------------------


@hookspec
def livecam_segment_closed(segment: Segment) -> None:
    """A camera closed ``segment``: it is complete and ready in the RAM buffer.

    Fires in the recorder process, after the atomic rename out of ``.open/``.
    """


@hookspec
def livecam_segment_spilled(segment: Segment) -> None:
    """``segment`` moved from the RAM buffer to the disk spool.

    Fires in the shipper after the spool copy is fsynced and the buffer copy
    removed; ``segment.path`` is the spool path.
    """


@hookspec
def livecam_segment_evicted(segment: Segment, tier: Tier, reason: str) -> None:
    """``segment`` was deleted unshipped to free room in ``tier``.

    Fires in the shipper after the delete. ``reason`` says which limit forced it
    (``max_bytes`` or ``min_free_bytes``). This is recorded data lost on purpose:
    it is also counted in status and logged.
    """


@hookspec
def livecam_segment_published(segment: Segment, remote: str, already_there: bool) -> None:
    """``segment`` is verified on the NAS at ``remote`` and its local copy is gone.

    Fires in the shipper. ``already_there`` is True when an earlier attempt had
    already completed (same size and digest found), so nothing was sent.
    A loss record fires it too (``segment.is_record``); status counts those
    apart from segments.
    """


@hookspec
def livecam_publish_failed(segment: Segment, error: Exception, permanent: bool) -> None:
    """An attempt to publish ``segment`` failed; the local copy is kept.

    Fires in the shipper once per failed attempt. ``permanent`` is True for
    errors that will not heal by themselves (auth refused, host key mismatch, no
    space, permission denied); those are retried slowly, the others with
    exponential backoff.
    """


@hookspec
def livecam_camera_failed(camera: str, error: Exception, restarts: int) -> None:
    """Camera ``camera`` failed or stalled and is being restarted.

    Fires in that camera's recorder process. ``restarts`` counts the restarts
    since the process started, this one included. Other cameras are not affected.
    """


def spec_names() -> list[str]:
    """Names of every hook in this module, in the order they are defined."""
    return [n for n in globals() if n.startswith("livecam_")]


def _kind(name: str) -> str:
    """A hook's kind, from its name and its decorator (declared nowhere else)."""
    if name.startswith("livecam_register_"):
        return "registration"
    return "policy" if globals()[name].livecam_spec.get("firstresult") else "event"


#: ``livecam_register_*``: fill the registries, once at start-up.
REGISTRATION_HOOKS = frozenset(n for n in spec_names() if _kind(n) == "registration")
#: ``firstresult``: the first plugin with an answer decides.
POLICY_HOOKS = frozenset(n for n in spec_names() if _kind(n) == "policy")
#: Everything else: notifications that return nothing.
EVENT_HOOKS = frozenset(n for n in spec_names() if _kind(n) == "event")


__all__ = [
    "EVENT_HOOKS",
    "POLICY_HOOKS",
    "REGISTRATION_HOOKS",
    "Register",
    "hookspec",
    "spec_names",
]
