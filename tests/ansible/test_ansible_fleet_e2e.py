"""The provisioned fleet records and ships for real, through an outage of one node.

Each node's livecam runs inside its own tree (chroot, as the livecam user, with the
config, key and known_hosts the playbook wrote) in its own network namespace; the
NAS tree's sshd listens in a third. Nothing here was written by hand except the
runtime mounts a booted system would have: /proc, /dev and the buffer tmpfs, mounted
from the tree's own fstab line.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from tests.ansible import fleet
from tests.ansible.conftest import (
    ALL_NODES,
    NAS_ADDRESS,
    SFTP_NODE,
    SFTP_PORT,
    SMB_NODE,
    SMB_PASSWORDS,
    SMB_PORT,
    sftp_transport,
    write_vault,
)
from tests.conftest import sha256
from tests.transports import tamper

pytestmark = pytest.mark.slow

CAMERAS = {"node1": ("cam0", "cam1"), "node2": ("cam0",), SFTP_NODE: ("cam0",),
           SMB_NODE: ("cam0",)}  # fmt: skip
SEQ_RE = re.compile(r"^(?P<cam>[A-Za-z0-9_-]+)-\d{8}T\d{6}(\.\d{3})?Z-(?P<seq>\d+)\.mp4$")
KEY = "/etc/livecam/ssh/id_ed25519"
SSH = (f"ssh -F none -i {KEY} -o IdentitiesOnly=yes -o BatchMode=yes "
       "-o StrictHostKeyChecking=yes -o UserKnownHostsFile=/etc/livecam/ssh/known_hosts "
       "-o ConnectTimeout=5")  # fmt: skip


class Running:
    """The fleet's processes, namespaces and mounts while the test runs."""

    def __init__(self, provisioned, cleanup: fleet.Cleanup, prefix: str):
        self.trees = provisioned.trees
        self.work: Path = provisioned.work
        self.cleanup = cleanup
        self.prefix = prefix
        self.spaces = fleet.netns_fleet(list(ALL_NODES), cleanup, prefix)
        self.recorders: dict[str, list[subprocess.Popen]] = {}
        self.shippers: dict[str, subprocess.Popen] = {}

    def spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = open(self.work / f"{name}.log", "ab")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)  # fmt: skip
        log.close()
        self.cleanup.push(f"stop {name}", lambda: _stop(proc, signal.SIGKILL))
        return proc

    def in_node(self, node: str, *argv: str, user: bool = True) -> list[str]:
        spec = ["--userspec=livecam:livecam"] if user else []
        return ["ip", "netns", "exec", self.spaces[node], "chroot", *spec, str(self.trees[node]),
                "/usr/bin/env", "-i", "HOME=/var/lib/livecam", "PATH=/usr/bin:/bin",
                "LANG=C.UTF-8", *argv]  # fmt: skip

    def start_nas(self) -> None:
        nas = self.trees["nas"]
        fleet.mount_runtime(nas, self.cleanup)
        (nas / "run/sshd").mkdir(mode=0o755, exist_ok=True)
        # The tree's own sshd_config and the provisioned authorized_keys; PAM off
        # because a chroot has no login sessions to open.
        sshd = ["/usr/sbin/sshd", "-D", "-e", "-o", "UsePAM=no",
                "-o", f"ListenAddress={NAS_ADDRESS}", "-o", "PidFile=none"]  # fmt: skip
        self.sshd = self.spawn("sshd", ["ip", "netns", "exec", self.spaces["nas"], "chroot",
                                        str(nas), *sshd])  # fmt: skip
        fleet.wait_for(lambda: "Server listening" in (self.work / "sshd.log").read_text(),
                       15, "sshd to listen")  # fmt: skip
        # The tree's own smbd with the smb.conf the role wrote (livecam.conf included).
        for d in ("run/samba", "var/log/samba", "var/cache/samba"):
            (nas / d).mkdir(parents=True, exist_ok=True)
        smbd = ["/usr/sbin/smbd", "--foreground", "--no-process-group", "--debug-stdout"]
        self.spawn("smbd", ["ip", "netns", "exec", self.spaces["nas"], "chroot", str(nas), *smbd])
        fleet.wait_for(lambda: self.smb_logon(SMB_PASSWORDS[0]) is not None, 30, "smbd to listen")

    def reload_sshd(self) -> None:
        """SIGHUP the NAS's sshd, as the role's "Reload sshd" handler would: it
        re-executes itself and reads the config the playbook wrote."""
        log = self.work / "sshd.log"
        listening = log.read_text().count("Server listening")
        self.sshd.send_signal(signal.SIGHUP)
        fleet.wait_for(lambda: log.read_text().count("Server listening") > listening, 15,
                       "sshd to listen again after SIGHUP")  # fmt: skip

    def smbclient(self, where: str, user: str, password: str, command: str) -> tuple[int, str]:
        """Samba's own smbclient, run in ``where``'s namespace, on the NAS's livecam
        share as ``user``; its exit code and output."""
        auth = self.work / "smb-auth"
        auth.write_text(f"username={user}\npassword={password}\n")
        auth.chmod(0o600)
        out = fleet.sh("ip", "netns", "exec", self.spaces[where], "smbclient",
                       f"//{NAS_ADDRESS}/livecam", "-p", str(SMB_PORT), "-A", str(auth),
                       "-m", "SMB3", "-c", command, check=False)  # fmt: skip
        return out.returncode, out.stdout + out.stderr

    def smb_logon(self, password: str) -> bool | None:
        """Whether the smb node's account logs on to the NAS with ``password`` (in the
        NAS namespace); None while nothing listens."""
        code, text = self.smbclient("nas", f"livecam-{SMB_NODE}", password,
                                    f"ls test/{SMB_NODE}/*")  # fmt: skip
        if "NT_STATUS_CONNECTION_REFUSED" in text:
            return None
        if "NT_STATUS_LOGON_FAILURE" in text:
            return False
        assert code == 0, text
        return True

    def start_node(self, node: str) -> None:
        tree = self.trees[node]
        fleet.mount_runtime(tree, self.cleanup)
        opts = fleet.fstab_mount(tree, "/run/livecam/buffer", self.cleanup)
        assert "size=32M" in opts
        self.start_livecam(node)

    def start_livecam(self, node: str, record: bool = True) -> None:
        livecam = ["/opt/livecam/venv/bin/livecam", "-c", "/etc/livecam/livecam.yaml"]
        # As the units run them: one recorder per camera, one shipper.
        self.recorders[node] = [
            self.spawn(f"{node}-{cam}", self.in_node(node, *livecam, "record", cam))
            for cam in (CAMERAS[node] if record else ())
        ]
        self.shippers[node] = self.spawn(f"{node}-ship", self.in_node(node, *livecam, "ship"))

    def link(self, node: str, up: bool) -> None:
        i = ALL_NODES.index(node) + 1
        fleet.sh("ip", "-n", self.spaces["nas"], "link", "set", f"{self.prefix}v{i}",
                 "up" if up else "down")  # fmt: skip

    def on_nas(self, node: str) -> dict[str, list[Path]]:
        """Published segments of ``node`` per camera (final names only)."""
        found: dict[str, list[Path]] = {cam: [] for cam in CAMERAS[node]}
        for p in (self.trees["nas"] / "srv/livecam/test" / node).rglob("*.mp4"):
            m = SEQ_RE.match(p.name)
            if m and m["cam"] in found:  # a camera of the node
                found[m["cam"]].append(p)
        return found

    def local(self, node: str) -> list[Path]:
        """Ready segments and loss records (``_losses/*.json``) still on the node, in
        its buffer or spool."""
        tree = self.trees[node]
        return [p for tier in ("run/livecam/buffer", "var/lib/livecam/spool")
                for pattern in ("*/*.mp4", "_losses/*.json")
                for p in (tree / tier).glob(pattern)]  # fmt: skip

    def count(self, node: str) -> int:
        return sum(len(v) for v in self.on_nas(node).values())

    def logs(self) -> str:
        logs = [p for p in sorted(self.work.glob("*.log")) if p.name != "first-run.log"]
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in logs)


def _stop(proc: subprocess.Popen, sig: int, timeout: float = 30) -> int | None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


@pytest.fixture(scope="module")
def running(provisioned):
    cleanup = fleet.Cleanup()
    try:
        r = Running(provisioned, cleanup, prefix=f"lc{os.getpid() % 100000}")
        r.start_nas()
        for node in ALL_NODES:
            r.start_node(node)
        yield r
    finally:
        errors = cleanup.run()
        assert not errors, errors


def test_fleet_ships_through_one_nodes_outage(running):
    r = running
    try:
        fleet.wait_for(lambda: all(r.count(n) >= 2 * len(CAMERAS[n]) for n in ALL_NODES), 90,
                       "every node to publish (rsync and sftp)")  # fmt: skip

        r.link("node1", up=False)
        time.sleep(1)
        cut_at = r.count("node1")
        node2_at = r.count("node2")
        # node2 goes on shipping while node1 is cut off...
        fleet.wait_for(lambda: r.count("node2") >= node2_at + 4, 60, "node2 to keep shipping")
        # ...and node1 goes on recording, keeping its segments locally.
        fleet.wait_for(lambda: len(r.local("node1")) >= 4, 60, "node1 to keep recording")
        assert r.count("node1") == cut_at

        r.link("node1", up=True)
        fleet.wait_for(lambda: r.count("node1") > cut_at, 90, "node1 to ship again")

        # Stop the cameras (they finish the open segment) and let the shippers drain.
        for node in ALL_NODES:
            for proc in r.recorders[node]:
                assert _stop(proc, signal.SIGTERM) == 0, r.logs()
        fleet.wait_for(lambda: not any(r.local(n) for n in ALL_NODES), 120,
                       "the backlog to drain")  # fmt: skip
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{r.logs()}") from None

    for node in ALL_NODES:
        for cam, files in r.on_nas(node).items():
            seqs = sorted(int(SEQ_RE.match(p.name)["seq"]) for p in files)
            # Every segment the camera closed arrived: the sequence has no gap ...
            assert seqs == list(range(seqs[0], seqs[-1] + 1)), (node, cam, seqs)
            # ... and none is missing at either end: the recorder's own count of the
            # segments it closed, and the name of its last one.
            state = r.trees[node] / "run/livecam/buffer/.livecam" / f"recorder-{cam}.json"
            recorder = json.loads(state.read_text())
            assert recorder["state"] == "stopped", recorder
            assert len(seqs) == recorder["segments"], (node, cam, seqs, recorder)
            newest = next(p for p in files if int(SEQ_RE.match(p.name)["seq"]) == seqs[-1])
            assert newest.name == recorder["last_segment"], (node, cam, recorder)
            assert len(seqs) >= 4, (node, cam, seqs)
            assert all(p.stat().st_size > 0 for p in files)
            print(f"{node}/{cam}: {len(seqs)} segments on the NAS, seq {seqs[0]}..{seqs[-1]}")
    for node in ALL_NODES:
        assert _stop(r.shippers[node], signal.SIGTERM) == 0, r.logs()


def test_a_node_key_cannot_touch_another_nodes_recordings(running):
    r = running
    node2_dir = r.trees["nas"] / "srv/livecam/test/node2"
    victim = next(p for files in r.on_nas("node2").values() for p in files)
    before = {p: sha256(p) for p in node2_dir.rglob("*") if p.is_file()}
    rel = victim.relative_to(node2_dir)
    evil = r.trees["node1"] / "tmp/evil.mp4"
    evil.write_bytes(b"not a recording")
    os.chmod(evil, 0o644)

    def as_node1(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run(r.in_node("node1", *argv), capture_output=True, text=True,
                              timeout=60)  # fmt: skip

    remote = f"livecam@{NAS_ADDRESS}"
    attempts = {
        "read another node's segment": ["rsync", "-e", SSH, f"{remote}:../node2/{rel}", "/tmp/"],
        "read its own directory": ["rsync", "-e", SSH, f"{remote}:.", "/tmp/"],
        "overwrite through ..": ["rsync", "-e", SSH, "/tmp/evil.mp4",
                                 f"{remote}:../node2/{rel}"],
        "overwrite by absolute path": ["rsync", "-e", SSH, "/tmp/evil.mp4",
                                       f"{remote}:/srv/livecam/test/node2/{rel}"],
        "run a shell command": ["ssh", *SSH.split()[1:], remote, "cat", f"{node2_dir}/{rel}"],
    }  # fmt: skip
    for what, argv in attempts.items():
        out = as_node1(*argv)
        print(f"{what}: exit {out.returncode}: {out.stderr.strip()[:200]}")
        if what.startswith(("read", "run")):
            assert out.returncode != 0, (what, out.stdout, out.stderr)
            assert not (r.trees["node1"] / "tmp" / victim.name).exists(), what
    after = {p: sha256(p) for p in node2_dir.rglob("*") if p.is_file()}
    assert after == before, "node1's key changed node2's recordings"


# What node1 runs with its deployed livecam: its own transport (the shipper's,
# built from its livecam.yaml) publishes a file the NAS has, then other bytes under
# that name.
ALREADY_THERE = """
import sys
from pathlib import Path
from livecam import build
from livecam.storage.files import file_digest
from livecam.transport import ConflictError
config, plugins = build.load(Path("/etc/livecam/livecam.yaml"))
t = build.transport(config, plugins)
remote = sys.argv[3]
for local in map(Path, sys.argv[1:3]):
    try:
        sent = t.publish(local, remote, size=local.stat().st_size, digest=file_digest(local))
        print("sent" if sent else "already there")
    except ConflictError:
        print("conflict")
t.close()
"""


def test_a_node_key_can_neither_delete_nor_replace_its_own_segments(running):
    """Issue 22, item 10. The NAS tree's rsync is Debian 12's (3.2.7), whose rrsync
    has no -no-overwrite: the NAS role made livecam's front (files/livecam-rrsync)
    the key's forced command. While node1's livecam records and publishes, node1's
    own key, with plain rsync from node1's namespace, tries to delete, overwrite,
    rename over, append to and link over segments it published: every one stays as it
    was. livecam's own publish goes on (all it recorded arrives), and its transport
    still tells "already there" from a conflict."""
    r = running
    nas, tree = r.trees["nas"], r.trees["node1"]
    node_dir = nas / "srv/livecam/test/node1"
    assert "-no-overwrite" not in fleet.sh("chroot", str(nas), "rrsync", "-h", check=False).stdout
    keys = (nas / "var/lib/livecam-nas/.ssh/authorized_keys").read_text()
    assert ('command="/usr/local/libexec/livecam-rrsync -wo -no-del -no-lock -no-overwrite '
            '/srv/livecam/test/node1",restrict ') in keys  # fmt: skip
    for proc in (*r.recorders["node1"], r.shippers["node1"]):  # still running when run alone
        _stop(proc, signal.SIGTERM)
    at = r.count("node1")
    ship_log = r.work / "node1-ship.log"
    log_from = ship_log.stat().st_size
    r.start_livecam("node1")
    try:
        fleet.wait_for(lambda: r.count("node1") >= at + 4, 90, "node1 to publish again")
        victims = sorted(p for files in r.on_nas("node1").values() for p in files)
        before = {p: sha256(p) for p in victims}
        rel = [str(p.relative_to(node_dir)) for p in victims]
        work = tree / "tmp/tamper"
        tamper.prepare(work, rel)
        refused = {}
        for what, args in tamper.attempts(Path("/tmp/tamper"), f"livecam@{NAS_ADDRESS}:./",
                                          rel[0]).items():  # fmt: skip
            out = subprocess.run(r.in_node("node1", "rsync", "-e", SSH, *args),
                                 capture_output=True, text=True, timeout=60)  # fmt: skip
            refused[what] = out.returncode
            print(f"{what}: exit {out.returncode}: {out.stderr.strip()[-160:]}")
            after = {p: sha256(p) for p in victims if p.is_file() and not p.is_symlink()}
            assert after == before, (what, out.stdout, out.stderr)
        assert refused["delete"] != 0 and refused["symlink-over"] != 0, refused
        # The key still adds files (and reaches the NAS: the refusals above are rrsync's).
        (work / "empty/added.bin").write_bytes(b"added")
        added = subprocess.run(r.in_node("node1", "rsync", "-e", SSH, "-r", "/tmp/tamper/empty/",
                                         f"livecam@{NAS_ADDRESS}:./"), timeout=60)  # fmt: skip
        assert added.returncode == 0 and (node_dir / "added.bin").read_bytes() == b"added"

        # livecam's transport through the front: the same bytes, then other bytes.
        victim = victims[0]
        (tree / "tmp/same.mp4").write_bytes(victim.read_bytes())
        (tree / "tmp/other.mp4").write_bytes(os.urandom(1000))
        for name in ("same.mp4", "other.mp4"):
            os.chmod(tree / "tmp" / name, 0o644)
        (tree / "tmp/already_there.py").write_text(ALREADY_THERE)
        argv = r.in_node("node1", "/opt/livecam/venv/bin/python", "/tmp/already_there.py",
                         "/tmp/same.mp4", "/tmp/other.mp4", rel[0])  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert out.stdout.split("\n")[:2] == ["already there", "conflict"], out.stdout + out.stderr

        # Recording stops; everything node1 recorded arrives, nothing is set aside.
        for proc in r.recorders["node1"]:
            assert _stop(proc, signal.SIGTERM) == 0, r.logs()
        fleet.wait_for(lambda: not r.local("node1"), 120, "node1's backlog to drain")
        assert _stop(r.shippers["node1"], signal.SIGTERM) == 0, r.logs()
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{r.logs()}") from None
    assert {p: sha256(p) for p in victims} == before
    for cam in CAMERAS["node1"]:
        state = tree / "run/livecam/buffer/.livecam" / f"recorder-{cam}.json"
        last = json.loads(state.read_text())["last_segment"]
        assert any(p.name == last for p in r.on_nas("node1")[cam]), (cam, last)
    with open(ship_log) as log:
        log.seek(log_from)
        shipped = log.read()
    bad = [ln for ln in shipped.splitlines() if re.search(r"PERMANENT|conflict|refused", ln, re.I)]
    assert not bad, bad
    print(f"node1 published {r.count('node1') - at} segments during the attempts")


def _nas_files(r: Running) -> dict[Path, str]:
    """Every file under the NAS's recordings root, with its sha256."""
    root = r.trees["nas"] / "srv/livecam"
    return {p: sha256(p) for p in root.rglob("*") if p.is_file()}


def test_an_sftp_nodes_account_reaches_only_its_own_directory(running):
    """node3's own key and account, as the NAS role authorised them, from node3's
    namespace: sshd's chroot is the site directory, where node3 may list the other
    nodes' directory names but not enter, read or write them; a key or an account
    the inventory does not name is refused at logon."""
    r = running
    tree = r.trees[SFTP_NODE]
    victim = next(p for files in r.on_nas("node2").values() for p in files)
    rel = victim.relative_to(r.trees["nas"] / "srv/livecam/test")  # node2/cam0/<date>/<name>
    (tree / "tmp/evil.mp4").write_bytes(b"not a recording")
    os.chmod(tree / "tmp/evil.mp4", 0o644)
    before = _nas_files(r)
    # A key no inventory host holds, made on node3 (so only the key differs).
    for name in ("stranger", "stranger.pub"):
        (tree / "tmp" / name).unlink(missing_ok=True)
    stranger = subprocess.run(
        r.in_node(SFTP_NODE, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", "/tmp/stranger"),
        capture_output=True,
        timeout=60,
    )
    assert stranger.returncode == 0, stranger.stderr

    def sftp(commands: str, user: str = f"livecam-{SFTP_NODE}", key: str = KEY):
        batch = tree / "tmp/batch"
        batch.write_text(commands + "\n")
        os.chmod(batch, 0o644)
        argv = ["sftp", *SSH.replace(KEY, key).split()[1:], "-P", str(SFTP_PORT),
                "-b", "/tmp/batch", f"{user}@{NAS_ADDRESS}"]  # fmt: skip
        out = subprocess.run(r.in_node(SFTP_NODE, *argv), capture_output=True, text=True,
                             timeout=60)  # fmt: skip
        return out.returncode, out.stdout + out.stderr

    # The credentials work: node3 lists its own directory, and the chroot's root
    # is the site directory (the other nodes' directory names are visible).
    code, own = sftp(f"ls /{SFTP_NODE}")
    assert code == 0 and "cam0" in own, own
    code, root = sftp("ls /")
    assert code == 0 and all(n in root for n in ALL_NODES), root
    assert "srv" not in root and "etc" not in root, root
    inside = {
        "list another node's directory": f"ls /{rel.parts[0]}",
        "list another node's camera directory": f"ls /{rel.parent}",
        "read another node's segment": f"get /{rel} /tmp/stolen.mp4",
        "write into another node's directory": f"put /tmp/evil.mp4 /{rel.parts[0]}/evil.mp4",
        "write beside another node's segment": f"put /tmp/evil.mp4 /{rel.parent}/evil.mp4",
        "write into the site directory": "put /tmp/evil.mp4 /evil.mp4",
        "climb out of the chroot": f"get /../../{rel} /tmp/stolen.mp4",
    }
    for what, command in inside.items():
        code, text = sftp(command)
        print(f"{what}: exit {code}: {text.strip()[-200:]}")
        assert code != 0, (what, text)
        assert "Permission denied" in text or "not found" in text, (what, text)
        assert not (tree / "tmp/stolen.mp4").exists(), what
    logons = {
        "a key not in the inventory, node3's account": ("livecam-" + SFTP_NODE, "/tmp/stranger"),
        "a key not in the inventory, the rsync account": ("livecam", "/tmp/stranger"),
        "node3's key, the rsync account": ("livecam", KEY),
        "node3's key, the smb node's account": (f"livecam-{SMB_NODE}", KEY),
        "node3's key, an account not in the inventory": ("livecam-node9", KEY),
    }
    for what, (user, key) in logons.items():
        code, text = sftp(f"ls /{SFTP_NODE}", user=user, key=key)
        print(f"{what}: exit {code}: {text.strip()[-200:]}")
        # Refused at logon (the accounts have no password, and BatchMode asks none).
        assert code != 0 and "Permission denied (publickey" in text, (what, text)
    assert _nas_files(r) == before, "node3's account changed files on the NAS"


def test_an_smb_nodes_account_reaches_only_its_own_directory(running):
    """node4's own account and password (the ones livecam.yaml and the transport
    secret on node4 hold), from node4's namespace: the share is the whole recordings
    root, and only file permissions keep node4 out of the other nodes' directories
    (their names are listable); an account or password the inventory does not name
    is refused."""
    r = running
    transport = yaml.safe_load((r.trees[SMB_NODE] / "etc/livecam/livecam.yaml").read_text())[
        "transport"
    ]
    user = transport["username"]
    password = (r.trees[SMB_NODE] / transport["password_file"].lstrip("/")).read_text().strip()
    assert user == f"livecam-{SMB_NODE}" and transport["path"] == f"test/{SMB_NODE}", transport
    victim = next(p for files in r.on_nas("node2").values() for p in files)
    rel = victim.relative_to(r.trees["nas"] / "srv/livecam").as_posix()  # test/node2/...
    evil = r.work / "evil.mp4"
    evil.write_bytes(b"not a recording")
    stolen = r.work / "stolen.mp4"
    before = _nas_files(r)

    # The credentials work: node4 lists its own directory, and the site directory
    # with every node's directory name in it.
    code, own = r.smbclient(SMB_NODE, user, password, f"ls test/{SMB_NODE}/*")
    assert code == 0 and "cam0" in own, own
    code, site = r.smbclient(SMB_NODE, user, password, "ls test/*")
    assert code == 0 and all(n in site for n in ALL_NODES), site
    victim_dir = rel.rsplit("/", 1)[0]
    inside = {
        "list another node's directory": "ls test/node2/*",
        "list another node's camera directory": f"ls {victim_dir}/*",
        "read another node's segment": f"get {rel} {stolen}",
        "write into another node's directory": f"put {evil} test/node2/evil.mp4",
        "write beside another node's segment": f"put {evil} {victim_dir}/evil.mp4",
        "make a directory in another node's": "mkdir test/node2/evil",
        "write into the site directory": f"put {evil} test/evil.mp4",
        "write at the share's root": f"put {evil} evil.mp4",
        "make a node directory of its own": "mkdir test/node9",
        "climb out of the share": f"get ../../etc/passwd {stolen}",
    }
    for what, command in inside.items():
        code, text = r.smbclient(SMB_NODE, user, password, command)
        print(f"{what}: exit {code}: {text.strip()[-200:]}")
        # smbclient's mkdir exits 0 when refused: Samba's status is what counts.
        assert re.search(r"NT_STATUS_(ACCESS_DENIED|OBJECT_\w+_NOT_FOUND|OBJECT_PATH_SYNTAX_BAD"
                         r"|OBJECT_NAME_INVALID)", text), (what, text)  # fmt: skip
        assert not stolen.exists(), what
    logons = {
        "an account not in the inventory, node4's password": ("livecam-node9", password),
        "the rsync account, node4's password": ("livecam", password),
        "the sftp node's account, node4's password": (f"livecam-{SFTP_NODE}", password),
        "node4's account, another password": (user, "not-" + password),
    }
    for what, (who, secret) in logons.items():
        code, text = r.smbclient(SMB_NODE, who, secret, f"ls test/{SMB_NODE}/*")
        print(f"{what}: exit {code}: {text.strip()[-200:]}")
        # Refused at logon, or (Samba's "map to guest = bad user") logged on as the
        # guest, whom the share's "valid users" refuses.
        assert code != 0 and re.search(r"NT_STATUS_(LOGON_FAILURE|ACCESS_DENIED)", text), (
            what,
            text,
        )
        assert "cam0" not in text, (what, text)
    assert _nas_files(r) == before, "node4's account changed files on the NAS"
    site_dir = r.trees["nas"] / "srv/livecam/test"
    assert not (site_dir / "node2/evil").exists() and not (site_dir / "node9").exists()


def test_a_changed_vault_password_reaches_samba_and_the_smb_node_still_ships(running, provisioned):
    r = running
    # Only the hosts the change touches (a run of the whole fleet costs minutes).
    limit = ("--limit", f"nas,{SMB_NODE},localhost")
    record = r.trees["nas"] / f"etc/samba/livecam-livecam-{SMB_NODE}.sha256"
    secret = r.trees[SMB_NODE] / "etc/livecam/transport.secret"
    old_record = record.read_text()
    assert secret.read_text() == SMB_PASSWORDS[0]
    assert r.smb_logon(SMB_PASSWORDS[0]) is True and r.smb_logon(SMB_PASSWORDS[1]) is False
    write_vault(provisioned.work, SMB_PASSWORDS[1])  # what `ansible-vault edit` leaves

    # --check --diff on the NAS shows the change and makes none.
    out, recap = fleet.ansible_playbook(provisioned.inventory, "--check", "--diff",
                                        "--limit", "nas,localhost")  # fmt: skip
    assert recap["nas"][1] > 0, out[-6000:]
    assert f"--- before: /etc/samba/livecam-livecam-{SMB_NODE}.sha256" in out, out[-6000:]
    assert record.read_text() == old_record and secret.read_text() == SMB_PASSWORDS[0]
    assert r.smb_logon(SMB_PASSWORDS[0]) is True

    # The run: the node's secret file and Samba's password change together.
    out, recap = fleet.ansible_playbook(provisioned.inventory, *limit)
    assert recap["nas"][1] > 0 and recap[SMB_NODE][1] > 0, out[-6000:]
    assert not any(p in out for p in SMB_PASSWORDS), "a password reached the playbook output"
    assert record.read_text() != old_record and secret.read_text() == SMB_PASSWORDS[1]
    assert r.smb_logon(SMB_PASSWORDS[1]) is True and r.smb_logon(SMB_PASSWORDS[0]) is False

    # The node, restarted as the handler would restart its units, ships over smb.
    at = r.count(SMB_NODE)
    r.start_livecam(SMB_NODE)
    try:
        fleet.wait_for(lambda: r.count(SMB_NODE) >= at + 3, 90, "the smb node to ship again")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{r.logs()}") from None
    for proc in (*r.recorders[SMB_NODE], r.shippers[SMB_NODE]):
        assert _stop(proc, signal.SIGTERM) == 0, r.logs()
    assert "logon refused" not in (r.work / f"{SMB_NODE}-ship.log").read_text()


def _uid(tree: Path, account: str) -> int:
    """``account``'s uid in ``tree``'s /etc/passwd."""
    for line in (tree / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == account:
            return int(fields[2])
    raise AssertionError(f"no {account} in {tree}/etc/passwd")


def test_a_converge_that_changes_a_nodes_transport_ships_what_waits(running, provisioned):
    """R22 on the fleet. node2 records while its rsync link is cut, so its segments
    wait on the node; the inventory then moves node2 to sftp and a converge of the
    NAS and node2 renders the new config and notifies the shipper's restart handler
    (skipped in a chroot: the test restarts the shipper as it would, and SIGHUPs the
    NAS's sshd as its "Reload sshd" handler would). Everything that waited arrives
    through sftp (files owned by node2's new account), once each, intact.

    Last in the module: the inventory file is put back afterwards and a converge of
    node2 renders it as the inventory says again."""
    r = running
    node = "node2"
    tree, nas = r.trees[node], r.trees["nas"]
    nas_dir = nas / "srv/livecam/test" / node
    assert not r.local(node), "node2 still has segments from the first test"
    before = {p for p in nas_dir.rglob("*") if p.is_file()}

    # The old transport unreachable: node2 records, its rsync shipper cannot ship.
    r.link(node, up=False)
    at = r.count(node)
    r.start_livecam(node)
    try:
        spool = tree / "var/lib/livecam/spool"
        # Kept locally, the older ones moved on to the spool (spill_after: a segment).
        fleet.wait_for(lambda: len(r.local(node)) >= 4 and any(spool.glob("*/*.mp4")), 90,
                       "node2 to keep segments locally, some in its spool")  # fmt: skip
        for proc in r.recorders[node]:
            assert _stop(proc, signal.SIGTERM) == 0
        assert _stop(r.shippers[node], signal.SIGTERM) == 0
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{r.logs()}") from None
    assert r.count(node) == at
    waiting = {p.name: sha256(p) for p in r.local(node)}
    print(f"waiting on {node}: {len(waiting)}, {len(list(spool.glob('*/*.mp4')))} in the spool")
    assert len(waiting) >= 4 and not waiting.keys() & {p.name for p in before}, waiting

    original = provisioned.inventory.read_text()
    inventory = yaml.safe_load(original)
    inventory["all"]["children"]["livecam_nodes"]["hosts"][node].update(sftp_transport(node))
    provisioned.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
    try:
        out, recap = fleet.ansible_playbook(provisioned.inventory, "--limit",
                                            f"nas,{node},localhost")  # fmt: skip
    finally:
        provisioned.inventory.write_text(original)
    (r.work / "transport-change-run.log").write_text(out)
    assert recap[node][1] > 0 and recap["nas"][1] > 0, out[-6000:]
    assert "RUNNING HANDLER [livecam_node : Restart livecam shipper]" in out, out[-6000:]
    assert "RUNNING HANDLER [livecam_nas : Reload sshd]" in out, out[-6000:]
    config = yaml.safe_load((tree / "etc/livecam/livecam.yaml").read_text())
    assert config["transport"]["plugin"] == "sftp", config["transport"]
    # The rsync account no longer takes node2's key; its directory is its account's.
    keys = (nas / "var/lib/livecam-nas/.ssh/authorized_keys").read_text()
    assert f"livecam@{node}" not in keys and "livecam@node1" in keys, keys
    account = _uid(nas, f"livecam-{node}")
    assert nas_dir.stat().st_uid == account
    kept = [p for p in nas_dir.rglob("*") if p.stat().st_uid != account]
    assert not kept, f"still the rsync account's: {kept[:3]}"

    r.reload_sshd()
    r.link(node, up=True)
    r.start_livecam(node, record=False)  # the restarted shipper; nothing new is recorded
    try:
        fleet.wait_for(lambda: not r.local(node), 90, "what waited on node2 to ship over sftp")
        assert _stop(r.shippers[node], signal.SIGTERM) == 0
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{r.logs()}") from None
    arrived = {p for p in nas_dir.rglob("*") if p.is_file()} - before
    # Every segment that waited, once each (no second copy, no temp left), intact,
    # and written by node2's sftp account.
    assert sorted(p.name for p in arrived) == sorted(waiting), (arrived, waiting)
    for p in arrived:
        assert sha256(p) == waiting[p.name], p
        assert p.stat().st_uid == account, (p, p.stat().st_uid)
    print(f"{len(waiting)} segments waited on {node} and arrived over sftp")
    # node2 back as the inventory has it (rsync): the modules after this one
    # (test_ansible_promises.py) run check-config on its tree.
    fleet.ansible_playbook(provisioned.inventory, "--limit", f"nas,{node},localhost")
    assert (
        yaml.safe_load((tree / "etc/livecam/livecam.yaml").read_text())["transport"]["plugin"]
        == "rsync"
    )
