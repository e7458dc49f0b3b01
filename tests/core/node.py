"""A real livecam node for end-to-end tests: config, processes, a tmpfs 'NAS share'.

Everything here is real: `livecam` processes, ffmpeg test-pattern cameras, kernel
mounts. The only thing a test adds is a site plugin (``witness.py``) that records
every closed segment's size and digest, so a test can prove each one arrived
intact after the node deleted its local copy.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from livecam.storage.losses import is_loss_record
from tests.conftest import VENV_BIN, command_lines, ffprobe, livecam_cmd, sha256, write_config

WITNESS = '''
"""Test site plugin: append every closed segment's name, size and digest to a log."""
import hashlib, json, os, time
from livecam import hookimpl

LOG = {log!r}

@hookimpl
def livecam_segment_closed(segment):
    data = segment.path.read_bytes()
    line = json.dumps({"name": segment.name, "camera": segment.camera, "seq": segment.seq,
                       "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                       "closed": time.time(), "pid": os.getpid()})
    with open(LOG, "a") as f:
        f.write(line + "\\n")
'''


# The code behind `livecam status --json` (livecam.cli.cmd_status: load the config and
# its plugins, gather, dump), run once per request in one long-lived process: tests poll
# status every 0.2 s, and a `livecam` process costs 0.25 s of CPU to start where this
# costs 10 ms. The command itself is run by tests/core/test_cli.py and test_config.py.
STATUS_SERVER = """
import json, sys
from pathlib import Path
from livecam import build
from livecam.ops import status
for line in sys.stdin:
    try:
        cfg, plugins = build.load(Path(line.strip()))
        answer = {"status": status.gather(cfg, build.disk(cfg, plugins))}
    except Exception as exc:
        answer = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(answer, default=str), flush=True)
"""


class StatusServer:
    """One process answering status requests for any node's config file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc = subprocess.Popen(
            [str(VENV_BIN / "python"), "-c", STATUS_SERVER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def ask(self, config_file: Path) -> dict[str, Any]:
        assert self._proc.stdin is not None and self._proc.stdout is not None
        with self._lock:
            self._proc.stdin.write(f"{config_file}\n")
            self._proc.stdin.flush()
            answer = json.loads(self._proc.stdout.readline())
        if "error" in answer:
            raise RuntimeError(f"livecam status of {config_file}: {answer['error']}")
        return answer["status"]

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


class Target:
    """Where segments land, seen from the NAS side: ``store``."""

    def __init__(self, store: Path):
        self.store = store

    def segments(self) -> dict[str, Path]:
        """Final-named segment files, by name."""
        return {p.name: p for p in self.store.rglob("*.mp4")
                if not p.name.startswith(".") and not is_loss_record(p)}  # fmt: skip

    def records(self) -> dict[str, Path]:
        """Final-named loss records (``loss-*.json``; an older livecam's ``.mp4`` too)."""
        found = [p for p in self.store.rglob("*") if is_loss_record(p)]
        return {p.name: p for p in found if not p.name.startswith(".")}

    def hidden(self) -> list[Path]:
        return [p for p in self.store.rglob(".*") if p.is_file()]


class Share(Target):
    """A 'NAS share': a tmpfs at ``store`` bind-mounted on ``mnt``.

    ``unmount()`` is an outage that leaves ``mnt`` a bare local directory, exactly
    like an NFS share that went away; ``mount()`` brings the same content back.
    """

    def __init__(self, root: Path, size: str = "1G"):
        super().__init__(root / "store")
        self.mnt = root / "mnt"
        self.store.mkdir(parents=True)
        self.mnt.mkdir(parents=True)
        sh("mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.store))
        self.mount()

    def mount(self) -> None:
        sh("mount", "--bind", str(self.store), str(self.mnt))

    def unmount(self) -> None:
        sh("umount", "-l", str(self.mnt))

    def close(self) -> None:
        for path in (self.mnt, self.mnt, self.store):
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


class Node:
    """One node's config and processes, under ``root``."""

    def __init__(self, root: Path, transport: dict[str, Any], **overrides: Any):
        self.root = root
        self.buffer = root / "buffer"
        self.spool = root / "spool"
        self.plugins = root / "plugins"
        self.plugins.mkdir(parents=True, exist_ok=True)
        self.witness_log = root / "closed.jsonl"
        (self.plugins / "witness.py").write_text(
            WITNESS.replace("{log!r}", repr(str(self.witness_log)))
        )
        self.log = root / "livecam.log"
        cameras = overrides.pop(
            "cameras",
            {
                "cam0": {
                    "size": [160, 120],
                    "fps": 10,
                    "bitrate": "300k",
                    "preset": "ultrafast",
                    "pattern": "testsrc2",
                },
                "cam1": {
                    "size": [160, 120],
                    "fps": 10,
                    "bitrate": "300k",
                    "preset": "ultrafast",
                    "pattern": "smptebars",
                },
            },
        )
        self.config = {
            "node": "node01",
            "site": "lab",
            "segment_seconds": 1,
            "cameras": cameras,
            "buffer": {"path": str(self.buffer), "max_bytes": "64M"},
            "spool": {"path": str(self.spool), "max_bytes": "1G", "min_free_bytes": 0},
            "transport": {"timeout": "10s", **transport},
            "retry": {"initial": "200ms", "max": "1s"},
            "plugin_dirs": [str(self.plugins)],
        }
        for key, value in overrides.items():  # a dict override changes only its keys
            base = self.config.get(key)
            self.config[key] = {**base, **value} if isinstance(base, dict) else value
        # The tiers where the config puts them (an override may move them).
        self.buffer = Path(self.config["buffer"]["path"])
        self.spool = Path(self.config["spool"]["path"])
        self.config_file = write_config(root / "livecam.yaml", self.config)
        self.procs: list[subprocess.Popen[bytes]] = []
        #: Run in each process ``start`` starts, before it runs livecam (tests/powercut
        #: puts the node in a cgroup that a cut kills at once).
        self.preexec: Callable[[], None] | None = None
        self._status: StatusServer | None = None

    # --- processes -------------------------------------------------------------------

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        """Start ``livecam -c CONFIG ARGS`` (default: run) in its own session."""
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                livecam_cmd("-c", str(self.config_file), *(args or ("run",))),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=self.preexec,
            )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes] | None = None, timeout: float = 20) -> int:
        proc = proc or self.procs[0]
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        return proc.wait(timeout=timeout)

    def drain(self, timeout: float = 30) -> None:
        """Run the shipper alone until nothing is left on the node (after a stop)."""
        proc = self.start("ship")
        wait_for(
            lambda: (
                not self.local_segments("buffer")
                and not self.local_segments("spool")
                and not self.local_records()
            ),
            timeout,
            "the node drained",
        )
        state = self.buffer / ".livecam" / "shipper.json"
        wait_for(lambda: f'"pid": {proc.pid},' in state.read_text(), 10, "the shipper is up")
        assert self.stop(proc) == 0

    def kill_all(self) -> tuple[float, float]:
        """Every process of this node (livecam and ffmpeg) frozen at once, then killed: a
        power cut. Frozen first, as a power cut freezes them: a child whose supervisor
        dies gets SIGTERM (livecam.ops.lifecycle), and killed one by one a recorder
        could close its open segment cleanly in between, which a power cut never lets
        it do. Returns when the first and the last process froze (``time.time()``):
        finding them takes a scan of /proc, slow on a loaded machine, and comes first."""
        frozen: set[int] = set()
        first = last = 0.0
        for _ in range(2):  # twice: a supervisor could have forked between list and stop
            found = [p.pid for p in self.procs] + self.pids("livecam") + self.pids("ffmpeg")
            new = [pid for pid in dict.fromkeys(found) if pid not in frozen]
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in new:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                    if sig == signal.SIGSTOP:
                        last = time.time()
                        first = first or last
            frozen.update(new)
        for proc in self.procs:
            proc.wait(timeout=10)
        return first, last

    def pids(self, what: str, extra: str = "") -> list[int]:
        """PIDs whose command line mentions this node (its config or buffer) and ``what``."""
        return [
            pid
            for pid, cmd in command_lines()
            if (str(self.config_file) in cmd or str(self.buffer) in cmd)
            and what in cmd
            and extra in cmd
        ]

    def cleanup(self) -> None:
        if self._status is not None:  # a later status() starts another
            self._status.close()
            self._status = None
        for proc in self.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        for pid in self.pids("ffmpeg"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    # --- what happened ---------------------------------------------------------------------

    def closed(self) -> list[dict[str, Any]]:
        """Every segment the recorders closed, from the witness plugin's log."""
        if not self.witness_log.exists():
            return []
        return [json.loads(line) for line in self.witness_log.read_text().splitlines() if line]

    def local_segments(self, tier: str) -> list[Path]:
        base = self.buffer if tier == "buffer" else self.spool
        return sorted(p for p in base.glob("*/*.mp4") if not p.name.startswith("."))

    def local_records(self) -> list[Path]:
        """Loss records waiting on the node, in either tier."""
        found = [p for base in (self.buffer, self.spool) for p in base.glob("*/*")]
        return sorted(p for p in found if is_loss_record(p) and not p.name.startswith("."))

    def status(self) -> dict[str, Any]:
        """What ``livecam status --json`` prints for this node (see ``StatusServer``)."""
        if self._status is None:
            self._status = StatusServer()
        return self._status.ask(self.config_file)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for(what: Callable[[], Any], timeout: float, message: str, interval: float = 0.2) -> Any:
    """Poll ``what`` until it returns something truthy; fail with ``message`` on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = what()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s: {message}")


class Watcher:
    """Samples the share while a test runs: every final-named file must be complete.

    It records the size of each final-named file each time it sees it; a test
    then checks every observed size against the witness log. A half-written file
    under a final name would show up as a smaller size.
    """

    def __init__(self, share: Share, interval: float = 0.05):
        self.share = share
        self.interval = interval
        self.seen: dict[str, set[int]] = {}
        self.hidden_seen = 0
        self.samples = 0  # passes over the share: a test asserts the watcher ran
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for root, _dirs, files in os.walk(self.share.store):
                for name in files:
                    if name.startswith("."):
                        self.hidden_seen += 1
                        continue
                    if is_loss_record(Path(name)):
                        continue  # a loss record (livecam/storage/losses.py), not a segment
                    try:
                        size = os.stat(os.path.join(root, name)).st_size
                    except FileNotFoundError:
                        continue
                    self.seen.setdefault(name, set()).add(size)
            self.samples += 1


def assert_all_arrived(node: Node, share: Target, *, lost_ok: set[str] = frozenset()) -> list[dict]:
    """Every closed segment (but ``lost_ok``) is on the share once, byte-identical."""
    closed = node.closed()
    assert closed, "no segment was closed"
    names = [c["name"] for c in closed]
    assert len(names) == len(set(names)), "a segment name was closed twice"
    on_share = share.segments()
    paths = [p.name for p in share.store.rglob("*.mp4") if not p.name.startswith(".")]
    assert len(paths) == len(set(paths)), "a segment is on the share twice"
    missing = [n for n in names if n not in on_share and n not in lost_ok]
    assert not missing, f"{len(missing)} segments never arrived: {missing[:5]}"
    for c in closed:
        if c["name"] in on_share:
            assert sha256(on_share[c["name"]]) == c["sha256"], f"{c['name']} differs on the share"
    assert not share.hidden(), f"temp files left on the share: {share.hidden()[:3]}"
    return closed


def assert_evicted_oldest_first(closed: list[dict], evicted: set[str], since: float) -> None:
    """Per camera, every evicted segment is older (by sequence) than every segment closed
    after ``since`` that survived, but one: eviction skips the segment the publisher holds
    in a failing attempt and takes the next (evictions.py: a segment in flight is skipped,
    eviction never waits; row A15)."""
    for cam in sorted({c["camera"] for c in closed}):
        ev = [c["seq"] for c in closed if c["camera"] == cam and c["name"] in evicted]
        after = [c for c in closed if c["camera"] == cam and c["closed"] > since]
        kept = [c["seq"] for c in after if c["name"] not in evicted]
        skipped = [seq for seq in kept if seq < max(ev, default=0)]
        assert ev and kept and len(skipped) <= 1, (cam, ev, kept)


def ship_through_a_restart(
    node: Node, target: Target, wait: float, while_up: Callable[[], None] = lambda: None
) -> None:
    """``livecam run`` on ``node`` while ``target.server`` is stopped and started again:
    recording goes on while it is down, the error is transient, the segments wait on
    the node, shipping resumes by itself; then the node stops and drains what is left.
    ``while_up`` runs once the first segments arrived, before the stop."""
    proc = node.start()
    wait_for(lambda: len(target.segments()) >= 4, wait, "first segments published")
    while_up()
    target.server.stop()  # type: ignore[attr-defined]
    down = len(node.closed())
    wait_for(lambda: len(node.closed()) >= down + 4, 20, "recording goes on while down")
    status = node.status()["shipper"]
    assert status["last_error"] and not status["last_error"]["permanent"], status
    # Nothing is deleted on the node while it cannot arrive.
    assert len(node.local_segments("buffer") + node.local_segments("spool")) >= 3
    target.server.start()  # type: ignore[attr-defined]
    wait_for(lambda: len(target.segments()) >= down + 4, wait, "shipping resumes by itself")
    assert node.stop(proc) == 0
    # Node.drain SIGTERMs a shipper that may not have set its handlers yet when
    # there is nothing to do (exit -15); only drain what is there.
    if node.local_segments("buffer") or node.local_segments("spool") or node.local_records():
        node.drain()


def assert_records_arrived(node: Node, target: Target) -> list[dict[str, Any]]:
    """The node's loss records on ``target`` are JSON, never videos (issue 22): each at
    ``lab/node01/_losses/<date>/loss-*.json``, the ``restart`` of every camera among
    them; no ``.mp4`` there holds JSON, and none waits on the node. Their contents."""
    records = target.records()
    assert records, "no loss record arrived"
    found = []
    for name, path in records.items():
        assert name.startswith("loss-") and path.suffix == ".json", path
        record = json.loads(path.read_text())
        day = datetime.fromtimestamp(record["time"], UTC)
        expected = f"lab/node01/_losses/{day:%Y-%m-%d}/{name}"
        assert path.relative_to(target.store).as_posix() == expected
        found.append(record)
    videos = [p for p in target.store.rglob("*.mp4") if not p.name.startswith(".")]
    assert not [p for p in videos if p.read_bytes()[:1] == b"{"], "a loss record named .mp4"
    restarted = {r["camera"] for r in found if r["kind"] == "restart"}
    assert restarted >= set(node.config["cameras"]), restarted
    assert not node.local_records(), f"loss records left on the node: {node.local_records()}"
    return found


def assert_whole_segments(closed: list[dict], files: dict[str, Path], frames: int) -> None:
    """Each camera's segments on the target decode to ``frames`` frames, but the last
    one, which the stop cut short."""
    for cam in ("cam0", "cam1"):
        mine = sorted((c for c in closed if c["camera"] == cam), key=lambda c: c["seq"])
        assert len(mine) >= 4, cam
        for c in mine[:-1]:
            assert ffprobe(files[c["name"]])["frames"] == frames, c["name"]


class LoopDisk:
    """An ext4 image on a loop device: the node's SD card, with its own write counter."""

    def __init__(self, root: Path, size: str = "2G"):
        self.image = root / "sd.img"
        self.mnt = root / "sd"
        self.mnt.mkdir()
        subprocess.run(["truncate", "-s", size, str(self.image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", str(self.image)], check=True)
        losetup = ["losetup", "--find", "--show", str(self.image)]
        self.dev = subprocess.run(
            losetup, capture_output=True, text=True, check=True
        ).stdout.strip()
        subprocess.run(["mount", self.dev, str(self.mnt)], check=True)

    def written(self) -> int:
        subprocess.run(["sync", "-f", str(self.mnt)], check=True)
        fields = Path(f"/sys/block/{Path(self.dev).name}/stat").read_text().split()
        return int(fields[6]) * 512

    def close(self) -> None:
        subprocess.run(["umount", str(self.mnt)], check=False)
        subprocess.run(["losetup", "-d", self.dev], check=False)
