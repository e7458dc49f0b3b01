"""The node role's Type=notify units under a real systemd: a provisioned node tree booted
with ``systemd-nspawn --boot``.

The tree is the one tests/ansible converges with site.yml (its ``provisioned``
fixture, a debootstrapped Debian under /var/cache/livecam-tests). Booted, its
units run for real: the recorder is active only once READY came (its first
frame), a SIGSTOPped recorder is killed and restarted by systemd's watchdog,
``systemctl status`` shows each STATUS= line, and node_exporter serves livecam's
metrics from the RAM textfile. Run as root under ``flock /tmp/lc-lock-ansible``
and ``flock /tmp/lc-lock-monitoring``.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.ansible import fleet
from tests.ansible.conftest import (
    WEB_NODE,
    WEB_TOKEN,
    provisioned,  # noqa: F401 - the session fixture
)
from tests.core.node import wait_for

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not shutil.which("systemd-nspawn"), reason="needs systemd-container"),
]

RECORDER = "livecam-record@cam0.service"


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

    def _init_pid(self) -> int | None:
        for pid in _descendants(self.proc.pid):
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/comm").read_text().strip() == "systemd":
                    return pid
        return None

    def run(self, *argv: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.init), "-a", *argv], capture_output=True,
                              text=True, timeout=60, check=check)  # fmt: skip

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
