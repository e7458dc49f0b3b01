"""The publisher: takes the oldest ready segments and publishes them through the transport.

It deletes a local copy only after the transport verified it on the NAS, each
as soon as it is verified (a batch reports its items one by one). A segment
whose name holds other content on the NAS is set aside under a conflict name;
every other failure is raised for the retry policy (``livecam.shipper.retry``).

A batch's segments are lent to eviction (``livecam.shipper.handoff``): one not yet
started is withdrawn and never sent; one in a call in flight (rsync) may lose
its file at once, and is settled when the call reports (``livecam.shipper.evictions``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from livecam.config import Config
from livecam.pluginhost.manager import Plugins
from livecam.shipper.handoff import Batch, Handoff, Lent
from livecam.storage.layout import NodeDisk
from livecam.storage.segment import Segment, oldest_first
from livecam.storage.state import LastError, LastSuccess, ShipperState, StateFile
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

Pending = dict[Path, tuple[Segment, Item]]


def remote_path(config: Config, plugins: Plugins, segment: Segment) -> str:
    """Where ``segment`` lands below the transport's path (a plugin may decide).

    A loss record lands as one of the folder ``_losses`` (``{camera}``), under its
    ``.json`` name, even one a node wrote before issue 22 (``Segment.as_published``)."""
    segment = segment.as_published()
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
        disk: NodeDisk,
        handoff: Handoff,
        state: StateFile[ShipperState],
        stopping: threading.Event,
        progress: Callable[[], None] = lambda: None,
    ):
        self.config = config
        self.plugins = plugins
        self.transport = transport
        self.buffer, self.spool = disk.buffer, disk.spool
        self.handoff = handoff
        self.state = state
        self.stopping = stopping
        self.progress = progress  # told of each segment published (the watchdog)
        self._conflicts: dict[str, str] = {}  # segment name -> conflict remote path
        self._undeletable: set[str] = set()  # published, but a failed spool keeps a copy
        # A clean stop (livecam.shipper.stop): only what RAM holds, and loss records.
        self.draining = False

    def ready(self) -> list[Segment]:
        """Every ready segment, oldest first; a name in both tiers (a spill that
        crashed before deleting its source) appears once, at its spool path. While
        ``draining``, the spool's segments are left for the next start."""
        by_name = {s.name: s for s in self.buffer.segments()}
        by_name.update({s.name: s for s in self.spool.segments()})
        return oldest_first(
            s
            for s in by_name.values()
            if s.name not in self._undeletable
            and (not self.draining or s.is_record or self.buffer.holds(s))
        )

    def publish_next(self) -> bool:
        """Publish the oldest ready segments. False when there is none (or stopping).

        One segment, or up to the transport's ``batch_size`` (and ``batch_limit``
        bytes) from the spool: a batch never holds a RAM segment beyond its first,
        so a slow batch cannot keep segments from spilling (the power-cut window
        stays as documented).
        """
        limit = self.transport.batch_limit()
        with self.handoff.batch() as lent:
            batch: list[tuple[Segment, Lent]] = []
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
                hold = lent.lend(segment)
                if hold is not None and segment.path.exists():
                    batch.append((segment, hold))
                    size += _size(segment)
            if not batch:
                return False
            self._publish(batch, lent)
            return True

    def _publish(self, batch: list[tuple[Segment, Lent]], lent: Batch) -> None:
        items: Pending = {}
        for segment, hold in batch:
            try:
                remote = self._conflicts.get(segment.name) or remote_path(
                    self.config, self.plugins, segment
                )
                item = Item(segment.path, remote, segment.size, hold=hold)
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
                lent.proven(item.local)
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
        self._count(segment, item, sent, seconds)
        log.info(
            "published %s%s to %s (%d bytes%s)",
            "loss record " if segment.is_record else "",
            segment.name,
            item.remote,
            item.size,
            "" if sent else ", already there",
        )
        self.plugins.segment_published(segment=segment, remote=item.remote, already_there=not sent)

    def _count(self, segment: Segment, item: Item, sent: bool, seconds: float) -> None:
        """Count a publish in the state: a loss record on its own counter, never as a
        segment, its bytes or the last success (it says nothing of the recordings)."""
        now = time.time()
        # A segment can close a little early (its real length is not known here)
        # and clocks step: the lag is a delay, never below zero.
        lag = max(0.0, now - segment.start.timestamp() - self.config.segment_seconds)
        with self.state.edit() as st:
            st.state = "shipping"
            # What the transport learnt by connecting (s3: whether the store honours
            # conditional writes) shows in status from the first publish on.
            st.transport = self.transport.describe()
            if segment.is_record:
                st.records_published += 1
                return
            st.published += 1
            st.published_bytes += item.size
            st.already_there += 0 if sent else 1
            st.last_success = LastSuccess(
                now, segment.name, item.remote, round(seconds, 3), round(lag, 1)
            )

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


def _first_unpublished(items: Pending, batch: list[tuple[Segment, Lent]]) -> Segment:
    """The segment a failed batch is reported against: the first one not yet verified
    (and not taken by eviction)."""
    left = [s for s, i in items.values() if not i.hold.taken]
    return left[0] if left else batch[0][0]


def failure_kind(error: PublishError) -> str:
    """The ``kind`` label of livecam_publish_failures_total."""
    if isinstance(error, ConflictError):
        return "conflict"
    return "permanent" if error.permanent else "transient"
