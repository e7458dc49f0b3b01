"""``livecam ship``: one process per node. Publishes ready segments, spills, evicts.

Two threads share the work and never wait on each other for long:

- the publisher takes the oldest ready segment of either tier, publishes it
  through the transport, and deletes the local copy only after the transport
  verified it; failures retry forever through tenacity (exponential backoff with
  full jitter for transient errors, a slow fixed pace for permanent ones);
- the housekeeper, in the main thread, touches only local storage: it spills
  buffer segments older than ``spill_after`` (or above the high-water mark) to the
  spool and evicts when a tier's limits force it. It never touches the network,
  so an outage or a hung mount cannot stop it.

A segment being worked on by one thread is claimed, and the other skips it.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception_type, wait_random_exponential

from livecam import tiers
from livecam.config import Config
from livecam.heartbeat import ShipperHeartbeat
from livecam.plugins import Plugins
from livecam.segment import Segment
from livecam.state import read_json, write_json
from livecam.tiers import Tier
from livecam.transport import (
    ConflictError,
    Item,
    PermanentError,
    PublishError,
    TransientError,
    Transport,
    conflict_path,
)

log = logging.getLogger("livecam.shipper")

POLL = 0.5  # seconds between housekeeping passes; part of the power-cut window
EVICT_WAIT = 2.0  # how long eviction waits for a segment that is being published


class Stopped(Exception):
    """The shipper is stopping; unwinds the retry loop."""


def remote_path(config: Config, plugins: Plugins, segment: Segment) -> str:
    """Where ``segment`` lands below the transport's path (a plugin may decide)."""
    chosen = plugins.remote_path(segment=segment, node=config.node)
    if chosen is None:
        start = segment.start
        chosen = config.remote_path.format(
            site=config.site,
            node=config.node,
            camera=segment.camera,
            date=f"{start:%Y-%m-%d}",
            hour=f"{start:%H}",
            time=f"{start:%H%M%S}",
            name=segment.name,
            seq=f"{segment.seq:06d}",
        )
    parts = chosen.split("/")
    if chosen.startswith("/") or ".." in parts or "" in parts:
        raise PermanentError(
            f"remote path {chosen!r} for {segment.name} is not a clean relative path"
        )
    return chosen


class Shipper:
    """Ships one node's segments until stopped; see the module doc."""

    def __init__(self, config: Config, plugins: Plugins, transport: Transport | None = None):
        self.config = config
        self.plugins = plugins
        self.buffer = tiers.build(config, plugins, "buffer")
        self.spool = tiers.build(config, plugins, "spool")
        for tier in (self.buffer, self.spool):
            tier.path.mkdir(parents=True, exist_ok=True)
        if transport is None:
            tcls = plugins.transports.get(config.transport_plugin, "transport.plugin")
            transport = tcls(config.transport, timeout=config.transport_timeout)
        self.transport = transport
        self.stopping = threading.Event()
        self._claims: set[str] = set()
        self._claims_changed = threading.Condition()
        self._conflicts: dict[str, str] = {}  # segment name -> conflict remote path
        self.state_file = self.buffer.state_dir / "shipper.json"
        self.evictions_file = self.spool.state_dir / "evictions.json"
        self.state: dict[str, Any] = {
            "pid": os.getpid(),
            "started": time.time(),
            "transport": transport.describe(),
            "state": "starting",
            "published": 0,
            "published_bytes": 0,
            "already_there": 0,
            "spilled": 0,
            "spilled_bytes": 0,
            "failures": 0,
            "last_success": None,
            "last_error": None,
        }
        self._dirty = True
        # systemd: READY once the transport is built and a housekeeping pass is done;
        # WATCHDOG while both loops turn (one attempt may take the timeout plus a retry wait).
        self.heartbeat = ShipperHeartbeat(
            config.transport_timeout + max(config.retry_max, config.retry_permanent) + 30
        )

    # --- claims ------------------------------------------------------------------------

    @contextmanager
    def claim(self, name: str, wait: float = 0.0) -> Iterator[bool]:
        """Hold ``name`` for this thread; yields False if the other thread kept it
        for longer than ``wait`` seconds."""
        with self._claims_changed:
            got = self._claims_changed.wait_for(lambda: name not in self._claims, timeout=wait)
            if got:
                self._claims.add(name)
        try:
            yield got
        finally:
            if got:
                with self._claims_changed:
                    self._claims.discard(name)
                    self._claims_changed.notify_all()

    # --- publishing --------------------------------------------------------------------

    def ready(self) -> list[Segment]:
        """Every ready segment, oldest first; a name in both tiers (a spill that
        crashed before deleting its source) appears once, at its spool path."""
        by_name = {s.name: s for s in self.buffer.segments()}
        by_name.update({s.name: s for s in self.spool.segments()})
        return sorted(by_name.values(), key=lambda s: s.sort_key)

    def publish_next(self) -> bool:
        """Publish the oldest ready segments. False when there is none (or stopping).

        One segment, or up to the transport's ``batch_size`` from the spool: a
        batch never holds a RAM segment beyond its first, so a slow batch cannot
        keep segments from spilling (the power-cut window stays as documented).
        """
        self.heartbeat.attempt()
        with ExitStack() as claims:
            batch: list[Segment] = []
            for segment in self.ready():
                if self.stopping.is_set():
                    return False
                if batch and (
                    len(batch) >= self.transport.batch_size or self.buffer.holds(segment)
                ):
                    break
                if claims.enter_context(self.claim(segment.name)) and segment.path.exists():
                    batch.append(segment)
            if not batch:
                return False
            self._publish(batch)
            return True

    def _publish(self, batch: list[Segment]) -> None:
        items: dict[Path, tuple[Segment, Item]] = {}
        for segment in batch:
            try:
                remote = self._conflicts.get(segment.name) or remote_path(
                    self.config, self.plugins, segment
                )
                item = Item(segment.path, remote, segment.size)
            except FileNotFoundError:
                continue  # evicted while we read it
            except PublishError as exc:
                self._failed(segment, exc)
                raise
            items[segment.path] = (segment, item)
        t0 = time.monotonic()
        try:
            for item, sent in self.transport.publish_batch([i for _, i in items.values()]):
                segment, _ = items.pop(item.local)
                self._published(segment, item, sent, time.monotonic() - t0)
        except ConflictError as exc:
            if not self._set_aside(exc, items):
                raise
        except PublishError as exc:
            self._failed(_first_unpublished(items, batch), exc)
            raise
        except Exception as exc:  # a bug in a transport plugin must not stop shipping
            log.exception("transport %s raised unexpectedly", self.config.transport_plugin)
            error = TransientError(f"{type(exc).__name__}: {exc}")
            self._failed(_first_unpublished(items, batch), error)
            raise error from exc

    def _set_aside(self, exc: ConflictError, items: dict[Path, tuple[Segment, Item]]) -> bool:
        """Publish a segment whose name holds other content on the NAS under a
        conflict name next time (at once, no backoff). False if that was tried."""
        for segment, item in items.values():
            if item.remote == exc.remote and segment.name not in self._conflicts:
                self._conflicts[segment.name] = conflict_path(item.remote, item.digest)
                self._failed(segment, exc)
                log.error(
                    "CONFLICT %s: %s; publishing it as %s",
                    segment.name,
                    exc,
                    self._conflicts[segment.name],
                )
                return True
        return False

    def _published(self, segment: Segment, item: Item, sent: bool, seconds: float) -> None:
        self._conflicts.pop(segment.name, None)
        # Verified on the NAS: only now may the local copies go.
        for tier in (self.buffer, self.spool):
            (tier.path / segment.camera / segment.name).unlink(missing_ok=True)
        lag = time.time() - segment.start.timestamp() - self.config.segment_seconds
        self.state.update(
            state="shipping",
            published=self.state["published"] + 1,
            published_bytes=self.state["published_bytes"] + item.size,
            already_there=self.state["already_there"] + (0 if sent else 1),
            last_success={
                "time": time.time(),
                "segment": segment.name,
                "remote": item.remote,
                "seconds": round(seconds, 3),
                "lag": round(lag, 1),
            },
        )
        self._dirty = True
        log.info(
            "published %s to %s (%d bytes%s)",
            segment.name,
            item.remote,
            item.size,
            "" if sent else ", already there",
        )
        self.plugins.segment_published(segment=segment, remote=item.remote, already_there=not sent)

    def _failed(self, segment: Segment, error: PublishError) -> None:
        kinds = self.state.setdefault("failures_by_kind", {})
        kind = _failure_kind(error)
        kinds[kind] = kinds.get(kind, 0) + 1
        self.state.update(
            state="alarm" if error.permanent else "retrying",
            failures=self.state["failures"] + 1,
            last_error={
                "time": time.time(),
                "segment": segment.name,
                "message": str(error),
                "permanent": error.permanent,
            },
        )
        self._dirty = True
        self.plugins.publish_failed(segment=segment, error=error, permanent=error.permanent)

    def _wait(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        error = outcome.exception() if outcome is not None else None
        if getattr(error, "permanent", False):
            return self.config.retry_permanent
        jitter = wait_random_exponential(
            multiplier=self.config.retry_initial, max=self.config.retry_max
        )
        return jitter(retry_state)

    def _sleep(self, seconds: float) -> None:
        if self.stopping.wait(seconds):
            raise Stopped

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        wait = retry_state.next_action.sleep if retry_state.next_action else 0
        kind = "PERMANENT" if getattr(error, "permanent", False) else "transient"
        log_fn = log.error if kind == "PERMANENT" else log.warning
        log_fn(
            "publish failed (%s): %s; retry %d in %.1fs",
            kind,
            error,
            retry_state.attempt_number,
            wait,
        )

    def publish_forever(self) -> None:
        """The publisher thread's body."""
        retrying = Retrying(
            retry=retry_if_exception_type(PublishError),
            wait=self._wait,
            sleep=self._sleep,
            before_sleep=self._before_sleep,
            reraise=True,
        )
        while not self.stopping.is_set():
            try:
                if not retrying(self.publish_next):
                    self.stopping.wait(POLL)
            except Stopped:
                break
            except PublishError:
                break  # only raised once stopping
        self.transport.close()

    # --- housekeeping (local storage only) ------------------------------------------------

    def housekeep(self) -> None:
        """Spill what is due, evict what limits force. Never touches the network."""
        now = time.time()
        for segment in self.buffer.segments():
            if self.stopping.is_set():
                return
            try:
                age = now - segment.path.stat().st_mtime
            except FileNotFoundError:
                continue
            if age < self.config.spill_after and not self.buffer.above_high_water():
                break  # the rest is younger still
            self._spill_unclaimed(segment)
        need, reason = self.buffer.bytes_to_free()
        if need > 0:
            self.evict(self.buffer, need, reason)

    def spill_all(self) -> None:
        """On a clean stop, move what is left in RAM to disk: a reboot may follow."""
        for segment in self.buffer.segments():
            self._spill_unclaimed(segment)

    def _spill_unclaimed(self, segment: Segment) -> None:
        """Spill ``segment`` unless the publisher holds it or it is gone already."""
        with self.claim(segment.name) as mine:
            if mine and segment.path.exists():
                self.spill(segment)

    def spill(self, segment: Segment) -> bool:
        """Move one segment from RAM to the spool durably. False if the spool has no room."""
        size = segment.size
        need, reason = self.spool.bytes_to_free(incoming=size)
        if need > 0 and not self.evict(self.spool, need, reason):
            return False
        try:
            copy = self.spool.accept(segment)
        except OSError as exc:
            log.error("cannot spill %s to %s: %s", segment.name, self.spool.path, exc)
            if exc.errno == errno.ENOSPC:
                self.evict(self.spool, size, "min_free_bytes")
            return False
        segment.path.unlink(missing_ok=True)
        self.state["spilled"] += 1
        self.state["spilled_bytes"] += size
        self._dirty = True
        log.info("spilled %s to spool (%d bytes)", segment.name, size)
        self.plugins.segment_spilled(segment=copy)
        return True

    def evict(self, tier: Tier, bytes_needed: int, reason: str) -> bool:
        """Delete segments from ``tier`` until ``bytes_needed`` are free. True if enough."""
        candidates = tier.segments()
        chosen = self.plugins.choose_evictions(
            tier=tier, segments=list(candidates), bytes_needed=bytes_needed
        )
        order = list(chosen or []) + [s for s in candidates if s not in (chosen or [])]
        freed = 0
        for segment in order:
            if freed >= bytes_needed:
                break
            # The oldest is often the one being published; a failing attempt ends
            # quickly, so wait a little to keep the order strictly oldest first.
            with self.claim(segment.name, wait=EVICT_WAIT) as mine:
                if not mine:
                    continue
                try:
                    size = segment.size
                    segment.path.unlink()
                except FileNotFoundError:
                    continue
            freed += size
            self._count_eviction(segment, tier, reason, size)
        return freed >= bytes_needed

    def _count_eviction(self, segment: Segment, tier: Tier, reason: str, size: int) -> None:
        record = read_json(self.evictions_file)
        record["count"] = record.get("count", 0) + 1
        record["bytes"] = record.get("bytes", 0) + size
        by_place = record.setdefault("by_camera_tier", {})  # for livecam_evicted_segments_total
        key = f"{segment.camera}/{tier.role}"
        by_place[key] = by_place.get(key, 0) + 1
        record["last"] = {"segment": segment.name, "tier": tier.role, "reason": reason,
                          "time": time.time()}  # fmt: skip
        write_json(self.evictions_file, record, durable=True)
        log.warning(
            "EVICTED %s from %s (%s limit): %d bytes of recording deleted unshipped (%d so far)",
            segment.name,
            tier.role,
            reason,
            size,
            record["count"],
        )
        self.plugins.segment_evicted(segment=segment, tier=tier, reason=reason)

    # --- the process ---------------------------------------------------------------------

    def run(self) -> int:
        """Ship until SIGTERM/SIGINT. Returns the process exit code."""
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        self.spool.discard_partials()
        log.info(
            "shipping from %s and %s via %s", self.buffer.path, self.spool.path,
            self.transport.describe(),
        )  # fmt: skip
        publisher = threading.Thread(target=self.publish_forever, name="publisher", daemon=True)
        publisher.start()
        last_save = 0.0
        while not self.stopping.is_set():
            try:
                self.housekeep()
            except OSError as exc:
                log.error("housekeeping failed: %s", exc)
            else:
                self.heartbeat.beat(self.state)
            if self._dirty or time.monotonic() - last_save > 5:
                self.save_state()
                last_save = time.monotonic()
            self.stopping.wait(POLL)
        # An attempt in flight is bounded by the transport timeout; don't wait that long.
        publisher.join(timeout=5)
        self.spill_all()
        self.state["state"] = "stopped"
        self.save_state()
        log.info("shipper stopped")
        return 0

    def save_state(self) -> None:
        self._dirty = False
        try:
            write_json(self.state_file, self.state)
        except OSError as exc:
            log.warning("cannot write shipper state: %s", exc)


def _first_unpublished(items: dict[Path, tuple[Segment, Item]], batch: list[Segment]) -> Segment:
    """The segment a failed batch is reported against: the first one not yet verified."""
    return next(iter(items.values()))[0] if items else batch[0]


def _failure_kind(error: PublishError) -> str:
    """The ``kind`` label of livecam_publish_failures_total."""
    if isinstance(error, ConflictError):
        return "conflict"
    return "permanent" if error.permanent else "transient"
