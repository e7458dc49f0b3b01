"""The livecam_monitor role, converged into a real Debian tree and its Prometheus started.

The tree is an overlay over tests/ansible's cached debootstrap base; the role
runs through the chroot connection (apt installs prometheus and alertmanager from
the machine's Debian mirror), twice: the second run must change nothing. Then the
tree's own promtool and amtool accept what it wrote, and the tree's own
Prometheus starts on that configuration with livecam's rules loaded. Run as root
under ``flock /tmp/lc-lock-ansible`` and ``flock /tmp/lc-lock-monitoring``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request

import pytest
import yaml

from tests.ansible import fleet
from tests.core.node import wait_for
from tests.monitoring.fleet import RULES, free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: overlays and chroot"),
    pytest.mark.skipif(not shutil.which("debootstrap"), reason="needs debootstrap"),
]

PLAY = [{"name": "Monitoring host", "hosts": "livecam_monitor",
         "roles": [{"role": "livecam_monitor"}]}]  # fmt: skip


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    cleanup = fleet.Cleanup()
    work = tmp_path_factory.mktemp("monitor")
    try:
        root = fleet.overlay_tree(fleet.base_tree(), work, "monitor", cleanup)
        fleet.mount_runtime(root, cleanup)
        yield work, root
    finally:
        errors = cleanup.run()
        assert not errors, errors


def converge(work, root) -> dict:
    inventory = {"all": {
        "vars": {"ansible_python_interpreter": "/usr/bin/python3",
                 "livecam_monitor_services_start": False},
        "children": {
            "livecam_monitor": {"hosts": {"monitor": {
                "ansible_host": str(root), "ansible_connection": "community.general.chroot"}}},
            "livecam_nodes": {"hosts": {
                "node01": {"ansible_host": "node01.example.lan"},
                "node02": {"ansible_host": "10.0.0.2", "livecam_node_metrics_address": "10.9.0.2",
                           "livecam_node_metrics_port": 9200},
            }},
            "livecam_nas": {"hosts": {"nas01": {"ansible_host": "nas.example.lan"}}},
        },
    }}  # fmt: skip
    (work / "inventory.yml").write_text(yaml.safe_dump(inventory))
    (work / "play.yml").write_text(yaml.safe_dump(PLAY))
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(fleet.REPO / "ansible" / "roles"),
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_LOCAL_TEMP": str(work / "ansible-tmp"),
           "PATH": f"{fleet.VENV_BIN}:{os.environ.get('PATH', '')}"}  # fmt: skip
    proc = subprocess.run(
        [str(fleet.VENV_BIN / "ansible-playbook"), "-i", str(work / "inventory.yml"),
         str(work / "play.yml")],
        capture_output=True, text=True, timeout=900, env=env, cwd=work,
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-8000:]
    recap = {m[1]: tuple(int(x) for x in m.groups()[1:]) for m in fleet.RECAP_RE.finditer(out)}
    return recap["monitor"]


def test_monitor_role_converges_and_its_prometheus_loads_the_rules(tree):
    work, root = tree
    first = converge(work, root)
    print(f"\nfirst run (ok, changed, unreachable, failed): {first}")
    assert first[2:] == (0, 0) and first[1] > 0
    second = converge(work, root)
    assert second[1] == 0, f"second run changed {second[1]} tasks"

    config = yaml.safe_load((root / "etc/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "livecam"]
    assert job["static_configs"] == [
        {"targets": ["node01.example.lan:9100"], "labels": {"node": "node01"}},
        {"targets": ["10.9.0.2:9200"], "labels": {"node": "node02"}},
    ]
    # The NAS: its node_exporter, with the audit's metrics, as a job of its own.
    (nas_job,) = [j for j in config["scrape_configs"] if j["job_name"] == "livecam_nas"]
    assert nas_job["static_configs"] == [
        {"targets": ["nas.example.lan:9100"], "labels": {"nas": "nas01"}},
    ]
    assert (root / "etc/prometheus/rules/livecam.rules.yml").read_text() == RULES.read_text()
    dashboard = root / "var/lib/grafana/dashboards/livecam/livecam-dashboard.json"
    assert json.loads(dashboard.read_text())["uid"] == "livecam-fleet"
    provisioning = root / "etc/grafana/provisioning/dashboards/livecam.yml"
    assert "/var/lib/grafana/dashboards/livecam" in provisioning.read_text()
    for check in (["promtool", "check", "config", "/etc/prometheus/prometheus.yml"],
                  ["amtool", "check-config", "/etc/prometheus/alertmanager.yml"]):  # fmt: skip
        out = fleet.sh("chroot", str(root), *check, check=False)
        assert out.returncode == 0, out.stdout + out.stderr

    # The tree's own Prometheus on that configuration: the rules are loaded.
    port = free_port()
    prom = subprocess.Popen(
        ["chroot", str(root), "/usr/bin/prometheus",
         "--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/tmp/prometheus",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:

        def rules():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/rules") as r:
                    return json.load(r)["data"]["groups"]
            except OSError:
                return None

        groups = wait_for(rules, 60, "the tree's prometheus answers")
        names = [rule["name"] for g in groups for rule in g["rules"]]
        wanted = [
            r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]
        ]
        assert names == wanted
    finally:
        prom.terminate()
        prom.wait(timeout=30)
