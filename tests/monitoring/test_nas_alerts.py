"""End to end: a real Prometheus with the shipped rules watches a NAS, and its alerts fire.

A real node (``livecam run``, an ffmpeg test-pattern camera, in its own network
namespace) ships into a small tmpfs: the NAS's recordings volume. The NAS is a
namespace of its own running Debian's node_exporter (textfile and filesystem
collectors, as the NAS role configures it), its textfile directory holding what
the audit writes (``livecam nas audit --prometheus``, run every 10 s as the
role's timer would run it) and what the NAS role's own tasks (tasks/alerting.yml,
run here with ansible-playbook) write: the audit timer's interval, from a
10-second calendar, and the recordings root's mount point. Prometheus is
configured by the monitor role from an inventory with the node and the NAS.

Faults, one after the other: a published segment deleted on the NAS
(``LivecamNasUnexplainedGaps``), the audit stopped (``LivecamNasAuditStale``),
the volume filled (``LivecamNasVolumeFilling``, ``for: 1m``), node_exporter
killed (``LivecamNasNotReporting``, ``for: 1m``). Run as root under
``flock /tmp/lc-lock-monitoring``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import VENV_BIN, livecam_cmd
from tests.core.node import wait_for
from tests.monitoring.fleet import (
    NODE_EXPORTER_PORT,
    REPO,
    SUITE,
    MonitoredNode,
    Prometheus,
    sh,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces and mounts"),
    pytest.mark.skipif(
        not (shutil.which("prometheus") and shutil.which("prometheus-node-exporter")),
        reason="needs Debian's prometheus and prometheus-node-exporter (scripts/bootstrap)",
    ),
]

SMALL = {
    "size": [160, 120],
    "fps": 10,
    "bitrate": "300k",
    "preset": "ultrafast",
    "pattern": "testsrc2",
}
AUDIT_EVERY = 10  # seconds: the audit timer's calendar below
CALENDAR = f"*:*:0/{AUDIT_EVERY}"
GRACE = "12s"  # 2 s segments; a loaded machine can ship one 5 s late: that is not a hole
BEHIND = 12  # the victim, counted back from the newest: 22 s old, well past GRACE
NAS_ALERTS = ("LivecamNasUnexplainedGaps", "LivecamNasAuditStale", "LivecamNasVolumeFilling",
              "LivecamNasNotReporting")  # fmt: skip


def nas_role_textfile(work: Path, root: Path, textfile_dir: Path) -> Path:
    """Run the NAS role's tasks/alerting.yml here (ansible-playbook, local): the textfile
    the rules read, for ``root`` and a 10-second audit calendar."""
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "tasks": [{"ansible.builtin.include_role": {
                 "name": "livecam_nas", "tasks_from": "alerting.yml"}}]}]  # fmt: skip
    (work / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "ansible" / "roles"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
           "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}  # fmt: skip
    extra = {"livecam_nas_root": str(root), "livecam_nas_textfile_dir": str(textfile_dir),
             "livecam_nas_wheel": "livecam.whl", "livecam_nas_audit_calendar": CALENDAR,
             # The role's timer adds up to 60 s of random delay; this one none.
             "__livecam_nas_audit_random_delay": 0,
             "ansible_python_interpreter": str(VENV_BIN / "python")}  # fmt: skip
    out = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", "localhost,", str(work / "play.yml"),
         "-e", yaml.safe_dump(extra, default_flow_style=True)],
        capture_output=True, text=True, timeout=300, env=env, cwd=work,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    return textfile_dir / "livecam_nas_setup.prom"


class NasExporter:
    """The NAS's node_exporter in a network namespace of its own (address ``ip``)."""

    def __init__(self, textfile_dir: Path, log: Path):
        self.netns = f"{SUITE}-nas"
        self.veth = f"lcm{os.getpid() % 100000}nas"[:14]
        self.ip = "10.213.40.2"
        sh("ip", "netns", "add", self.netns)
        sh("ip", "link", "add", self.veth + "h", "type", "veth", "peer", "name", self.veth + "n")
        sh("ip", "link", "set", self.veth + "n", "netns", self.netns)
        sh("ip", "addr", "add", "10.213.40.1/30", "dev", self.veth + "h")
        sh("ip", "link", "set", self.veth + "h", "up")
        sh("ip", "-n", self.netns, "addr", "add", f"{self.ip}/30", "dev", self.veth + "n")
        sh("ip", "-n", self.netns, "link", "set", self.veth + "n", "up")
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, "prometheus-node-exporter",
                 f"--web.listen-address={self.ip}:{NODE_EXPORTER_PORT}",
                 "--collector.disable-defaults", "--collector.textfile",
                 "--collector.filesystem", f"--collector.textfile.directory={textfile_dir}"],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def kill(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def close(self) -> None:
        self.kill()
        sh("ip", "netns", "del", self.netns, check=False)
        sh("ip", "link", "del", self.veth + "h", check=False)


class AuditTimer:
    """``livecam nas audit --prometheus`` every AUDIT_EVERY seconds, as the NAS role's
    timer runs it, until stopped."""

    def __init__(self, root: Path, textfile: Path, log: Path):
        self.argv = livecam_cmd("nas", "audit", "--root", str(root), "--grace", GRACE,
                                "--prometheus", str(textfile))  # fmt: skip
        self.log = log
        self.runs = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            t0 = time.monotonic()
            done = subprocess.run(self.argv, capture_output=True, text=True, timeout=120)
            with open(self.log, "a") as log:
                log.write(f"exit {done.returncode}\n{done.stdout[-2000:]}{done.stderr[-2000:]}\n")
            self.runs += 1
            self._stop.wait(max(0.0, AUDIT_EVERY - (time.monotonic() - t0)))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=150)


@pytest.fixture
def watched_nas(tmp_path):
    base = Path(f"/dev/shm/{SUITE}-nasnode")  # a tmpfs: the node's textfile writer wants one
    textfile_dir = tmp_path / "nas-textfile"
    textfile_dir.mkdir()
    node = exporter = timer = prometheus = None
    try:
        # The node ships into a 24 MB tmpfs: the NAS's recordings volume.
        node = MonitoredNode(base, tmp_path / "nas", 20, "cam-node", share_size="24M",
                             cameras={"cam0": SMALL})  # fmt: skip
        setup = nas_role_textfile(tmp_path, node.share.store, textfile_dir)
        exporter = NasExporter(textfile_dir, tmp_path / "nas-node_exporter.log")
        node.start_all()
        timer = AuditTimer(node.share.store, textfile_dir / "livecam_nas.prom",
                           tmp_path / "audit.log")  # fmt: skip
        prometheus = Prometheus(tmp_path / "prometheus", {node.name: node.ip},
                                nas={"nas": exporter.ip})  # fmt: skip
        yield node, exporter, timer, prometheus, setup
    finally:
        if timer is not None:
            timer.stop()
        if prometheus is not None:
            prometheus.close()
        if exporter is not None:
            exporter.close()
        if node is not None:
            node.close()
        shutil.rmtree(base, ignore_errors=True)


def firing(prometheus: Prometheus) -> set[str]:
    return {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]
            if a["state"] == "firing"}  # fmt: skip


def test_nas_faults_fire_the_nas_alerts(watched_nas):
    node, exporter, timer, prom, setup = watched_nas
    store = node.share.store
    nas_instance = f"{exporter.ip}:{NODE_EXPORTER_PORT}"
    # What the NAS role wrote for the rules: the interval from the calendar, and the
    # mount point of the root (the tmpfs itself).
    assert "livecam_nas_audit_interval_seconds 10\n" in setup.read_text()
    assert f'livecam_nas_root_info{{mountpoint="{store}",root="{store}"}} 1' in setup.read_text()

    # Healthy first: both jobs scraped, the audit's figures and the volume's in
    # Prometheus, and no NAS alert for longer than twice the audit's interval.
    wait_for(lambda: prom.targets_up("livecam_nas", "nas") == {"nas": 1.0}, 60, "NAS scraped")
    wait_for(lambda: prom.targets_up() == {node.name: 1.0}, 60, "node scraped")
    segments = lambda: sorted(store.glob("lab/cam-node/cam0/*/*.mp4"))  # noqa: E731
    wait_for(lambda: len(segments()) >= BEHIND + 2, 120, "the node shipped 14 segments")
    wait_for(lambda: prom.query('livecam_nas_unexplained_gaps{camera="cam0"} == 0'), 60,
             "the audit's figures in Prometheus")  # fmt: skip
    assert prom.query(f'node_filesystem_avail_bytes{{mountpoint="{store}"}}')
    time.sleep(2.5 * AUDIT_EVERY)
    assert not firing(prom) & set(NAS_ALERTS), f"a healthy NAS fires {firing(prom)}"
    print()

    # A published segment deleted on the NAS: the next audit finds the hole.
    t0 = time.monotonic()
    victim = segments()[-BEHIND]
    victim.unlink()
    prom.wait_firing("LivecamNasUnexplainedGaps", t0, 60, instance=nas_instance,
                     site="lab", node="cam-node", camera="cam0")  # fmt: skip

    # The audit stops, and the volume fills to 95 %.
    t1 = time.monotonic()
    timer.stop()
    free = os.statvfs(store)
    keep = free.f_blocks * free.f_frsize // 20
    (store / "filler").write_bytes(b"\0" * max(0, free.f_bavail * free.f_frsize - keep))
    took = prom.wait_firing("LivecamNasAuditStale", t1, 60, instance=nas_instance)
    assert took > AUDIT_EVERY, "stale before one interval had passed"
    prom.wait_firing("LivecamNasVolumeFilling", t1, 150, instance=nas_instance,
                     mountpoint=str(store))  # fmt: skip

    # node_exporter dies: the NAS does not answer.
    t2 = time.monotonic()
    exporter.kill()
    prom.wait_firing("LivecamNasNotReporting", t2, 150, instance=nas_instance)
    print(f"  audit runs: {timer.runs}; fired: {sorted(firing(prom) & set(NAS_ALERTS))}")
