"""``livecam run``: every role of a node as supervised child processes.

One recorder per camera and one shipper, each its own process (they share only
the filesystem). A child that exits is restarted with backoff; its siblings are
never touched. SIGTERM or SIGINT stops them all: each gets SIGTERM, and after a
grace period SIGKILL. The recorders stop first, so the shipper sees their last
segments and can move them out of RAM before it stops too; its grace period
(``last_grace``) is its own stop deadline and the spill after it.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from livecam.ops.lifecycle import Backoff, dies_with_parent, stop_on_signals

log = logging.getLogger("livecam.supervisor")

HEALTHY_AFTER = 60.0  # a child that ran this long starts its backoff afresh
GRACE = 8.0


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    next_start: float = 0.0
    backoff: Backoff = field(default_factory=lambda: Backoff(healthy_after=HEALTHY_AFTER))


class Supervisor:
    """Starts, watches and restarts child processes."""

    def __init__(
        self,
        children: dict[str, list[str]],
        *,
        stop_last: tuple[str, ...] = (),
        last_grace: float = GRACE,
    ):
        self.children = {name: Child(name, argv) for name, argv in children.items()}
        self.stop_last = stop_last
        self.last_grace = last_grace
        self.stopping = threading.Event()

    def run(self) -> int:
        stop_on_signals(self.stopping.set)
        while not self.stopping.is_set():
            now = time.monotonic()
            for child in self.children.values():
                if child.proc is not None and child.proc.poll() is not None:
                    self._exited(child, now)
                if child.proc is None and now >= child.next_start:
                    self._start(child)
            self.stopping.wait(0.2)
        self.stop_all()
        return 0

    def _start(self, child: Child) -> None:
        log.info("starting %s", child.name)
        try:
            # Own session: a Ctrl-C reaches only the supervisor, which stops the
            # recorders before the shipper; SIGTERM comes if the supervisor dies.
            child.proc = subprocess.Popen(
                child.argv,
                stdin=subprocess.DEVNULL,
                preexec_fn=dies_with_parent(signal.SIGTERM),
                start_new_session=True,
            )
        except OSError as exc:
            log.error("cannot start %s: %s", child.name, exc)
            child.next_start = time.monotonic() + child.backoff.failed(0.0)
            return
        child.started = time.monotonic()

    def _exited(self, child: Child, now: float) -> None:
        assert child.proc is not None
        code = child.proc.returncode
        child.proc = None
        delay = child.backoff.failed(now - child.started)
        child.next_start = now + delay
        how = f"signal {-code}" if code < 0 else f"code {code}"
        log.error("%s exited with %s; restart in %.1fs", child.name, how, delay)

    def stop_all(self) -> None:
        """Stop every child; those named in ``stop_last`` after the others have exited."""
        first = [c for n, c in self.children.items() if n not in self.stop_last]
        last = [c for n, c in self.children.items() if n in self.stop_last]
        for wave in (first, last):
            self._stop(wave, self.last_grace if wave is last else GRACE)
        log.info("all stopped")

    def _stop(self, children: list[Child], grace: float) -> None:
        running = [c.proc for c in children if c.proc and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("pid %d did not stop in %.0fs; killing it", proc.pid, grace)
                proc.kill()
                proc.wait()


def role_argv(role: list[str], config_args: list[str]) -> list[str]:
    """The command line of one child role, with the same config selection."""
    return [sys.executable, "-m", "livecam", *config_args, *role]
