"""The node role's Type=notify units under a real systemd: a provisioned node tree booted
with ``systemd-nspawn --boot``.

The tree is the one tests/ansible converges with site.yml (its ``provisioned``
fixture, a debootstrapped Debian under /var/cache/livecam-tests). Booted, its
units run for real: the recorder is active only once READY came (its first
frame), a SIGSTOPped recorder is killed and restarted by systemd's watchdog,
``systemctl status`` shows each STATUS= line, and node_exporter serves livecam's
metrics from the RAM textfile. A shipper whose publish hangs on a server that never
answers (tests/monitoring/hung.py) is killed by the watchdog and restarted while
the recorders record on. Run as root under ``flock /tmp/lc-lock-systemd``
and ``flock /tmp/lc-lock-monitoring``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.ansible import fleet
from tests.ansible.conftest import (
    WEB_NODE,
    WEB_TOKEN,
    provisioned,  # noqa: F401 - the session fixture
)
from tests.core.node import wait_for
from tests.monitoring.hung import LISTENER, UNANSWERED

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("systemd-nspawn"), reason="needs systemd-container"),
]

RECORDER = "livecam-record@cam0.service"
SHIPPER = "livecam-ship.service"
LIVECAM = ("/opt/livecam/venv/bin/livecam", "-c", "/etc/livecam/livecam.yaml")
SILENT_PORT = 7070
# The shipper's transport timeout, its longest retry wait and 30 s: how long its
# publisher may be silent before it stops pinging (livecam/shipper/process.py).
PUBLISHER_LIMIT = 1 + 2 + 30


class Booted:
    """A tree booted by systemd-nspawn, with commands run inside through nsenter."""

    def __init__(self, tree: Path, log: Path):
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            ["systemd-nspawn", "-D", str(tree), "--boot", "--register=no", "--keep-unit",
             "--private-network", "--quiet"],
            stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log, start_new_session=True,
        )  # fmt: skip
        self.init = wait_for(self._init_pid, 60, "the container's systemd started")
        # Its manager answers a moment after the exec (a warm tree boots fast): ask only then.
        answer = ""

        def answers() -> bool:
            nonlocal answer
            out = self.run("systemctl", "show", "--property=Version")
            answer = out.stderr.strip()
            return out.returncode == 0

        try:
            wait_for(answers, 60, "the container's systemd answers")
        except AssertionError as exc:
            os.killpg(self.proc.pid, signal.SIGKILL)  # no stop() from a caller that got no tree
            self.proc.wait()
            self.log.close()
            raise AssertionError(f"{exc}: {answer}") from None

    def _init_pid(self) -> int | None:
        for pid in _descendants(self.proc.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
        return None

    def run(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.init), "-a", *argv], capture_output=True,
                              text=True, timeout=60, check=check)  # fmt: skip

    def status(self) -> dict:
        """``livecam status --json`` inside the tree."""
        return json.loads(self.run(*LIVECAM, "status", "--json", check=True).stdout)

    def show(self, unit: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, check=True).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.run("systemctl", "poweroff")
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def timespan(text: str) -> float:
    """Seconds in a systemd time span as `systemctl show` prints it ("1min 30s")."""
    units = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "min": 60.0, "h": 3600.0}
    total = 0.0
    for part in text.split():
        number = part.rstrip("abcdefghijklmnopqrstuvwxyz")
        total += float(number) * units[part[len(number) :] or "s"]
    return total


def _descendants(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    children = [int(p) for p in out.split()]
    return children + [d for c in children for d in _descendants(c)]


@pytest.fixture
def booted(provisioned, tmp_path):  # noqa: F811
    node = Booted(provisioned.trees["node1"], tmp_path / "nspawn.log")
    try:
        yield node
    finally:
        node.stop()
        print((tmp_path / "nspawn.log").read_text(errors="replace")[-2000:])


def test_notify_units_under_real_systemd(booted):
    units = (RECORDER, "livecam-record@cam1.service", "livecam-ship.service",
             "livecam-metrics.service")  # fmt: skip
    for unit in units:
        wait_for(lambda u=unit: booted.show(u)["ActiveState"] == "active", 120, f"{unit} active")
    for unit in units:
        show = booted.show(unit)
        assert show["Type"] == "notify", unit
        assert timespan(show["WatchdogUSec"]) > 0, unit
        # Active only at READY: for the recorder that is its first frame, well after exec.
        waited = (int(show["ActiveEnterTimestampMonotonic"])
                  - int(show["ExecMainStartTimestampMonotonic"])) / 1e6  # fmt: skip
        print(f"{unit}: active {waited:.2f}s after exec; status {show['StatusText']!r}")
        assert show["StatusText"], unit
    recorder = booted.show(RECORDER)
    assert recorder["StatusText"].startswith("recording:")
    waited = (int(recorder["ActiveEnterTimestampMonotonic"])
              - int(recorder["ExecMainStartTimestampMonotonic"])) / 1e6  # fmt: skip
    assert waited > 1.0, "a Type=simple unit is active at exec; READY waits for a frame"
    status = booted.run("systemctl", "status", "--no-pager", "livecam-ship.service").stdout
    assert 'Status: "' in status, status

    # node_exporter serves the RAM textfile livecam-metrics writes.
    fetch = "import urllib.request as u; print(u.urlopen('http://127.0.0.1:9100/metrics').read()"
    fetch += ".decode())"
    # (livecam-metrics rewrites every 15 s; its first file may predate the recorders.)
    wait_for(
        lambda: 'livecam_camera_up{camera="cam0"} 1' in booted.run("python3", "-c", fetch).stdout,
        40,
        "node_exporter serves livecam_camera_up 1",
    )
    assert booted.run("findmnt", "-n", "-o", "FSTYPE", "--target",
                      "/run/livecam/metrics").stdout.strip() == "tmpfs"  # fmt: skip

    # A recorder that is alive but frozen: systemd's watchdog kills and restarts it.
    before = booted.show(RECORDER)
    watchdog = timespan(before["WatchdogUSec"])
    booted.run("kill", "-STOP", before["MainPID"], check=True)
    t0 = time.monotonic()

    def restarted() -> bool:
        now = booted.show(RECORDER)
        return (now["MainPID"] not in ("0", before["MainPID"]) and now["ActiveState"] == "active"
                and int(now["NRestarts"]) > int(before["NRestarts"]))  # fmt: skip

    wait_for(restarted, watchdog + 60, "the watchdog restarted the frozen recorder", 0.5)
    took = time.monotonic() - t0
    print(f"SIGSTOPped recorder restarted by the watchdog after {took:.1f}s "
          f"(WatchdogSec={watchdog:g}s)")  # fmt: skip
    journal = booted.run("journalctl", "--no-pager", "-u", RECORDER).stdout
    assert "Watchdog timeout" in journal, journal[-3000:]
    assert took < watchdog + 30  # RestartSec=5 plus the new recorder's first frame

    # A camera that never delivers a frame: its unit never gets past "activating".
    add_camera = (
        "import yaml; p = '/etc/livecam/livecam.yaml'; c = yaml.safe_load(open(p)); "
        "c['cameras']['silent'] = {'backend': 'ffmpeg', 'realtime': False, 'input': "
        "'-f rawvideo -pix_fmt yuv420p -video_size 160x120 -framerate 10 -i /run/nofeed'}; "
        "yaml.safe_dump(c, open(p, 'w'))"
    )
    booted.run("mkfifo", "/run/nofeed", check=True)
    booted.run("/opt/livecam/venv/bin/python", "-c", add_camera, check=True)
    booted.run("systemctl", "start", "--no-block", "livecam-record@silent.service", check=True)
    time.sleep(10)
    silent = booted.show("livecam-record@silent.service")
    assert silent["ActiveState"] == "activating", silent["ActiveState"]
    assert silent["MainPID"] != "0"  # it runs; it just never said READY
    print(f"a camera without frames: still {silent['ActiveState']} after 10 s")
    booted.run("systemctl", "stop", "livecam-record@silent.service")


@pytest.fixture
def hanging_node(provisioned):  # noqa: F811
    """node1's tree shipping through the ``unanswered`` transport to 127.0.0.1:SILENT_PORT
    (timeout 1 s, retries up to 2 s); its own config and plugins again afterwards."""
    tree = provisioned.trees["node1"]
    config = tree / "etc/livecam/livecam.yaml"
    plugin = tree / "etc/livecam/plugins/unanswered.py"
    original = config.read_text()
    changed = yaml.safe_load(original)
    changed["transport"] = {"plugin": "unanswered", "host": "127.0.0.1", "port": SILENT_PORT,
                            "timeout": "1s"}  # fmt: skip
    changed["retry"] = {"initial": "1s", "max": "2s", "permanent": "2s"}
    assert "/etc/livecam/plugins" in changed["plugin_dirs"]
    config.write_text(yaml.safe_dump(changed, sort_keys=False))  # same file, same mode
    plugin.write_text(UNANSWERED)
    plugin.chmod(0o644)
    try:
        yield tree
    finally:
        config.write_text(original)
        plugin.unlink(missing_ok=True)


def test_a_hung_publish_is_killed_by_the_watchdog_while_recording_goes_on(hanging_node, tmp_path):
    """The shipper's publisher blocks for good on a server that accepts and never
    answers: its housekeeper spills on, it stops pinging after its publisher's limit,
    systemd kills it WatchdogSec later and starts it again; the recorders never stop."""
    booted = Booted(hanging_node, tmp_path / "nspawn.log")
    try:
        for unit in (RECORDER, SHIPPER):
            wait_for(lambda u=unit: booted.show(u)["ActiveState"] == "active", 120,
                     f"{unit} active")  # fmt: skip
        booted.run("systemd-run", "--unit=silent-nas", "python3", "-c", LISTENER,
                   str(SILENT_PORT), check=True)  # fmt: skip

        def requested() -> bool:
            out = booted.run("journalctl", "--no-pager", "-o", "cat", "-u", "silent-nas").stdout
            return "request " in out

        wait_for(requested, 60, "the shipper's publish reached the silent server", 0.5)
        hung = time.monotonic()
        shipper, recorder = booted.show(SHIPPER), booted.show(RECORDER)
        watchdog = timespan(shipper["WatchdogUSec"])
        closed = booted.status()["cameras"]["cam0"]["segments"]

        # Past the limit the pings are over, yet the housekeeper spills on.
        time.sleep(PUBLISHER_LIMIT + 3)
        spilled = booted.status()["shipper"]["spilled"]
        wait_for(lambda: booted.status()["shipper"]["spilled"] >= spilled + 2, 20,
                 "the housekeeper spills while the publisher hangs")  # fmt: skip
        assert booted.show(SHIPPER)["MainPID"] == shipper["MainPID"]

        def restarted() -> bool:
            now = booted.show(SHIPPER)
            return (
                now["MainPID"] not in ("0", shipper["MainPID"])
                and now["ActiveState"] == "active"
                and int(now["NRestarts"]) > int(shipper["NRestarts"])
            )

        wait_for(restarted, PUBLISHER_LIMIT + watchdog + 60, "the watchdog restarted the shipper",
                 0.5)  # fmt: skip
        took = time.monotonic() - hung
        print(
            f"a shipper whose publish hung was restarted by the watchdog {took:.1f}s after "
            f"the hang (publisher limit {PUBLISHER_LIMIT}s, WatchdogSec={watchdog:g}s)"
        )
        journal = booted.run("journalctl", "--no-pager", "-u", SHIPPER).stdout
        assert "Watchdog timeout" in journal, journal[-3000:]
        # Not before its publisher's limit and WatchdogSec had both run out (the hang
        # began a poll of the journal before `hung`)...
        assert took > PUBLISHER_LIMIT + watchdog - 5, took
        # ...and then at once: the kill, RestartSec=5, the new shipper's first pass.
        assert took < PUBLISHER_LIMIT + watchdog + 30, took

        # Recording went on throughout: the same recorder, never restarted, closing on.
        now = booted.show(RECORDER)
        assert (now["ActiveState"], now["MainPID"], now["NRestarts"]) == (
            "active", recorder["MainPID"], recorder["NRestarts"])  # fmt: skip
        status = booted.status()
        assert status["cameras"]["cam0"]["segments"] >= closed + took / 2 - 5, status["cameras"]
        assert status["tiers"]["spool"]["segments"] > 0  # spilled, not lost, while it hung
    finally:
        booted.stop()
        print((tmp_path / "nspawn.log").read_text(errors="replace")[-1500:])


def test_web_units_under_real_systemd(provisioned, tmp_path):  # noqa: F811
    """livecam-web.service on the node and livecam-nas-web.service on the NAS, each in
    its booted tree with its whole sandbox: active, not root on the node, and 401
    without the token, 200 with it (the vault's token, from the 0600 file)."""
    nas = provisioned.trees["nas"]
    # The NAS page needs an index; the audit timer makes it, here made at once.
    fleet.sh("chroot", str(nas), "/opt/livecam/venv/bin/livecam", "nas", "index",
             "-c", "/etc/livecam/nas.yaml", timeout=120)  # fmt: skip
    for name, unit, path, user in (
        (WEB_NODE, "livecam-web.service", "/api/status", "livecam"),
        ("nas", "livecam-nas-web.service", "/api/cameras", "root"),
    ):
        booted = Booted(provisioned.trees[name], tmp_path / f"nspawn-{name}.log")
        try:
            wait_for(lambda b=booted, u=unit: b.show(u)["ActiveState"] == "active", 120,
                     f"{unit} active")  # fmt: skip
            show = booted.show(unit)
            assert (show.get("User") or "root") == user, show.get("User")
            out = booted.run("python3", "-c", fleet.web_probe(WEB_TOKEN, path))
            print(f"{name} {unit}: {out.stdout.strip()} (without, with the token)")
            assert out.stdout.split() == ["401", "200"], out.stdout + out.stderr
            journal = booted.run("journalctl", "--no-pager", "-u", unit).stdout
            assert "Traceback" not in journal, journal[-3000:]
        finally:
            booted.stop()
            print((tmp_path / f"nspawn-{name}.log").read_text(errors="replace")[-1500:])


@pytest.fixture
def starved_node(provisioned):  # noqa: F811
    """node1's tree with a spool of 300K and no NAS in reach (its network is private):
    it spills, evicts and logs; its own config again afterwards."""
    tree = provisioned.trees["node1"]
    config = tree / "etc/livecam/livecam.yaml"
    original = config.read_text()
    changed = yaml.safe_load(original)
    changed["spool"] = {**changed.get("spool", {}), "max_bytes": "300K", "min_free_bytes": 0}
    changed["spill_after"] = "1s"
    config.write_text(yaml.safe_dump(changed, sort_keys=False))
    try:
        yield tree
    finally:
        config.write_text(original)


def test_the_journal_knows_each_lines_priority(starved_node, tmp_path):
    """Under systemd every line carries its priority and no timestamp of livecam's own:
    ``journalctl -p warning`` finds EVICTED and SPOOL FAILED and no INFO line."""
    booted = Booted(starved_node, tmp_path / "nspawn.log")
    spool = "/var/lib/livecam/spool"
    try:
        wait_for(lambda: booted.show(SHIPPER)["ActiveState"] == "active", 120, "shipper active")

        def warnings(priority: str = "warning") -> str:
            argv = ("journalctl", "--no-pager", "-o", "cat", "-p", priority, "-u", SHIPPER)
            return booted.run(*argv).stdout

        wait_for(lambda: "EVICTED" in warnings(), 120, "an eviction at warning priority", 1)
        # The spool's disk turns read-only under the running shipper (in its unit's own
        # mount namespace: a remount does not reach it from the container's).
        pid = booted.show(SHIPPER)["MainPID"]
        # A remount to read-only is refused (EBUSY) while a file on that mount is open for
        # writing, and the shipper spills without pause: try again until it lands between two.
        remount = f"mount -o remount,bind,ro {spool}"
        retry = f"for i in $(seq 100); do {remount} 2>/dev/null && exit 0; sleep 0.05; done"
        readonly = f"mount --bind {spool} {spool} && {{ {retry}; {remount}; }}"
        booted.run("nsenter", "-t", pid, "-m", "sh", "-c", readonly, check=True)
        wait_for(lambda: "SPOOL FAILED" in warnings("err"), 60, "SPOOL FAILED at err priority", 1)
        everything = booted.run("journalctl", "--no-pager", "-o", "cat", "-u", SHIPPER).stdout
        assert "INFO livecam.shipper[" in everything and "spilled " in everything
        shown = warnings().splitlines()
        assert not [line for line in shown if " INFO " in line or "spilled " in line], shown
        evicted = next(line for line in shown if "EVICTED" in line)
        assert evicted.startswith("WARNING livecam.shipper["), evicted  # no second timestamp
        failed = next(line for line in warnings("err").splitlines() if "SPOOL FAILED" in line)
        assert failed.startswith("ERROR livecam.shipper["), failed
    finally:
        booted.stop()
        print((tmp_path / "nspawn.log").read_text(errors="replace")[-1500:])
