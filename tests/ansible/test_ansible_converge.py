"""site.yml converges real Debian trees, and a second run changes nothing."""

from __future__ import annotations

import os
import re

import pytest
import yaml

from tests.ansible import fleet
from tests.ansible.conftest import (
    ALL_NODES,
    NODES,
    SFTP_NODE,
    SFTP_PORT,
    SMB_NODE,
    SMB_PORT,
    WEB_NODE,
    WEB_TOKEN,
)

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
    web = ["livecam-web.service"] if node == WEB_NODE else []
    assert enabled == sorted(["livecam-ship.service", "livecam-metrics.service", *web,
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

    if node == SMB_NODE:  # a password from the vault, no ssh key
        assert f"transport: smb to livecam-{node}@10.77.0.1:{SMB_PORT}/livecam/test/{node}" in (
            check.stdout
        )
        secret = tree / "etc/livecam/transport.secret"
        assert oct(secret.stat().st_mode & 0o777) == "0o600"
        assert not (tree / "etc/livecam/ssh/id_ed25519").exists()
        return
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
    # -no-overwrite always: rrsync's own where it has it (rsync >= 3.4), else livecam's
    # front (Debian 12's rsync 3.2.7, as in this tree), installed for root alone to change.
    rrsync_help = fleet.sh("chroot", str(nas), "rrsync", "-h", check=False).stdout
    front = nas / "usr/local/libexec/livecam-rrsync"
    if "-no-overwrite" in rrsync_help:
        command = "rrsync"
        assert not front.exists()
    else:
        command = "/usr/local/libexec/livecam-rrsync"
        assert front.read_bytes() == (fleet.REPO / "ansible/roles/livecam_nas/files"
                                      / "livecam-rrsync").read_bytes()  # fmt: skip
        owner = fleet.sh(
            "chroot", str(nas), "stat", "-c", "%U %a", "/usr/local/libexec/livecam-rrsync"
        )
        assert owner.stdout.split() == ["root", "755"]
    options = "-wo -no-del -no-lock -no-overwrite"
    for node in NODES:
        pub = (provisioned.trees[node] / "etc/livecam/ssh/id_ed25519.pub").read_text().split()
        line = next(ln for ln in lines if pub[1] in ln)
        assert line.startswith(
            f'command="{command} {options} /srv/livecam/test/{node}",restrict '
        ), line
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
    ssh_nodes = len([n for n in ALL_NODES if n != SMB_NODE])  # the smb node uses no ssh
    assert f"MaxStartups {10 + 2 * ssh_nodes}:30:{110 + 2 * ssh_nodes}\n" in dropin
    d = nas / f"srv/livecam/test/{SFTP_NODE}"
    owner = fleet.sh("chroot", str(nas), "stat", "-c", "%U %a", f"/srv/livecam/test/{SFTP_NODE}")
    assert d.is_dir() and owner.stdout.split() == [account, "750"]
    # sshd accepts the whole configuration, drop-in included. (/run/sshd is what
    # ssh.service's RuntimeDirectory makes on a booted system.)
    (nas / "run/sshd").mkdir(mode=0o755, exist_ok=True)
    check = fleet.sh("chroot", str(nas), "/usr/sbin/sshd", "-t", check=False)
    assert check.returncode == 0, check.stderr

    # The smb node: a Samba user on the role's append-only share, on its port too.
    smb_conf = (nas / "etc/samba/livecam.conf").read_text()
    assert f"smb ports = 445 {SMB_PORT}" in smb_conf
    assert "vfs objects = worm" in smb_conf and "worm:grace_period = 0" in smb_conf
    assert "create mask = 0440" in smb_conf
    assert "include = /etc/samba/livecam.conf" in (nas / "etc/samba/smb.conf").read_text()
    testparm = fleet.sh("chroot", str(nas), "testparm", "-s", check=False)
    assert testparm.returncode == 0 and "worm:grace_period = 0" in testparm.stdout, testparm.stderr
    users = fleet.sh("chroot", str(nas), "pdbedit", "-L").stdout
    assert f"livecam-{SMB_NODE}:" in users
    owner = fleet.sh("chroot", str(nas), "stat", "-c", "%U %a", f"/srv/livecam/test/{SMB_NODE}")
    assert owner.stdout.split() == [f"livecam-{SMB_NODE}", "750"]

    # livecam on the NAS, from the nodes' wheel: config, timer, and a working audit.
    config = yaml.safe_load((nas / "etc/livecam/nas.yaml").read_text())
    assert config["root"] == "/srv/livecam"
    # Every camera the inventory deploys, as SITE/NODE/CAMERA: the audit holds each to
    # account, footage or not (none has shipped yet here).
    deployed = [f"test/{node}/{cam}" for node in ALL_NODES
                for cam in (["cam0", "cam1"] if node == "node1" else ["cam0"])]  # fmt: skip
    assert config["cameras"] == deployed, config
    assert (nas / "etc/systemd/system/timers.target.wants/livecam-nas-audit.timer").is_symlink()
    audit = fleet.sh("chroot", str(nas), "/opt/livecam/venv/bin/livecam", "nas", "audit",
                     "-c", "/etc/livecam/nas.yaml", "--prometheus",
                     "/var/lib/prometheus/node-exporter/livecam_nas.prom", check=False)  # fmt: skip
    assert audit.returncode in (0, 1), audit.stdout + audit.stderr  # 2: a config error
    assert (nas / "srv/livecam/.livecam/index.sqlite").is_file()
    prom = (nas / "var/lib/prometheus/node-exporter/livecam_nas.prom").read_text()
    assert "livecam_nas_audit_timestamp_seconds" in prom
    for camera in deployed:
        site, node, cam = camera.split("/")
        assert f'livecam_nas_unexplained_gaps{{site="{site}",node="{node}",camera="{cam}"}}' in prom


def test_nas_serves_its_metrics_through_node_exporter(provisioned):
    """The NAS role's node_exporter: the audit's textfile directory, the access rule the
    nodes have, and the role's own textfile for the alert rules. The tree's own
    node_exporter, started with the role's ARGS in a network namespace, serves the
    audit's metrics, the role's, and the recordings volume's."""
    nas = provisioned.trees["nas"]
    default = (nas / "etc/default/prometheus-node-exporter").read_text()
    args = re.search(r'^ARGS="(.*)"$', default, re.M).group(1)
    textfile = "/var/lib/prometheus/node-exporter"
    assert args.split() == [
        "--web.listen-address=:9100",
        f"--collector.textfile.directory={textfile}",
    ]
    dropin = nas / "etc/systemd/system/prometheus-node-exporter.service.d/livecam.conf"
    rule = [ln for ln in dropin.read_text().splitlines() if ln.startswith("IPAddress")]
    node_rule = (provisioned.trees["node1"] / dropin.relative_to(nas)).read_text().splitlines()
    assert rule == ["IPAddressDeny=any", "IPAddressAllow=localhost"]
    assert rule == [ln for ln in node_rule if ln.startswith("IPAddress")]  # the nodes' rule
    wants = nas / "etc/systemd/system/multi-user.target.wants/prometheus-node-exporter.service"
    assert wants.is_symlink()
    setup = (nas / "var/lib/prometheus/node-exporter/livecam_nas_setup.prom").read_text()
    # "*:0/15" plus the timer's 60 s of random delay; the root is on the tree's "/".
    assert "\nlivecam_nas_audit_interval_seconds 960\n" in setup
    assert 'livecam_nas_root_info{mountpoint="/",root="/srv/livecam"} 1' in setup
    fleet.sh("chroot", str(nas), "/opt/livecam/venv/bin/livecam", "nas", "audit",
             "-c", "/etc/livecam/nas.yaml", "--prometheus",
             "/var/lib/prometheus/node-exporter/livecam_nas.prom", check=False)  # fmt: skip
    probe = ("import time, urllib.request as u\n"
             "for _ in range(300):\n"
             "    try:\n"
             "        r = u.urlopen('http://127.0.0.1:9100/metrics', timeout=5)\n"
             "        print(r.read().decode())\n"
             "        break\n"
             "    except OSError:\n"
             "        time.sleep(0.1)\n")  # fmt: skip
    exporter = f"chroot --userspec=prometheus:prometheus {nas} /usr/bin/prometheus-node-exporter"
    script = f'ip link set lo up; {exporter} {args} & python3 -c "$PROBE"; kill $!; wait'
    out = fleet.sh("unshare", "--net", "--mount", "--fork", "sh", "-c",
                   f"mount -t proc proc {nas}/proc && {script}", timeout=120,
                   env={**os.environ, "PROBE": probe})  # fmt: skip
    metrics = out.stdout
    for wanted in ("livecam_nas_audit_timestamp_seconds ", "livecam_nas_audit_interval_seconds 960",
                   'livecam_nas_unexplained_gaps{camera="cam0",node="node1",site="test"}',
                   "node_filesystem_avail_bytes{"):  # fmt: skip
        assert wanted in metrics, (wanted, out.stderr[-2000:])


def test_units_are_hardened(provisioned):
    """systemd-analyze rates every livecam unit at exposure 2.0 or lower."""
    scores = {}
    units = {
        provisioned.trees["node1"]: [
            "livecam-record@cam0.service",
            "livecam-ship.service",
            "livecam-metrics.service",
            "livecam-web.service",
        ],
        provisioned.trees["nas"]: [
            "livecam-retention.service",
            "livecam-nas-audit.service",
            "livecam-nas-web.service",
        ],
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


def test_web_units_rendered_and_enabled(provisioned):
    """The web page's unit on the node that asked for it and on the NAS: enabled, its
    token from the inventory (the vault) in a file only the service's user may read,
    the unit's ExecStart pointing at that file."""
    for tree, unit, user in (
        (provisioned.trees[WEB_NODE], "livecam-web.service", "livecam"),
        (provisioned.trees["nas"], "livecam-nas-web.service", "root"),
    ):
        assert (tree / "etc/systemd/system/multi-user.target.wants" / unit).is_symlink(), unit
        token = fleet.sh("chroot", str(tree), "stat", "-c", "%U %a", "/etc/livecam/web.token")
        assert token.stdout.split() == [user, "600"], unit
        assert (tree / "etc/livecam/web.token").read_text().strip() == WEB_TOKEN
        text = (tree / "etc/systemd/system" / unit).read_text()
        assert "--token-file /etc/livecam/web.token" in text and "--bind 127.0.0.1" in text
    for node in ALL_NODES:
        if node != WEB_NODE:
            assert not (provisioned.trees[node] / "etc/systemd/system/livecam-web.service").exists()


def test_nas_web_unit_answers_401_then_200(provisioned):
    """The NAS unit's own ExecStart line, run in the NAS tree (after an index exists),
    in a network namespace of its own: 401 without the token, 200 with it."""
    nas = provisioned.trees["nas"]
    fleet.sh("chroot", str(nas), "/opt/livecam/venv/bin/livecam", "nas", "index",
             "-c", "/etc/livecam/nas.yaml", timeout=120)  # fmt: skip
    unit = (nas / "etc/systemd/system/livecam-nas-web.service").read_text()
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1)
    script = (f'ip link set lo up; chroot {nas} {exec_start} & python3 -c "$PROBE"; '
              "kill $!; wait")  # fmt: skip
    probe = fleet.web_probe(WEB_TOKEN, "/api/cameras")
    out = fleet.sh("unshare", "--net", "sh", "-c", script, timeout=120,
                   env={**os.environ, "PROBE": probe})  # fmt: skip
    assert out.stdout.split() == ["401", "200"], out.stdout + out.stderr
