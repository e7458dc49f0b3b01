"""A monitored test fleet: livecam nodes in network namespaces, node_exporter, Prometheus.

Everything is real: each node is a network namespace (``lcmon-*``) joined to this
one by a veth pair, running ``livecam run`` with ffmpeg test-pattern cameras,
``livecam metrics --textfile`` and Debian's ``prometheus-node-exporter`` with its
textfile collector on the node's own address. Prometheus (Debian's) runs here on a
free loopback port with the shipped rules and scrapes every node through its veth.

A node ships with the ``nfs`` transport into a tmpfs "NAS share". ``ip netns
exec`` gives each process a private copy of the mounts, so the share is cut and
restored inside the node's own mount namespace (``nsenter -m``): to the node it
is exactly an NFS share gone away.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import VENV_BIN, livecam_cmd
from tests.core.node import Node, Share, wait_for

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "livecam.rules.yml"
DASHBOARD = REPO / "monitoring" / "livecam-dashboard.json"
NODE_EXPORTER_PORT = 9100  # each node has its own address, so no port can clash
SUITE = f"lcmon-{os.getpid() % 100000}"


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=30)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MonitoredNode(Node):
    """A livecam node in its own network namespace, with its metrics exporter."""

    def __init__(
        self, root: Path, nas: Path, index: int, name: str, share_size: str = "256M",
        **overrides: Any,
    ):  # fmt: skip
        self.name = name
        self.netns = f"{SUITE}-{name}"
        subnet = 10 + index
        self.host_ip = f"10.213.{subnet}.1"
        self.ip = f"10.213.{subnet}.2"
        self.veth = f"lcm{os.getpid() % 100000}{name}"[:14]
        root.mkdir(parents=True)
        # The share's mount point must not sit on a tmpfs itself: unmounted, it would
        # still be "a tmpfs" to the transport's mount check.
        self.share = Share(nas, size=share_size)
        transport = {"plugin": "nfs", "path": str(self.share.mnt), "fstypes": ["tmpfs"]}
        super().__init__(root, transport, node=name, segment_seconds=2, **overrides)
        self.textfile_dir = root / "metrics"
        self.textfile_dir.mkdir()
        self.textfile = self.textfile_dir / "livecam.prom"
        self.run_proc: subprocess.Popen[bytes] | None = None
        self.writer: subprocess.Popen[bytes] | None = None
        self.exporter: subprocess.Popen[bytes] | None = None
        self._netns_up()

    @property
    def target(self) -> str:
        return f"{self.ip}:{NODE_EXPORTER_PORT}"

    def _netns_up(self) -> None:
        ns, host, peer = self.netns, self.veth + "h", self.veth + "n"
        sh("ip", "netns", "add", ns)
        sh("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", ns)
        sh("ip", "addr", "add", f"{self.host_ip}/30", "dev", host)
        sh("ip", "link", "set", host, "up")
        sh("ip", "-n", ns, "addr", "add", f"{self.ip}/30", "dev", peer)
        sh("ip", "-n", ns, "link", "set", peer, "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")

    def _in_netns(self, argv: list[str], log_name: str) -> subprocess.Popen[bytes]:
        with open(self.root / log_name, "ab") as log:
            proc = subprocess.Popen(
                ["ip", "netns", "exec", self.netns, *argv],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.procs.append(proc)
        return proc

    def start_all(self) -> None:
        self.run_proc = self._in_netns(livecam_cmd("-c", str(self.config_file), "run"), "run.log")
        self.writer = self._in_netns(
            livecam_cmd("-c", str(self.config_file), "metrics", "--textfile", str(self.textfile),
                        "--interval", "1"),
            "metrics.log",
        )  # fmt: skip
        self.exporter = self._in_netns(
            ["prometheus-node-exporter", f"--web.listen-address={self.target}",
             "--collector.disable-defaults", "--collector.textfile",
             f"--collector.textfile.directory={self.textfile_dir}"],
            "node_exporter.log",
        )  # fmt: skip

    # --- faults ------------------------------------------------------------------------

    def _nsenter_mount(self, *argv: str) -> None:
        assert self.run_proc is not None
        sh("nsenter", "-t", str(self.run_proc.pid), "-m", *argv)

    def cut_share(self) -> None:
        """The NAS share goes away under the node, as an NFS server that went down."""
        self._nsenter_mount("umount", "-l", str(self.share.mnt))

    def restore_share(self) -> None:
        self._nsenter_mount("mount", "--bind", str(self.share.store), str(self.share.mnt))

    def kill_livecam(self) -> None:
        """SIGKILL ``livecam run`` with every recorder, ffmpeg and the shipper under it."""
        assert self.run_proc is not None
        pids = [self.run_proc.pid]
        deadline = time.monotonic() + 10
        # Until none is left: a recorder restarting its camera may start an ffmpeg
        # between the listing and its own SIGKILL (PDEATHSIG then ends it, a moment later).
        while pids and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.2)
            pids = [p for p in self.pids("livecam") + self.pids("ffmpeg") if p != self.writer_pid()]
        self.run_proc.wait(timeout=10)

    def writer_pid(self) -> int:
        return self.writer.pid if self.writer else -1

    def kill_writer(self) -> None:
        assert self.writer is not None
        self.writer.kill()
        self.writer.wait(timeout=10)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self.cleanup()
        sh("ip", "netns", "del", self.netns, check=False)
        sh("ip", "link", "del", self.veth + "h", check=False)
        self.share.close()


def monitor_role_config(
    root: Path, nodes: dict[str, str], alertmanager: str, nas: dict[str, str] | None = None
) -> None:
    """Render the livecam_monitor role's rules, prometheus.yml and alertmanager.yml
    into ``root``.

    The role's own tasks (tasks/prometheus.yml, tasks/alertmanager.yml) run with
    ansible-playbook against an inventory of ``nodes`` and ``nas`` (name -> address),
    so the scrape targets under test are the ones the role generates from an inventory.
    """
    inventory = {"all": {"children": {
        "livecam_nodes": {"hosts": {
            name: {"livecam_node_metrics_address": address,
                   "livecam_node_metrics_port": NODE_EXPORTER_PORT}
            for name, address in nodes.items()}},
        "livecam_nas": {"hosts": {
            name: {"livecam_nas_metrics_address": address,
                   "livecam_nas_metrics_port": NODE_EXPORTER_PORT}
            for name, address in (nas or {}).items()}},
    }}}  # fmt: skip
    (root / "inventory.yml").write_text(yaml.safe_dump(inventory))
    play = [{"hosts": "localhost", "connection": "local", "gather_facts": False,
             "tasks": [{"ansible.builtin.include_role": {
                 "name": "livecam_monitor", "tasks_from": part}}
                 for part in ("prometheus.yml", "alertmanager.yml")]}]  # fmt: skip
    (root / "play.yml").write_text(yaml.safe_dump(play))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(REPO / "ansible" / "roles"),
           "ANSIBLE_NOCOLOR": "1", "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}"}  # fmt: skip
    out = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(root / "inventory.yml"),
         str(root / "play.yml"),
         "-e", f"__livecam_monitor_config_dir={root}",
         "-e", "livecam_monitor_scrape_interval=1s",
         "-e", "livecam_monitor_evaluation_interval=1s",
         "-e", f"livecam_monitor_alertmanager_address={alertmanager}",
         "-e", '{"livecam_monitor_services_start": false}'],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert (root / "rules" / RULES.name).read_text() == RULES.read_text()


class Prometheus:
    """Debian's prometheus on a free loopback port, configured by the livecam_monitor role."""

    def __init__(self, root: Path, nodes: dict[str, str], nas: dict[str, str] | None = None):
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        root.mkdir(parents=True, exist_ok=True)
        self.alertmanager_port = free_port()
        self.alertmanager_url = f"http://127.0.0.1:{self.alertmanager_port}"
        monitor_role_config(root, nodes, f"127.0.0.1:{self.alertmanager_port}", nas)
        with open(root / "alertmanager.log", "ab") as log:
            self.alertmanager = subprocess.Popen(
                ["prometheus-alertmanager", f"--config.file={root / 'alertmanager.yml'}",
                 f"--storage.path={root / 'alertmanager'}",
                 f"--web.listen-address=127.0.0.1:{self.alertmanager_port}",
                 "--cluster.listen-address="],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        self.log = root / "prometheus.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                ["prometheus", f"--config.file={root / 'prometheus.yml'}",
                 f"--storage.tsdb.path={root / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h"],
                stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        wait_for(self._ready, 60, "prometheus is ready", interval=0.5)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.load(r)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        return list(data["result"]) if data["resultType"] == "vector" else [data["result"]]

    def alerts(self, name: str, state: str = "firing", **labels: str) -> list[dict[str, Any]]:
        return [
            a
            for a in self.api("alerts")["alerts"]
            if a["labels"].get("alertname") == name
            and a["state"] == state
            and all(a["labels"].get(k) == v for k, v in labels.items())
        ]

    def targets_up(self, job: str = "livecam", label: str = "node") -> dict[str, float]:
        return {r["metric"][label]: float(r["value"][1]) for r in self.query(f'up{{job="{job}"}}')}

    def received(self, name: str, **labels: str) -> list[dict[str, Any]]:
        """The alerts named ``name`` that Alertmanager holds (what it would notify)."""
        with urllib.request.urlopen(f"{self.alertmanager_url}/api/v2/alerts", timeout=10) as r:
            alerts = json.load(r)
        return [a for a in alerts if a["labels"].get("alertname") == name
                and all(a["labels"].get(k) == v for k, v in labels.items())]  # fmt: skip

    def close(self) -> None:
        for proc in (self.proc, self.alertmanager):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def wait_firing(self, name: str, since: float, timeout: float, **labels: str) -> float:
        """Wait until alert ``name`` fires; return seconds from ``since`` (the fault)."""
        wait_for(lambda: self.alerts(name, **labels), timeout, f"{name} {labels} fires", 0.5)
        took = time.monotonic() - since
        print(f"  {name} {labels}: firing {took:.1f}s after the fault")
        return took
