"""``livecam run``: every role of a node as supervised child processes.

One recorder per camera and one shipper, each its own process (they share only
the filesystem). A child that exits is restarted with backoff; its siblings are
never touched. SIGTERM or SIGINT stops them all: each gets SIGTERM, and after a
grace period SIGKILL. The recorders stop first, so the shipper sees their last
segments and can move them out of RAM before it stops too.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from livecam.process import dies_with_parent

log = logging.getLogger("livecam.supervisor")

BACKOFF_MAX = 30.0
HEALTHY_AFTER = 60.0  # a child that ran this long starts its backoff afresh
GRACE = 8.0


@dataclass
class Child:
    name: str
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    failures: int = 0
    next_start: float = 0.0


class Supervisor:
    """Starts, watches and restarts child processes."""

    def __init__(self, children: dict[str, list[str]], *, stop_last: tuple[str, ...] = ()):
        self.children = {name: Child(name, argv) for name, argv in children.items()}
        self.stop_last = stop_last
        self.stopping = threading.Event()

    def run(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: self.stopping.set())
        signal.signal(signal.SIGINT, lambda *_: self.stopping.set())
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
            child.failures += 1
            child.next_start = time.monotonic() + self._backoff(child)
            return
        child.started = time.monotonic()

    def _exited(self, child: Child, now: float) -> None:
        assert child.proc is not None
        code = child.proc.returncode
        child.proc = None
        if now - child.started > HEALTHY_AFTER:
            child.failures = 0
        child.failures += 1
        delay = self._backoff(child)
        child.next_start = now + delay
        how = f"signal {-code}" if code < 0 else f"code {code}"
        log.error("%s exited with %s; restart in %.1fs", child.name, how, delay)

    @staticmethod
    def _backoff(child: Child) -> float:
        return min(BACKOFF_MAX, 0.5 * 2.0 ** (child.failures - 1))

    def stop_all(self) -> None:
        """Stop every child; those named in ``stop_last`` after the others have exited."""
        first = [c for n, c in self.children.items() if n not in self.stop_last]
        last = [c for n, c in self.children.items() if n in self.stop_last]
        for wave in (first, last):
            self._stop(wave)
        log.info("all stopped")

    def _stop(self, children: list[Child]) -> None:
        running = [c.proc for c in children if c.proc and c.proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + GRACE
        for proc in running:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("pid %d did not stop in %.0fs; killing it", proc.pid, GRACE)
                proc.kill()
                proc.wait()


def role_argv(role: list[str], config_args: list[str]) -> list[str]:
    """The command line of one child role, with the same config selection."""
    return [sys.executable, "-m", "livecam", *config_args, *role]
