"""systemd's notify protocol, from the standard library alone.

Under a ``Type=notify`` unit systemd sets ``$NOTIFY_SOCKET``; a process says
``READY=1`` when it really is ready, ``WATCHDOG=1`` while it makes progress
(``WatchdogSec=`` in the unit, seen here as ``$WATCHDOG_USEC``) and ``STATUS=``
a line that ``systemctl status`` shows. Outside systemd (``livecam run``, a
shell) there is no socket and every call does nothing, so callers need no
checks of their own. A failed send is never an error: notification must not
take down the process it reports on.
"""

from __future__ import annotations

import os
import socket
import time


def notify(*fields: str) -> bool:
    """Send ``fields`` (e.g. ``"READY=1"``) to systemd. False if there is no one to tell."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address or not fields:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    message = "\n".join(f.replace("\n", " ") for f in fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError:
        return False
    return True


def ready(status: str = "") -> bool:
    """The process is ready: systemd marks the unit active only now."""
    return notify("READY=1", *([f"STATUS={status}"] if status else []))


def status(line: str) -> bool:
    """The one-line summary ``systemctl status`` shows."""
    return notify(f"STATUS={line}")


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects ``WATCHDOG=1``; None if it expects none.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is for."""
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = os.environ.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 1e6


class Watchdog:
    """Pings systemd's watchdog when told of progress (at most about once a second).

    Call :meth:`progress` whenever the process did real work (a frame, a
    segment, a pass of a loop). A process that stops calling it stops pinging,
    and systemd kills and restarts it after ``WatchdogSec``.
    """

    def __init__(self) -> None:
        self.interval = watchdog_interval()
        self._last = 0.0

    def progress(self) -> bool:
        if self.interval is None:
            return False
        now = time.monotonic()
        if now - self._last < min(1.0, self.interval / 4):
            return False
        self._last = now
        return notify("WATCHDOG=1")
