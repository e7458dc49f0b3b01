"""site.yml converges real Debian trees, and a second run changes nothing."""

from __future__ import annotations

import re

import pytest

from tests.ansible import fleet
from tests.ansible.conftest import ALL_NODES, NODES, SFTP_NODE, SFTP_PORT

pytestmark = pytest.mark.slow


def chroot(tree, *argv, **kw):
    return fleet.sh("chroot", str(tree), *argv, **kw)


def test_first_run_converges(provisioned):
    seconds, recap = provisioned.runs["first"]
    print(f"first run {seconds:.0f}s: {recap}")
    assert set(recap) >= {*ALL_NODES, "nas", "localhost"}
    for host, (_ok, changed, unreachable, failed) in recap.items():
        assert (unreachable, failed) == (0, 0), host
        if host != "localhost":
            assert changed > 0, host


def test_second_run_changes_nothing(provisioned):
    out, recap = fleet.ansible_playbook(provisioned.inventory)
    changed = {h: r[1] for h, r in recap.items()}
    assert changed and not any(changed.values()), out[-6000:]


def test_check_diff_reports_no_change(provisioned):
    out, recap = fleet.ansible_playbook(provisioned.inventory, "--check", "--diff")
    changed = {h: r[1] for h, r in recap.items()}
    assert changed and not any(changed.values()), out[-6000:]
    assert "--- before" not in out, out[-6000:]


@pytest.mark.parametrize("node", ALL_NODES)
def test_node_tree(provisioned, node):
    tree = provisioned.trees[node]
    fstab = [line.split() for line in (tree / "etc/fstab").read_text().splitlines()
             if "/run/livecam/buffer" in line]  # fmt: skip
    assert len(fstab) == 1 and fstab[0][0] == "tmpfs" and fstab[0][2] == "tmpfs", fstab
    assert "size=32M" in fstab[0][3] and "noexec" in fstab[0][3]

    cameras = {"node1": ["cam0", "cam1"]}.get(node, ["cam0"])
    wants = tree / "etc/systemd/system/multi-user.target.wants"
    enabled = sorted(p.name for p in wants.glob("livecam-*"))
    assert enabled == sorted(["livecam-ship.service", "livecam-metrics.service",
                              *(f"livecam-record@{c}.service" for c in cameras)])  # fmt: skip

    recorder = (tree / "etc/systemd/system/livecam-record@.service").read_text()
    # SIGTERM to livecam alone (it stops ffmpeg gracefully); recorders stop before the shipper.
    assert "KillMode=mixed" in recorder
    assert re.search(r"^After=.*livecam-ship\.service", recorder, re.M)
    assert "DeviceAllow=char-video4linux rw" in recorder

    check = chroot(tree, "/opt/livecam/venv/bin/livecam", "-c", "/etc/livecam/livecam.yaml",
                   "check-config", check=False)  # fmt: skip
    print(check.stdout)
    assert check.returncode == 0, check.stderr
    assert f"node {node}, site test" in check.stdout

    known = (tree / "etc/livecam/ssh/known_hosts").read_text().split()
    nas_key = (provisioned.trees["nas"] / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
    pinned = f"[10.77.0.1]:{SFTP_PORT}" if node == SFTP_NODE else "10.77.0.1"
    assert known == [pinned, *nas_key[:2]]
    transport = "sftp" if node == SFTP_NODE else "rsync"
    assert f"transport: {transport} to livecam" in check.stdout
    key = tree / "etc/livecam/ssh/id_ed25519"
    assert oct(key.stat().st_mode & 0o777) == "0o600"


def test_nas_tree(provisioned):
    nas = provisioned.trees["nas"]
    lines = [ln for ln in (nas / "var/lib/livecam-nas/.ssh/authorized_keys").read_text()
             .splitlines() if ln and not ln.startswith("#")]  # fmt: skip
    assert len(lines) == len(NODES)
    # -no-overwrite where the NAS's rrsync has it (rsync >= 3.4), never a refused option.
    rrsync_help = fleet.sh("chroot", str(nas), "rrsync", "-h", check=False).stdout
    options = "-wo -no-del" + (" -no-overwrite" if "-no-overwrite" in rrsync_help else "")
    for node in NODES:
        pub = (provisioned.trees[node] / "etc/livecam/ssh/id_ed25519.pub").read_text().split()
        line = next(ln for ln in lines if pub[1] in ln)
        assert line.startswith(f'command="rrsync {options} /srv/livecam/test/{node}",restrict '), (
            line
        )
        d = nas / f"srv/livecam/test/{node}"
        assert d.is_dir() and oct(d.stat().st_mode & 0o777) == "0o750"
    # Links are absolute inside the tree: check the link, not its target.
    assert (nas / "etc/systemd/system/timers.target.wants/livecam-retention.timer").is_symlink()

    # The sftp node: its own account, chrooted to the site, owning only its directory.
    account = f"livecam-{SFTP_NODE}"
    pub = (provisioned.trees[SFTP_NODE] / "etc/livecam/ssh/id_ed25519.pub").read_text().split()
    keys = (nas / f"etc/ssh/livecam_authorized_keys/{account}.keys").read_text().split()
    assert keys[:2] == pub[:2]
    dropin = (nas / "etc/ssh/sshd_config.d/livecam.conf").read_text()
    assert f"Match User {account}" in dropin and "ChrootDirectory /srv/livecam/test" in dropin
    assert "ForceCommand internal-sftp -P remove,rmdir,posix-rename,setstat,fsetstat," in dropin
    # The sftp node connects to SFTP_PORT: sshd listens there, and on 22 still.
    assert f"Port 22\nPort {SFTP_PORT}\n" in dropin
    # Room for every ssh node of the inventory reconnecting at once, two each.
    ssh_nodes = len(ALL_NODES)
    assert f"MaxStartups {10 + 2 * ssh_nodes}:30:{110 + 2 * ssh_nodes}\n" in dropin
    d = nas / f"srv/livecam/test/{SFTP_NODE}"
    owner = fleet.sh("chroot", str(nas), "stat", "-c", "%U %a", f"/srv/livecam/test/{SFTP_NODE}")
    assert d.is_dir() and owner.stdout.split() == [account, "750"]
    # sshd accepts the whole configuration, drop-in included. (/run/sshd is what
    # ssh.service's RuntimeDirectory makes on a booted system.)
    (nas / "run/sshd").mkdir(mode=0o755, exist_ok=True)
    check = fleet.sh("chroot", str(nas), "/usr/sbin/sshd", "-t", check=False)
    assert check.returncode == 0, check.stderr

    # livecam on the NAS, from the nodes' wheel: config, timer, and a working audit.
    assert "root: /srv/livecam" in (nas / "etc/livecam/nas.yaml").read_text()
    assert (nas / "etc/systemd/system/timers.target.wants/livecam-nas-audit.timer").is_symlink()
    audit = fleet.sh("chroot", str(nas), "/opt/livecam/venv/bin/livecam", "nas", "audit",
                     "-c", "/etc/livecam/nas.yaml", "--prometheus",
                     "/var/lib/prometheus/node-exporter/livecam_nas.prom", check=False)  # fmt: skip
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert (nas / "srv/livecam/.livecam/index.sqlite").is_file()
    prom = (nas / "var/lib/prometheus/node-exporter/livecam_nas.prom").read_text()
    assert "livecam_nas_audit_timestamp_seconds" in prom


def test_units_are_hardened(provisioned):
    """systemd-analyze rates every livecam unit at exposure 2.0 or lower."""
    scores = {}
    units = {
        provisioned.trees["node1"]: [
            "livecam-record@cam0.service",
            "livecam-ship.service",
            "livecam-metrics.service",
        ],
        provisioned.trees["nas"]: ["livecam-retention.service", "livecam-nas-audit.service"],
    }
    for tree, names in units.items():
        for unit in names:
            # The tree's own systemd-analyze, reading the tree's units.
            out = chroot(tree, "systemd-analyze", "security", "--offline=true", "--no-pager",
                         unit, check=False)  # fmt: skip
            m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
            assert m, out.stdout + out.stderr
            scores[unit] = float(m.group(1))
    print("\nsystemd-analyze security exposure:")
    for unit, score in scores.items():
        print(f"  {unit}: {score}")
    assert all(score <= 2.0 for score in scores.values()), scores
