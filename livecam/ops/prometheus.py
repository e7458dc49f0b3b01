"""``livecam status`` as Prometheus metrics (text exposition format 0.0.4).

One source of truth: :func:`render` turns the dict ``livecam.ops.status.gather``
returns into metrics, so the numbers an operator sees in ``livecam status`` are
the numbers Prometheus alerts on. The dict is read key by key with defaults, so
a status from an older or newer livecam renders what it has.

Names follow Prometheus' guide: a ``livecam_`` prefix, base units (seconds,
bytes), ``_total`` on counters, labels ``camera``, ``tier`` and ``kind``.

Timestamps, not flags, carry health: ``livecam_last_segment_timestamp_seconds``
and ``livecam_status_timestamp_seconds`` are absolute times, so a metrics file
that stopped being refreshed still makes ``time() - ...`` grow, and the alerts
fire; a frozen "up" value alone could not do that.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FAILURE_KINDS = ("transient", "permanent", "conflict")
TIERS = ("buffer", "spool")
#: Shipper states in which its process is alive (``status`` says "dead" otherwise).
SHIPPER_ALIVE = ("starting", "shipping", "retrying", "alarm")


@dataclass
class Family:
    """One metric family: its samples as (labels, value)."""

    name: str
    kind: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)

    def add(self, value: Any, **labels: str) -> None:
        if isinstance(value, bool):
            value = int(value)
        if isinstance(value, int | float):
            self.samples.append((labels, float(value)))


FamilyOf = Callable[[str, str, str], Family]


def families(status: Mapping[str, Any], *, segment_seconds: float, version: str) -> list[Family]:
    """The metric families of one ``status`` dict, in a stable order."""
    out: dict[str, Family] = {}

    def fam(name: str, kind: str, text: str) -> Family:
        return out.setdefault(name, Family(name, kind, text))

    shipper = _dict(status.get("shipper"))
    fam("livecam_info", "gauge", "livecam on this node; always 1, the facts are in the labels").add(
        1,
        version=version,
        node=str(status.get("node", "")),
        site=str(status.get("site", "")),
        transport=str(shipper.get("transport") or ""),
    )
    fam("livecam_segment_seconds", "gauge", "Configured segment length").add(segment_seconds)
    fam(
        "livecam_status_timestamp_seconds", "gauge", "When this status was gathered (Unix time)"
    ).add(status.get("time"))
    fam(
        "livecam_spool_failed",
        "gauge",
        "1 while the disk spool has failed (read-only, full or gone) and the node runs RAM-only",
    ).add(bool(status.get("spool_failed")))

    _cameras(fam, _dict(status.get("cameras")))
    _tiers(fam, _dict(status.get("tiers")))
    _shipper(fam, shipper, cameras=list(_dict(status.get("cameras"))))
    return list(out.values())


def _cameras(fam: FamilyOf, cameras: Mapping[str, Any]) -> None:
    up = fam("livecam_camera_up", "gauge", "1 while the camera's recorder runs and records")
    closed = fam(
        "livecam_segments_closed_total",
        "counter",
        "Segments the camera's recorder closed since it started",
    )
    last = fam(
        "livecam_last_segment_timestamp_seconds",
        "gauge",
        "When the camera last closed a segment (Unix time); its recorder's start if none yet",
    )
    dropped = fam("livecam_dropped_frames_total", "counter", "Frames the camera dropped")
    restarts = fam(
        "livecam_camera_restarts_total", "counter", "Times the recorder restarted its camera"
    )
    bad = fam("livecam_bad_segments_total", "counter", "Unusable segment files discarded")
    salvaged = fam(
        "livecam_salvaged_segments_total", "counter", "Unfinished segments kept after a crash"
    )
    steps = fam(
        "livecam_clock_steps_total",
        "counter",
        "Times the wall clock stepped between two of the camera's segments",
    )
    for name, raw in cameras.items():
        cam = _dict(raw)
        up.add(cam.get("state") == "recording", camera=name)
        closed.add(cam.get("segments", 0), camera=name)
        stamp = cam.get("last_closed_at")
        last.add(stamp if stamp is not None else cam.get("started"), camera=name)
        dropped.add(cam.get("dropped_frames", 0), camera=name)
        restarts.add(cam.get("restarts", 0), camera=name)
        bad.add(cam.get("bad_segments", 0), camera=name)
        salvaged.add(cam.get("salvaged", 0), camera=name)
        steps.add(cam.get("clock_steps", 0), camera=name)


def _tiers(fam: FamilyOf, tiers: Mapping[str, Any]) -> None:
    size = fam("livecam_tier_bytes", "gauge", "Bytes of ready segments in the tier")
    limit = fam("livecam_tier_max_bytes", "gauge", "The tier's configured limit")
    count = fam("livecam_tier_segments", "gauge", "Ready segments in the tier")
    oldest = fam(
        "livecam_tier_oldest_age_seconds", "gauge", "Age of the tier's oldest segment; 0 if empty"
    )
    for role, raw in tiers.items():
        tier = _dict(raw)
        size.add(tier.get("bytes", 0), tier=role)
        limit.add(tier.get("max_bytes"), tier=role)
        count.add(tier.get("segments", 0), tier=role)
        oldest.add(tier.get("oldest_age") or 0, tier=role)


def _shipper(fam: FamilyOf, ship: Mapping[str, Any], *, cameras: list[str]) -> None:
    state = ship.get("state")
    fam("livecam_shipper_up", "gauge", "1 while the shipper process runs").add(
        state in SHIPPER_ALIVE
    )
    error = _dict(ship.get("last_error"))
    fam(
        "livecam_shipper_alarm",
        "gauge",
        "1 while the shipper's last error is permanent (needs a person)",
    ).add(state == "alarm" and bool(error.get("permanent")))
    fam("livecam_shipper_lag_seconds", "gauge", "Age of the oldest segment not yet published").add(
        ship.get("lag") or 0
    )
    fam("livecam_shipper_backlog_segments", "gauge", "Segments waiting to be published").add(
        ship.get("backlog_segments", 0)
    )
    fam("livecam_shipper_backlog_bytes", "gauge", "Bytes waiting to be published").add(
        ship.get("backlog_bytes", 0)
    )
    fam(
        "livecam_published_segments_total",
        "counter",
        "Segments published since the shipper started",
    ).add(ship.get("published", 0))
    fam(
        "livecam_published_bytes_total", "counter", "Bytes published since the shipper started"
    ).add(ship.get("published_bytes", 0))
    fam("livecam_spilled_segments_total", "counter", "Segments spilled from RAM to the spool").add(
        ship.get("spilled", 0)
    )
    _records(fam, ship)
    failures = fam(
        "livecam_publish_failures_total",
        "counter",
        "Failed publish attempts since the shipper started, by kind",
    )
    by_kind = _dict(ship.get("failures_by_kind"))
    for kind in FAILURE_KINDS:
        failures.add(by_kind.get(kind, 0), kind=kind)
    success = _dict(ship.get("last_success"))
    fam(
        "livecam_shipper_last_success_timestamp_seconds",
        "gauge",
        "When the shipper last published a segment (Unix time)",
    ).add(success.get("time"))
    evicted = fam(
        "livecam_evicted_segments_total",
        "counter",
        "Segments deleted unshipped because a tier's limit forced it (recordings lost)",
    )
    by_place = _dict(ship.get("evicted_by"))
    for camera in sorted({key.partition("/")[0] for key in by_place} | set(cameras)):
        for tier in TIERS:
            evicted.add(by_place.get(f"{camera}/{tier}", 0), camera=camera, tier=tier)
    fam("livecam_evicted_bytes_total", "counter", "Bytes of recordings evicted unshipped").add(
        ship.get("evicted_bytes", 0)
    )


def _records(fam: FamilyOf, ship: Mapping[str, Any]) -> None:
    """Loss records: counted on their own, never as segments (docs/nas.md)."""
    fam(
        "livecam_loss_records_published_total",
        "counter",
        "Loss records published since the shipper started (never counted as segments)",
    ).add(ship.get("records_published", 0))
    fam(
        "livecam_shipper_backlog_loss_records", "gauge", "Loss records waiting to be published"
    ).add(ship.get("backlog_records", 0))


def render(status: Mapping[str, Any], *, segment_seconds: float, version: str) -> str:
    """The text exposition of ``status``."""
    return exposition(families(status, segment_seconds=segment_seconds, version=version))


def exposition(fams: Iterable[Family]) -> str:
    lines: list[str] = []
    for f in fams:
        if not f.samples:
            continue  # promtool: no HELP/TYPE without a sample
        lines.append(f"# HELP {f.name} {_escape(f.help, quote=False)}")
        lines.append(f"# TYPE {f.name} {f.kind}")
        for labels, value in f.samples:
            text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(
                f"{f.name}{{{text}}} {_number(value)}" if text else f"{f.name} {_number(value)}"
            )
    return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)


def _escape(text: str, *, quote: bool = True) -> str:
    text = text.replace("\\", "\\\\").replace("\n", "\\n")
    return text.replace('"', '\\"') if quote else text


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}
