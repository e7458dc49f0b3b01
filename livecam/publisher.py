"""The publisher: takes the oldest ready segments and publishes them through the transport.

It deletes a local copy only after the transport verified it on the NAS, each
as soon as it is verified (a batch reports its items one by one). A segment
whose name holds other content on the NAS is set aside under a conflict name;
every other failure is raised for the retry policy (``livecam.retry``).

A batch's segments are lent to eviction (``livecam.claims``): one not yet
started is withdrawn and never sent; one in a call in flight (rsync) may lose
its file at once, and is settled when the call reports (``livecam.evictions``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path

from livecam.claims import Claims, Lender
from livecam.config import Config
from livecam.plugins import Plugins
from livecam.segment import Segment, oldest_first
from livecam.state import LastError, LastSuccess, ShipperState, StateFile
from livecam.tiers import Tier
from livecam.transport import (
    ConflictError,
    Hold,
    Item,
    PermanentError,
    PublishError,
    TransientError,
    Transport,
    conflict_path,
)

log = logging.getLogger("livecam.shipper")

Pending = dict[Path, tuple[Segment, Item]]


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


class Publisher:
    """Publishes ready segments of both tiers, oldest first; see the module doc."""

    def __init__(
        self,
        config: Config,
        plugins: Plugins,
        transport: Transport,
        *,
        buffer: Tier,
        spool: Tier,
        claims: Claims,
        state: StateFile[ShipperState],
        stopping: threading.Event,
        progress: Callable[[], None] = lambda: None,
    ):
        self.config = config
        self.plugins = plugins
        self.transport = transport
        self.buffer = buffer
        self.spool = spool
        self.claims = claims
        self.state = state
        self.stopping = stopping
        self.progress = progress  # told of each segment published (the watchdog)
        self._conflicts: dict[str, str] = {}  # segment name -> conflict remote path
        self._undeletable: set[str] = set()  # published, but a failed spool keeps a copy

    def ready(self) -> list[Segment]:
        """Every ready segment, oldest first; a name in both tiers (a spill that
        crashed before deleting its source) appears once, at its spool path."""
        by_name = {s.name: s for s in self.buffer.segments()}
        by_name.update({s.name: s for s in self.spool.segments()})
        return oldest_first(s for s in by_name.values() if s.name not in self._undeletable)

    def publish_next(self) -> bool:
        """Publish the oldest ready segments. False when there is none (or stopping).

        One segment, or up to the transport's ``batch_size`` (and ``batch_limit``
        bytes) from the spool: a batch never holds a RAM segment beyond its first,
        so a slow batch cannot keep segments from spilling (the power-cut window
        stays as documented).
        """
        limit = self.transport.batch_limit()
        holds: dict[Path, Hold] = {}  # each claimed segment's place in the batch
        settles: dict[Path, Callable[[bool], None]] = {}  # taken from a call in flight
        proven: set[Path] = set()
        try:
            with ExitStack() as held:
                batch: list[Segment] = []
                size = 0
                for segment in self.ready():
                    if self.stopping.is_set():
                        return False
                    if batch and (
                        len(batch) >= self.transport.batch_size
                        or self.buffer.holds(segment)
                        or (limit is not None and size + _size(segment) > limit)
                    ):
                        break
                    hold = holds[segment.path] = Hold()
                    lender = self._lender(segment.path, hold, settles)
                    mine = held.enter_context(self.claims.claim(segment.name, lender=lender))
                    if mine and segment.path.exists():
                        batch.append(segment)
                        size += _size(segment)
                if not batch:
                    return False
                self._publish(batch, holds, proven)
                return True
        finally:
            # The claims are released: nothing more is taken. A segment taken from
            # a call in flight is lost unless that call proved it.
            for path, settle in settles.items():
                settle(path not in proven)

    def _lender(
        self, path: Path, hold: Hold, settles: dict[Path, Callable[[bool], None]]
    ) -> Lender:
        """How eviction takes the segment at ``path`` from this batch (``Claims.take``)."""

        def take(wanted: Path, settle: Callable[[bool], None]) -> str | None:
            if wanted != path:
                return None  # the other tier's copy of the same segment
            how = hold.take(self.transport.takes_started)
            if how == "started":
                settles[path] = settle
            return how

        return take

    def _publish(self, batch: list[Segment], holds: dict[Path, Hold], proven: set[Path]) -> None:
        items: Pending = {}
        for segment in batch:
            try:
                remote = self._conflicts.get(segment.name) or remote_path(
                    self.config, self.plugins, segment
                )
                item = Item(segment.path, remote, segment.size, hold=holds[segment.path])
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
                proven.add(item.local)
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

    def _set_aside(self, exc: ConflictError, items: Pending) -> bool:
        """Publish a segment whose name holds other content on the NAS under a
        conflict name next time (at once, no backoff). False if that was tried."""
        for segment, item in items.values():
            if item.remote == exc.remote and segment.name not in self._conflicts:
                aside = conflict_path(item.remote, item.digest)
                self._conflicts[segment.name] = aside
                self._failed(segment, exc)
                log.error("CONFLICT %s: %s; publishing it as %s", segment.name, exc, aside)
                return True
        return False

    def _published(self, segment: Segment, item: Item, sent: bool, seconds: float) -> None:
        self.progress()
        self._conflicts.pop(segment.name, None)
        # Verified on the NAS: only now may the local copies go.
        for tier in (self.buffer, self.spool):
            copy = tier.path / segment.camera / segment.name
            try:
                copy.unlink(missing_ok=True)
            except OSError as exc:
                # A read-only spool refuses even to delete a name it does not hold (a
                # segment that only ever sat in RAM): nothing is left there to say.
                if _absent(copy):
                    continue
                # A copy stays behind: never ship it again. The spool's failure itself
                # is the housekeeper's alarm (SPOOL FAILED); the data is safe on the NAS.
                self._undeletable.add(segment.name)
                log.warning(
                    "published %s but cannot delete it from %s: %s", segment.name, tier.role, exc
                )
        now = time.time()
        # A segment can close a little early (its real length is not known here)
        # and clocks step: the lag is a delay, never below zero.
        lag = max(0.0, now - segment.start.timestamp() - self.config.segment_seconds)
        with self.state.edit() as st:
            st.state = "shipping"
            st.published += 1
            st.published_bytes += item.size
            st.already_there += 0 if sent else 1
            st.last_success = LastSuccess(
                now, segment.name, item.remote, round(seconds, 3), round(lag, 1)
            )
        log.info(
            "published %s to %s (%d bytes%s)",
            segment.name,
            item.remote,
            item.size,
            "" if sent else ", already there",
        )
        self.plugins.segment_published(segment=segment, remote=item.remote, already_there=not sent)

    def _failed(self, segment: Segment, error: PublishError) -> None:
        with self.state.edit() as st:
            st.state = "alarm" if error.permanent else "retrying"
            st.failures += 1
            kind = failure_kind(error)
            st.failures_by_kind[kind] = st.failures_by_kind.get(kind, 0) + 1
            st.last_error = LastError(time.time(), segment.name, str(error), error.permanent)
        self.plugins.publish_failed(segment=segment, error=error, permanent=error.permanent)


def _size(segment: Segment) -> int:
    """``segment``'s bytes; 0 if it was evicted meanwhile (``_publish`` skips it)."""
    try:
        return segment.size
    except FileNotFoundError:
        return 0


def _absent(path: Path) -> bool:
    """True only if ``path`` is known not to exist (an I/O error says nothing)."""
    try:
        path.lstat()
    except FileNotFoundError:
        return True
    except OSError:
        return False
    return False


def _first_unpublished(items: Pending, batch: list[Segment]) -> Segment:
    """The segment a failed batch is reported against: the first one not yet verified
    (and not taken by eviction)."""
    left = [s for s, i in items.values() if not i.hold.taken]
    return left[0] if left else batch[0]


def failure_kind(error: PublishError) -> str:
    """The ``kind`` label of livecam_publish_failures_total."""
    if isinstance(error, ConflictError):
        return "conflict"
    return "permanent" if error.permanent else "transient"
