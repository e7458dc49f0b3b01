"""What "making progress" means for the recorder and the shipper, told to systemd.

Each long-running process calls ``beat`` from a loop that runs about once a
second. The first progress sends READY (systemd marks the unit active only
then); each further progress pings the watchdog; a process that stops making
progress stops pinging, and systemd kills and restarts it after ``WatchdogSec``
even though it is still alive. ``STATUS=`` carries a one-line summary for
``systemctl status``. Outside systemd every call is a cheap no-op.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from livecam.ops import sdnotify


class Heartbeat:
    """READY on the first progress, WATCHDOG=1 on each one after, STATUS when it changes."""

    def __init__(self) -> None:
        self.ready = False
        self._status = ""
        self._watchdog = sdnotify.Watchdog()

    def progress(self, status: str) -> None:
        if not self.ready:
            self.ready = True
            self._status = status
            sdnotify.ready(status)
            return
        if status != self._status:
            self._status = status
            sdnotify.status(status)
        self._watchdog.progress()


class RecorderHeartbeat(Heartbeat):
    """A recorder progresses while frames arrive: the open segment grows or one closes.

    The ffmpeg backend flushes a fragment at every keyframe (each second), so a
    camera delivering frames changes the open file about once a second.
    """

    def __init__(self, open_dir: Path) -> None:
        super().__init__()
        self.open_dir = open_dir
        self._seen: tuple[int, int] | None = None

    def frames_came(self, segments: int) -> bool:
        """Whether frames came since the last look (``segments`` closed so far, and
        the open segment's bytes); the first look (after salvaging leftovers) is the
        baseline."""
        seen = (segments, _bytes_in(self.open_dir))
        came = self._seen is not None and seen != self._seen
        self._seen = seen
        return came

    def beat(self, state: Mapping[str, Any]) -> None:
        """Tell systemd of the progress ``frames_came`` saw, with the state to show."""
        last = state.get("last_segment") or "none yet"
        self.progress(
            f"{state.get('state')}: {state.get('segments', 0)} segments closed, last {last}"
        )


class ShipperHeartbeat(Heartbeat):
    """A shipper progresses while both loops turn.

    The housekeeper beats after each pass. The publisher marks each attempt
    and each segment it publishes (a batch of many segments on a slow link can
    take minutes and still progress); one segment may legitimately take up to
    the transport's timeout and the wait before the next attempt up to the
    longest retry wait, so only a publisher silent for longer than
    ``publisher_limit`` seconds counts as hung.
    """

    def __init__(self, publisher_limit: float) -> None:
        super().__init__()
        self.publisher_limit = publisher_limit
        self._attempt = time.monotonic()

    def attempt(self) -> None:
        """The publisher starts an attempt (or finds nothing to do), or published a
        segment."""
        self._attempt = time.monotonic()

    def beat(self, state: Mapping[str, Any]) -> None:
        """The housekeeper finished a pass."""
        if time.monotonic() - self._attempt > self.publisher_limit:
            return  # the publisher is stuck: let the watchdog fire
        line = f"{state.get('state')}: {state.get('published', 0)} published"
        if state.get("spilled"):
            line += f", {state['spilled']} spilled"
        error = state.get("last_error")
        if isinstance(error, Mapping) and state.get("state") in ("retrying", "alarm"):
            line += f"; last error: {error.get('message')}"
        self.progress(line)


def _bytes_in(directory: Path) -> int:
    total = 0
    try:
        for path in directory.iterdir():
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                continue  # closed (renamed away) meanwhile
    except OSError:
        pass
    return total
