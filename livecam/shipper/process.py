"""``livecam ship``: one process per node. Publishes ready segments, spills, evicts.

Two threads share the work and never wait on each other for long:

- the publisher (``livecam.shipper.publisher``) takes the oldest ready segment of either
  tier, publishes it through the transport, and deletes the local copy only after
  the transport verified it; failures retry forever (``livecam.shipper.retry``);
- the housekeeper (``livecam.shipper.housekeeper``), in the main thread, touches only
  local storage: it spills buffer segments older than ``spill_after`` (or above
  the high-water mark) to the spool and evicts (``livecam.shipper.evictions``) when a
  tier's limits force it. It never touches the network, so an outage or a hung
  mount cannot stop it.

A segment being worked on by one thread is claimed (``livecam.shipper.handoff``); eviction
takes one the publisher's transport can let go and skips the rest, and a spill
of one copies it without taking it from the publisher, so neither thread ever
waits for the other. The main thread is the
only writer of ``shipper.json``.
"""

from __future__ import annotations

import logging
import os
import threading
import time

from livecam import build
from livecam.config import Config
from livecam.ops.heartbeat import ShipperHeartbeat
from livecam.ops.lifecycle import stop_on_signals
from livecam.pluginhost.manager import Plugins
from livecam.shipper.evictions import Evictor, Ledger
from livecam.shipper.handoff import Handoff
from livecam.shipper.housekeeper import Housekeeper
from livecam.shipper.publisher import Publisher
from livecam.shipper.retry import RetryPolicy, Stopped
from livecam.shipper.stop import DEADLINE, STOP_POLL, Drain
from livecam.storage.losses import LossWriter
from livecam.storage.state import ShipperState, StateFile
from livecam.transport import PublishError, Transport

log = logging.getLogger("livecam.shipper")

POLL = 0.5  # seconds between housekeeping passes; part of the power-cut window
SAVE_EVERY = 5.0  # seconds between state saves when nothing changed


class Shipper:
    """Ships one node's segments until stopped; see the module doc."""

    def __init__(self, config: Config, plugins: Plugins, transport: Transport | None = None):
        self.config = config
        self.disk = build.disk(config, plugins)
        self.buffer, self.spool = self.disk.buffer, self.disk.spool
        self.buffer.path.mkdir(parents=True, exist_ok=True)
        try:
            self.spool.path.mkdir(exist_ok=True)  # not parents: never on a vanished mount's disk
        except OSError as exc:  # the housekeeper reports it and runs RAM-only
            log.error("cannot create the spool %s: %s", self.spool.path, exc)
        self.transport = transport or build.transport(config, plugins)
        # SIGTERM sets stop_requested: the drain (livecam.shipper.stop) begins. stopping
        # ends it: every loop and wait ends, and what RAM still holds is spilled.
        self.stop_requested = threading.Event()
        self.stopping = threading.Event()
        self.state_file = StateFile(
            self.disk.shipper_state(),
            ShipperState(pid=os.getpid(), started=time.time(), transport=self.transport.describe()),
        )
        self.handoff = Handoff(takes_started=self.transport.takes_started)
        self.retry = RetryPolicy(
            initial=config.retry_initial,
            maximum=config.retry_max,
            permanent=config.retry_permanent,
            stopping=self.stopping,
            probe=self.transport.reachable,
            spread=self.transport.return_spread,
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
            disk=self.disk,
            handoff=self.handoff,
            state=self.state_file,
            stopping=self.stopping,
            progress=self.heartbeat.attempt,
        )
        self.evictor = Evictor(
            plugins,
            self.handoff,
            Ledger(self.disk),
            LossWriter(self.disk, config.site, config.node),
        )
        self.housekeeper = Housekeeper(
            plugins,
            disk=self.disk,
            spill_after=config.spill_after,
            handoff=self.handoff,
            evictor=self.evictor,
            state=self.state_file,
            stopping=self.stopping,
        )

    @property
    def state(self) -> ShipperState:
        """The shipper's live state (what ``shipper.json`` holds)."""
        return self.state_file.current

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
                    self._idle()
            except Stopped:
                break
            except PublishError:
                break  # only raised once stopping
        self.transport.close()

    def _idle(self) -> None:
        """Nothing to publish: wait for the next pass (briefly while draining)."""
        if self.stop_requested.is_set():
            self.stopping.wait(STOP_POLL)
        else:
            self.stop_requested.wait(POLL)

    def run(self) -> int:
        """Ship until SIGTERM/SIGINT, then drain (``livecam.shipper.stop``). Returns the
        process exit code."""
        stop_on_signals(self.stop_requested.set)
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
        while not self.stop_requested.is_set():
            last_save = self._pass(last_save)
            self.stop_requested.wait(POLL)
        self._drain(publisher)
        with self.state_file.edit() as st:
            st.state = "stopped"
        self._save()
        log.info("shipper stopped")
        return 0

    def _pass(self, last_save: float) -> float:
        """One housekeeping pass, the watchdog's ping and the state's save; when the
        state was last saved in full."""
        try:
            self.housekeeper.housekeep()
        except OSError as exc:
            log.error("housekeeping failed: %s", exc)
        else:
            self.heartbeat.beat(self.state_file.as_dict())
        overdue = time.monotonic() - last_save > SAVE_EVERY
        self._save(force=overdue)
        return time.monotonic() if overdue else last_save

    def _drain(self, publisher: threading.Thread) -> None:
        """The clean stop: publish what RAM holds until the drain is over, then stop the
        publisher and spill what is left (``livecam.shipper.stop``)."""
        drain = Drain(
            deadline=self.config.stop_deadline,
            disk=self.disk,
            cameras=self.config.cameras,
            publisher=self.publisher,
            state=self.state_file,
        )
        log.info("stopping: publishing what RAM holds (at most %gs)", self.config.stop_deadline)
        last_save = 0.0
        while (why := drain.over()) is None:
            last_save = self._pass(last_save)
            time.sleep(STOP_POLL)
        self.stopping.set()
        # An idle or waiting publisher ends at once (and closes the transport); one in
        # an attempt past the deadline is abandoned: its segment is copied to the spool
        # all the same, as any due spill is.
        publisher.join(timeout=0 if why == DEADLINE else 1)
        drain.report(why, len(self.buffer.segments()))
        self.housekeeper.spill_all()

    def _save(self, *, force: bool = False) -> None:
        try:
            self.state_file.save(force=force)
        except OSError as exc:
            log.warning("cannot write shipper state: %s", exc)
