"""``livecam status``: answered from the tiers and the state files alone.

It works while the daemons run and after they died: nothing here talks to a
running process.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from livecam.config import Config
from livecam.storage.files import read_json
from livecam.storage.layout import NodeDisk
from livecam.storage.segment import Segment, oldest_first
from livecam.storage.state import pid_alive
from livecam.storage.tiers import Tier


def gather(config: Config, disk: NodeDisk) -> dict[str, Any]:
    """Everything ``status`` shows, as plain data."""
    now = time.time()
    tiers = (disk.buffer, disk.spool)
    segments = {tier.role: tier.segments() for tier in tiers}
    cameras = {name: _camera(config, disk, name, segments, now) for name in config.cameras}
    ship = read_json(disk.shipper_state())
    shipper = _shipper(ship, disk.ledger(), segments, now)
    failed = [ship.get("spool_failed")] if shipper["state"] not in ("dead", "stopped") else []
    failed += [c["spool_failed"] for c in cameras.values()]
    return {
        "node": config.node,
        "site": config.site,
        "time": now,
        "cameras": cameras,
        "tiers": {tier.role: _tier(tier, segments[tier.role], now) for tier in tiers},
        "shipper": shipper,
        "spool_failed": next((f for f in failed if f), None),
    }


def _tier(tier: Tier, ready: list[Segment], now: float) -> dict[str, Any]:
    segs = [s for s in ready if not s.is_record]  # loss records are counted apart
    oldest = min((_mtime(s.path) for s in segs), default=None)
    return {
        "path": str(tier.path),
        "exists": tier.path.is_dir(),  # a tier that is not there holds nothing, ever
        "segments": len(segs),
        "records": len(ready) - len(segs),
        "bytes": sum(_size(s.path) for s in segs),
        "max_bytes": tier.max_bytes,
        "oldest_age": None if oldest is None else round(now - oldest, 1),
    }


def _camera(
    config: Config, disk: NodeDisk, name: str, segments: dict[str, list[Segment]], now: float
) -> dict[str, Any]:
    st = read_json(disk.recorder_state(name))
    mine = [s for t in segments.values() for s in t if s.camera == name]
    newest = max(mine, key=lambda s: s.seq, default=None)
    state = st.get("state", "never started")
    if st and state not in ("stopped",) and not pid_alive(st.get("pid")):
        state = "dead"
    last_closed = st.get("last_closed_at")
    return {
        "state": state,
        "backend": config.cameras[name].backend,
        # Not footage: a test picture the config asked for (None: a real camera).
        "test_pattern": config.cameras[name].test_pattern,
        "newest_segment": newest.name if newest else st.get("last_segment"),
        "last_closed_age": None if last_closed is None else round(now - last_closed, 1),
        "last_closed_at": last_closed,
        "started": st.get("started"),
        "segments": st.get("segments", 0),
        "restarts": st.get("restarts", 0),
        "dropped_frames": st.get("dropped_frames", 0),
        "bad_segments": st.get("bad_segments", 0),
        "salvaged": st.get("salvaged", 0),
        "clock_steps": st.get("clock_steps", 0),
        "last_clock_step": st.get("last_clock_step"),
        "spool_failed": st.get("spool_failed") if state != "dead" else None,
        "last_error": st.get("last_error"),
    }


def _shipper(
    ship: dict[str, Any],
    evictions: dict[str, Any],
    segments: dict[str, list[Segment]],
    now: float,
) -> dict[str, Any]:
    waiting = {s.name: s for t in segments.values() for s in t}.values()
    backlog = oldest_first(s for s in waiting if not s.is_record)
    oldest_backlog = min((_mtime(s.path) for s in backlog), default=None)
    state = ship.get("state", "never started")
    if ship and state != "stopped" and not pid_alive(ship.get("pid")):
        state = "dead"
    return {
        "state": state,
        "transport": ship.get("transport"),
        "backlog_segments": len(backlog),
        "backlog_bytes": sum(_size(s.path) for s in backlog),
        "backlog_records": len(waiting) - len(backlog),
        "lag": None if oldest_backlog is None else round(now - oldest_backlog, 1),
        "published": ship.get("published", 0),
        "published_bytes": ship.get("published_bytes", 0),
        "records_published": ship.get("records_published", 0),
        "failures_by_kind": ship.get("failures_by_kind", {}),
        "spilled": ship.get("spilled", 0),
        "last_success": _last_success(ship.get("last_success")),
        "last_error": ship.get("last_error"),
        "evictions": evictions.get("count", 0),
        "evicted_bytes": evictions.get("bytes", 0),
        "evicted_by": evictions.get("by_camera_tier", {}),
        "last_eviction": evictions.get("last"),
        "longest_housekeeping": ship.get("longest_housekeeping"),
    }


def _last_success(value: object) -> dict[str, Any] | None:
    """The shipper's last success; a lag written negative (by an older version) reads 0."""
    if not isinstance(value, dict):
        return None
    success: dict[str, Any] = dict(value)
    if isinstance(success.get("lag"), int | float) and success["lag"] < 0:
        success["lag"] = 0.0
    return success


#: Shipper states in which it runs; "alarm" runs too, but needs a person.
SHIPPER_RUNS = ("starting", "shipping", "retrying")


def problems(status: dict[str, Any]) -> list[str]:
    """What is down, failed or alarmed, one phrase each; [] when every camera records
    and the shipper runs without alarm (``livecam status`` then exits 0)."""
    found = [
        f"camera {name} {cam['state']}"
        for name, cam in status["cameras"].items()
        if cam["state"] != "recording"
    ]
    shipper = status["shipper"]
    if shipper["state"] == "alarm":
        error = (shipper.get("last_error") or {}).get("message", "")
        found.append(f"shipper alarm: {error}" if error else "shipper alarm")
    elif shipper["state"] not in SHIPPER_RUNS:
        found.append(f"shipper {shipper['state']}")
    if status["spool_failed"]:
        found.append("spool failed")
    found += [
        f"{role} directory {tier['path']} does not exist"
        for role, tier in status["tiers"].items()
        if not tier.get("exists", True)
    ]
    return found


def render(status: dict[str, Any]) -> str:
    """A few lines a person reads at a glance."""
    now = status["time"]
    lines = [f"node {status['node']} (site {status['site']})"]
    if status["spool_failed"]:
        lines.append(f"SPOOL FAILED, running RAM-only: {status['spool_failed']}")
    lines.append("cameras:")
    for name, cam in status["cameras"].items():
        fake = f"TEST PATTERN {cam['test_pattern']}, " if cam.get("test_pattern") else ""
        line = f"  {name:<8} {cam['state']:<12} {fake}newest {cam['newest_segment'] or '-'}"
        if cam["last_closed_age"] is not None:
            line += f" ({cam['last_closed_age']:.0f}s ago)"
        counters = ("restarts", "dropped_frames", "bad_segments", "salvaged", "clock_steps")
        extras = [f"{k.replace('_', ' ')} {cam[k]}" for k in counters if cam[k]]
        if extras:
            line += "; " + ", ".join(extras)
        lines.append(line)
        if cam["last_clock_step"]:
            step = cam["last_clock_step"]
            lines.append(
                f"           clock stepped {step['seconds']:+.0f}s {now - step['time']:.0f}s ago,"
                f" before {step['segment']}"
            )
        if cam["last_error"] and cam["state"] != "recording":
            lines.append(f"           last error: {cam['last_error']}")
    lines.append("tiers:")
    for role, t in status["tiers"].items():
        age = "-" if t["oldest_age"] is None else f"{t['oldest_age']:.0f}s"
        missing = "" if t.get("exists", True) else " (DOES NOT EXIST)"
        lines.append(
            f"  {role:<8} {t['segments']:>5} segments {_human(t['bytes']):>8} "
            f"of {_human(t['max_bytes'])}, oldest {age}   {t['path']}{missing}"
        )
    s = status["shipper"]
    lines.append(f"shipper:  {s['state']} via {s['transport'] or '-'}")
    lag = "-" if s["lag"] is None else f"{s['lag']:.0f}s"
    lines.append(
        f"  backlog {s['backlog_segments']} segments ({_human(s['backlog_bytes'])}), lag {lag}, "
        f"published {s['published']}, spilled {s['spilled']}" + _records(s)
    )
    if s["last_success"]:
        ok = s["last_success"]
        lines.append(
            f"  last success {now - ok['time']:.0f}s ago: {ok['segment']} -> {ok['remote']}"
        )
    if s["last_error"]:
        err = s["last_error"]
        kind = "PERMANENT " if err.get("permanent") else ""
        lines.append(f"  last {kind}error {now - err['time']:.0f}s ago: {err['message']}")
    if s["evictions"]:
        last = s["last_eviction"] or {}
        lines.append(
            f"  EVICTIONS {s['evictions']} ({_human(s['evicted_bytes'])} deleted unshipped), "
            f"last {last.get('segment')} from {last.get('tier')} ({last.get('reason')})"
        )
    found = problems(status)
    lines.append(f"NOT OK: {'; '.join(found)}" if found else "OK: every camera records, shipping")
    return "\n".join(lines)


def _records(shipper: dict[str, Any]) -> str:
    """The loss records the shipper published and those waiting (never counted as
    segments); "" when there are none."""
    published, waiting = shipper.get("records_published", 0), shipper.get("backlog_records", 0)
    if not (published or waiting):
        return ""
    return f"; loss records {published} published, {waiting} waiting"


def _human(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if abs(n) < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
