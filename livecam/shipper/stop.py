"""The shipper's clean stop: what RAM holds goes to the NAS first, to the disk only if
the link cannot take it by ``stop_deadline``.

On SIGTERM (systemd, ``livecam run``) or SIGINT the shipper does not spill its RAM
buffer at once: a reboot need not follow, and a segment spilled on a healthy link is
SD-card wear and a NAS that lacks the last seconds until the next start. It
*drains*: the publisher goes on, taking only the RAM buffer's segments and the loss
records of both tiers (the spool's video is safe on disk and waits for the next
start), while the housekeeper goes on spilling what is due, so a power cut during
the stop takes no more than at any other time. The drain ends when

- nothing drainable is left and no recorder is stopping: a recorder that was told
  to stop (its state ``stopping``) closes its open segment and writes its last
  records first, and says ``stopped`` last; the shipper waits for that, or for its
  process to end (a recorder killed meanwhile). Each role may get
  SIGTERM at the same moment (``systemctl stop`` of the units together, a test):
  for ``PEER_GRACE`` seconds a recorder that still runs at all is waited for, the
  time its own SIGTERM needs to show in its state;
- or the link fails: the last attempt failed (``retrying``, ``alarm``), before or
  during the stop; the recorders are still waited for, but nothing is published;
- or ``stop_deadline`` passed (a publish that hangs on a dead link).

Then the publisher is stopped (a hung attempt is abandoned) and whatever is still
in RAM is spilled, durably, before the process exits: nothing is lost, and the
next start ships it. systemd's ``TimeoutStopSec`` (the node role's unit) and
``livecam run``'s own limit are ``SPILL_MARGIN`` above the deadline, for that spill.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from livecam.shipper.publisher import Publisher
from livecam.storage.files import read_json
from livecam.storage.layout import NodeDisk
from livecam.storage.state import ShipperState, StateFile, pid_alive

log = logging.getLogger("livecam.shipper")

PEER_GRACE = 2.0  # seconds a running recorder has to show it is stopping too
STOP_POLL = 0.1  # seconds between the drain's checks
# How long after stop_deadline the spill of a full RAM buffer may take: systemd's
# TimeoutStopSec of livecam-ship (the node role) and livecam run's limit add this.
SPILL_MARGIN = 40.0
FAILING = ("retrying", "alarm")  # the shipper's states after a failed attempt
DEADLINE = "the stop deadline passed"


class Drain:
    """One clean stop's drain: when it may end, and why; see the module doc."""

    def __init__(
        self,
        *,
        deadline: float,
        disk: NodeDisk,
        cameras: Iterable[str],
        publisher: Publisher,
        state: StateFile[ShipperState],
    ):
        self.started = time.monotonic()
        self.deadline = self.started + deadline
        self.disk = disk
        self.cameras = list(cameras)
        self.publisher = publisher
        self.state = state
        self.published_before = state.current.published + state.current.records_published
        self.took = 0.0  # seconds the drain lasted, once over
        publisher.draining = True

    def over(self) -> str | None:
        """Why the drain ends now, or None while it goes on."""
        now = time.monotonic()
        self.took = now - self.started
        if now >= self.deadline:
            return DEADLINE
        if recorders_stopping(self.disk, self.cameras, grace=self.took < PEER_GRACE):
            return None
        if self.state.current.state in FAILING:
            return "the NAS does not take segments"
        if self.publisher.ready():
            return None
        return "nothing is left in RAM"

    def report(self, why: str, left: int) -> None:
        """Log how the drain went: published, left to spill, seconds."""
        st = self.state.current
        published = st.published + st.records_published - self.published_before
        log.log(
            logging.WARNING if why == DEADLINE else logging.INFO,
            "stop: %s after %.1fs; published %d since the stop, %d left in RAM to spill",
            why,
            self.took,
            published,
            left,
        )


def recorders_stopping(disk: NodeDisk, cameras: Iterable[str], *, grace: bool) -> list[str]:
    """The cameras whose recorder is stopping and has not exited yet (while ``grace``:
    whose recorder runs at all and has not stopped)."""
    waiting = []
    for camera in cameras:
        st = read_json(disk.recorder_state(camera))
        state = st.get("state")
        if state == "stopped" or not pid_alive(st.get("pid")):
            continue
        if state == "stopping" or grace:
            waiting.append(camera)
    return waiting
