"""``livecam ship``: one process per node. Publishes ready segments, spills, evicts.

Two threads share the work and never wait on each other for long:

- the publisher (``livecam.publisher``) takes the oldest ready segment of either
  tier, publishes it through the transport, and deletes the local copy only after
  the transport verified it; failures retry forever (``livecam.retry``);
- the housekeeper (``livecam.housekeeper``), in the main thread, touches only
  local storage: it spills buffer segments older than ``spill_after`` (or above
  the high-water mark) to the spool and evicts (``livecam.evictions``) when a
  tier's limits force it. It never touches the network, so an outage or a hung
  mount cannot stop it.

A segment being worked on by one thread is claimed (``livecam.claims``); eviction
takes one the publisher's transport can let go and skips the rest, and a spill
of one copies it without taking it from the publisher, so neither thread ever
waits for the other. The main thread is the
only writer of ``shipper.json``.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

from livecam import build
from livecam.claims import Claims
from livecam.config import Config
from livecam.evictions import Evictor, Ledger
from livecam.heartbeat import ShipperHeartbeat
from livecam.housekeeper import Housekeeper
from livecam.losses import LossWriter
from livecam.plugins import Plugins
from livecam.publisher import Publisher, remote_path
from livecam.retry import RetryPolicy, Stopped
from livecam.segment import Segment
from livecam.state import ShipperState, StateFile
from livecam.tiers import Tier
from livecam.transport import PublishError, Transport

__all__ = ["Shipper", "remote_path"]

log = logging.getLogger("livecam.shipper")

POLL = 0.5  # seconds between housekeeping passes; part of the power-cut window
SAVE_EVERY = 5.0  # seconds between state saves when nothing changed


class Shipper:
    """Ships one node's segments until stopped; see the module doc."""

    def __init__(self, config: Config, plugins: Plugins, transport: Transport | None = None):
        self.config = config
        self.buffer = build.tier(config, plugins, "buffer")
        self.spool = build.tier(config, plugins, "spool")
        self.buffer.path.mkdir(parents=True, exist_ok=True)
        try:
            self.spool.path.mkdir(exist_ok=True)  # not parents: never on a vanished mount's disk
        except OSError as exc:  # the housekeeper reports it and runs RAM-only
            log.error("cannot create the spool %s: %s", self.spool.path, exc)
        self.transport = transport or build.transport(config, plugins)
        self.stopping = threading.Event()
        self.state_file = StateFile(
            self.buffer.state_dir / "shipper.json",
            ShipperState(pid=os.getpid(), started=time.time(), transport=self.transport.describe()),
        )
        claims = Claims()
        self.retry = RetryPolicy(
            initial=config.retry_initial,
            maximum=config.retry_max,
            permanent=config.retry_permanent,
            stopping=self.stopping,
            probe=self.transport.reachable,
        )
        # systemd: READY once the transport is built and a housekeeping pass is done;
        # WATCHDOG while both loops turn (one segment may take the timeout plus a retry wait).
        self.heartbeat = ShipperHeartbeat(
            config.transport_timeout + max(config.retry_max, config.retry_permanent) + 30
        )
        self.publisher = Publisher(
            config,
            plugins,
            self.transport,
            buffer=self.buffer,
            spool=self.spool,
            claims=claims,
            state=self.state_file,
            stopping=self.stopping,
            progress=self.heartbeat.attempt,
        )
        self.evictor = Evictor(
            plugins,
            claims,
            Ledger(
                self.spool.state_dir / "evictions.json", self.buffer.state_dir / "evictions.json"
            ),
            LossWriter(self.spool.path, config.site, config.node, self.buffer.path),
        )
        self.housekeeper = Housekeeper(
            plugins,
            buffer=self.buffer,
            spool=self.spool,
            spill_after=config.spill_after,
            claims=claims,
            evictor=self.evictor,
            state=self.state_file,
            stopping=self.stopping,
        )

    @property
    def state(self) -> ShipperState:
        """The shipper's live state (what ``shipper.json`` holds)."""
        return self.state_file.current

    # --- the parts, for callers that drive one step at a time -----------------------------

    def ready(self) -> list[Segment]:
        return self.publisher.ready()

    def publish_next(self) -> bool:
        return self.publisher.publish_next()

    def housekeep(self) -> None:
        self.housekeeper.housekeep()

    def evict(self, tier: Tier, bytes_needed: int, reason: str) -> bool:
        return self.evictor.evict(tier, bytes_needed, reason)

    # --- the process ---------------------------------------------------------------------

    def _attempt(self) -> bool:
        self.heartbeat.attempt()
        return self.publisher.publish_next()

    def publish_forever(self) -> None:
        """The publisher thread's body."""
        try:
            self.retry.start_jitter()
        except Stopped:
            self.transport.close()
            return
        while not self.stopping.is_set():
            try:
                if not self.retry.call(self._attempt):
                    self.stopping.wait(POLL)
            except Stopped:
                break
            except PublishError:
                break  # only raised once stopping
        self.transport.close()

    def run(self) -> int:
        """Ship until SIGTERM/SIGINT. Returns the process exit code."""
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
        self.spool.discard_partials()
        for tier in (self.buffer, self.spool):
            self.evictor.finish_interrupted(tier)
        log.info(
            "shipping from %s and %s via %s",
            self.buffer.path,
            self.spool.path,
            self.transport.describe(),
        )
        publisher = threading.Thread(target=self.publish_forever, name="publisher", daemon=True)
        publisher.start()
        last_save = 0.0
        while not self.stopping.is_set():
            try:
                self.housekeeper.housekeep()
            except OSError as exc:
                log.error("housekeeping failed: %s", exc)
            else:
                self.heartbeat.beat(self.state_file.snapshot())
            overdue = time.monotonic() - last_save > SAVE_EVERY
            self._save(force=overdue)
            if overdue:
                last_save = time.monotonic()
            self.stopping.wait(POLL)
        # An attempt in flight is bounded by the transport timeout; don't wait that long.
        publisher.join(timeout=5)
        self.housekeeper.spill_all()
        with self.state_file.edit() as st:
            st.state = "stopped"
        self._save()
        log.info("shipper stopped")
        return 0

    def _save(self, *, force: bool = False) -> None:
        try:
            self.state_file.save(force=force)
        except OSError as exc:
            log.warning("cannot write shipper state: %s", exc)
