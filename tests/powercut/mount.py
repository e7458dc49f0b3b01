"""The test's side of a power cut: a cgroup holding the processes under test, and
the lazyfs mount (``tests/powercut/lazyfs.py``) that forgets what they did not make
durable.

``Cgroup`` is a cgroup v2 group made for one test: processes started with
``Cgroup.join`` as their ``preexec_fn`` (and all their children) are in it, and a
cut kills all of them at the instant it forgets (``cgroup.kill``), so no process
acts after the cut. ``LazyMount`` mounts a backing directory, arms cuts and cuts,
and unmounts; mounting the same backing directory again is the reboot.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]  # lazyfs runs as tests.powercut.lazyfs from here


def cgroup2_root() -> Path:
    """Where cgroup v2 is mounted (``/sys/fs/cgroup``, or its ``unified`` part on a
    hybrid host)."""
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split()[0] == "cgroup2":
                return Path(left.split()[4])
    raise RuntimeError("no cgroup v2 mounted: the power-cut tests need cgroup.kill")


class Cgroup:
    """A cgroup v2 group of one test's processes; see the module doc."""

    def __init__(self, name: str):
        self.path = cgroup2_root() / name
        self.path.mkdir()

    def join(self) -> None:
        """``preexec_fn``: put the new process (and what it starts) in the group."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def pids(self) -> list[int]:
        return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]

    def empty(self) -> bool:
        return "populated 0" in (self.path / "cgroup.events").read_text()

    def kill(self) -> None:
        (self.path / "cgroup.kill").write_text("1")

    def wait_empty(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not self.empty():
            if time.monotonic() > deadline:
                raise AssertionError(f"processes outlived the cut: {self.pids()}")
            time.sleep(0.02)

    def remove(self) -> None:
        if self.path.exists():
            self.kill()
            self.wait_empty()
            self.path.rmdir()


class LazyMount:
    """One lazyfs process serving ``backing`` on ``mnt`` (see lazyfs.py's doc)."""

    def __init__(self, backing: Path, mnt: Path, cgroup: Cgroup | None = None):
        self.backing, self.mnt, self.cgroup = backing, mnt, cgroup
        self.backing.mkdir(parents=True, exist_ok=True)
        self.mnt.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[str] | None = None
        self.cuts: list[dict[str, Any]] = []  # every cut event of every mount, in order
        self._lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()

    def mount(self) -> None:
        argv = [sys.executable, "-m", "tests.powercut.lazyfs", str(self.backing), str(self.mnt)]
        if self.cgroup is not None:
            argv += ["--cgroup", str(self.cgroup.path)]
        with open(self.backing.with_name(f"{self.backing.name}.lazyfs.log"), "a") as log:
            self.proc = subprocess.Popen(
                argv, cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )
        # This mount's own queues: the reader of an earlier mount may still report its end.
        self._lines, self._events = queue.Queue(), queue.Queue()
        reader = threading.Thread(
            target=self._read, args=(self.proc, self._lines, self._events), daemon=True
        )
        reader.start()
        event = self._next_event(20)
        assert event == {"event": "mounted"}, event
        assert os.path.ismount(self.mnt), f"{self.mnt} is not mounted"

    def _read(
        self,
        proc: subprocess.Popen[str],
        lines: queue.Queue[dict[str, Any]],
        events: queue.Queue[dict[str, Any]],
    ) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            message = json.loads(line)
            if message.get("event") == "cut":
                self.cuts.append(message)
            (events if "event" in message else lines).put(message)
        events.put({"event": "exited", "code": proc.wait()})

    def _next_event(self, timeout: float) -> dict[str, Any]:
        try:
            return self._events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"lazyfs said nothing for {timeout}s") from None

    def command(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        reply = self._lines.get(timeout=20)
        assert reply.get("reply") == cmd and "error" not in reply, reply
        return reply

    def arm(self, when: str, op: str, pattern: str, skip: int = 0) -> None:
        """Cut ``when`` ("before"/"after") the ``skip``+1-th ``op`` on a path matching
        ``pattern`` (a regex searched in the path below the mount, which starts with /)."""
        self.command("arm", when=when, op=op, pattern=pattern, skip=skip)

    def cut(self) -> dict[str, Any]:
        """Cut now; the cut (as ``wait_cut`` returns it)."""
        self.command("cut")
        return self.wait_cut(20)

    def wait_cut(self, timeout: float) -> dict[str, Any]:
        """The armed cut, once it happened: ``time``, the operation (``when``, ``op``,
        ``paths``) and ``busy_since``: for each thread (its id, as a string) whose
        operations came one close after the other up to the cut, when they began."""
        event = self._next_event(timeout)
        assert event.get("event") == "cut", event
        return event

    def stats(self) -> dict[str, Any]:
        return self.command("stats")

    def unmount(self) -> None:
        """Unmount and end the lazyfs process (the cgroup's processes must be dead).

        A copy of the mount in another mount namespace (one a test of another suite
        made meanwhile: ``ip netns exec``, ``unshare``) keeps the connection up after the
        unmount; the process is then killed, which loses nothing: its backing directory
        holds the durable state at every moment, and nothing here uses it any more."""
        if self.proc is None:
            return
        done = subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True)
        if done.returncode != 0:  # busy: a test process still in it; never leave it mounted
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        finally:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            self.proc = None

    def power_cycle(self) -> None:
        """After a cut: wait until every process under test is dead, then unmount and
        mount again (the reboot)."""
        if self.cgroup is not None:
            self.cgroup.wait_empty()
        self.unmount()
        self.mount()
