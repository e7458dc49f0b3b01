"""Real NAS-side servers for the transport tests and the benchmark.

Each server runs from a private directory with its own config, keys and state, on
loopback or inside a network namespace the caller created, and is stopped and
cleaned up by its owner. Nothing here touches the machine's own sshd or smbd.

- ``Sshd``: OpenSSH's sshd with two accounts: ``lc-rsync`` whose key is restricted
  with ``command="rrsync <options> <dir>",restrict`` (the NAS role's options), and
  ``lc-sftp``, chrooted to an internal-sftp-only jail.
- ``Smbd``: Samba's smbd on a high port, one share, one user with a password.
- ``NetNs``: a network namespace joined to the host by a veth pair, where a link
  can be cut (``ip link set down``) and shaped (``tc tbf``).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RSYNC_USER = "lc-rsync"
SFTP_USER = "lc-sftp"
SMB_USER = "lc-smb"
SMB_PASSWORD = "s3cret-Pa55"  # a test account on loopback only
NAS_ROLE = Path(__file__).resolve().parents[2] / "ansible/roles/livecam_nas"


def nas_role_var(name: str) -> Any:
    """A private variable of the NAS role (``vars/main.yml``): the servers here are
    restricted with exactly the options the role renders."""
    import yaml

    return yaml.safe_load((NAS_ROLE / "vars/main.yml").read_text())[name]


RRSYNC_OPTIONS = str(nas_role_var("__livecam_nas_rrsync_options"))
SFTP_DENIED = str(nas_role_var("__livecam_nas_sftp_denied"))
# The smb share's options beyond the basics (vfs_worm), as smb-livecam.conf.j2 renders them.
SMB_SHARE_OPTIONS = "".join(
    f"    {k} = {v}\n" for k, v in nas_role_var("__livecam_nas_smb_share_options").items()
)


def sh(*argv: str, check: bool = True, **kw) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=60, **kw)


def wait_port(host: str, port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_user(name: str) -> pwd.struct_passwd:
    """A system account with a shell (rrsync runs through it) and no usable password.

    It stays after the run: several suites use the same accounts, on other workers
    of one run or in other runs at the same time, and removing one under a running
    sshd fails its logins ("getpwnam(): name not found"). Without a password and
    with keys only in a test sshd's own files, a left account lets nobody in."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        sh("useradd", "--system", "--no-create-home", "--home-dir", "/", "--shell", "/bin/sh", name)
    # '*' instead of useradd's '!': sshd without PAM treats '!' as a locked account.
    sh("usermod", "-p", "*", name)
    return pwd.getpwnam(name)


def remove_user(name: str) -> None:
    sh("userdel", name, check=False)


def make_base() -> Path:
    """A private root-owned directory outside /tmp (sshd refuses chroots below /tmp)."""
    Path("/srv").mkdir(exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="livecam-test-", dir="/srv"))
    base.chmod(0o755)
    return base


def keygen(path: Path) -> Path:
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", path.name, "-f", str(path))
    return path


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, found through /proc parent links."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class Daemon:
    """A server process in the foreground, optionally inside a network namespace."""

    def __init__(self, netns: str | None = None):
        self.netns = netns
        self.proc: subprocess.Popen[bytes] | None = None
        self.log: Path | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def _spawn(self, host: str, port: int) -> None:
        argv = self.argv()
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        assert self.log is not None
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=log, start_new_session=True)
        wait_port(host, port)

    def stop(self) -> None:
        """Kill the server and every process it forked (a crashed or rebooted NAS).

        Per-connection children of sshd and smbd start their own sessions, so the
        process group alone would leave established connections alive.
        """
        if self.proc is None:
            return
        for pid in [self.proc.pid, *descendants(self.proc.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None


def sshd_config(host: str, port: int, host_key: Path, keys: Path, users: str) -> str:
    """The test sshds' common settings: keys only, from ``keys``/<user>, for ``users``."""
    return f"""\
ListenAddress {host}
Port {port}
HostKey {host_key}
PidFile none
AuthorizedKeysFile {keys}/%u
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
AllowUsers {users}
"""


class Sshd(Daemon):
    """sshd with an rrsync-restricted account and a chrooted SFTP-only account."""

    def __init__(
        self,
        base: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        netns: str | None = None,
        sftp_denied: str = SFTP_DENIED,
    ):
        """``sftp_denied``: the SFTP requests refused to lc-sftp, as the NAS role
        renders them; "" for a plain file server (an sshfs standing in for NFS)."""
        super().__init__(netns)
        self.base = base
        self.host = host
        self.port = port or free_port()
        self.dir = base / "sshd"
        self.dir.mkdir(mode=0o755)
        self.log = self.dir / "sshd.log"
        self.host_key = keygen(self.dir / "host_ed25519")
        self.client_key = keygen(base / "node_key")
        self.known_hosts = base / "known_hosts"
        self.rsync_root = base / "rsync-nas"  # what rrsync -wo confines lc-rsync to
        self.chroot = base / "sftp-jail"  # root-owned, as ChrootDirectory demands
        self.sftp_root = self.chroot / "upload"
        rsync_user = ensure_user(RSYNC_USER)
        sftp_user = ensure_user(SFTP_USER)
        for d, owner in (
            (self.rsync_root, rsync_user),
            (self.chroot, None),
            (self.sftp_root, sftp_user),
        ):
            d.mkdir(mode=0o755)
            if owner:
                os.chown(d, owner.pw_uid, owner.pw_gid)
        keys = self.dir / "authorized_keys"
        keys.mkdir(mode=0o755)
        pub = (base / "node_key.pub").read_text().strip()
        (keys / RSYNC_USER).write_text(
            f'command="rrsync {RRSYNC_OPTIONS} {self.rsync_root}",restrict {pub}\n'
        )
        (keys / SFTP_USER).write_text(f"restrict {pub}\n")
        self.config = self.dir / "sshd_config"
        deny = f" -P {sftp_denied}" if sftp_denied else ""
        self.config.write_text(
            sshd_config(host, self.port, self.host_key, keys, f"{RSYNC_USER} {SFTP_USER}")
            + f"""\
Subsystem sftp internal-sftp
Match User {SFTP_USER}
    ChrootDirectory {self.chroot}
    ForceCommand internal-sftp{deny}
    AllowTcpForwarding no
"""
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        self.pin_host_key()

    def argv(self) -> list[str]:
        return ["/usr/sbin/sshd", "-D", "-e", "-f", str(self.config)]

    def start(self) -> None:
        self._spawn(self.host, self.port)

    def pin_host_key(self) -> None:
        """Write the node's known_hosts with this server's current host key."""
        key = (self.host_key.with_suffix(".pub")).read_text().split()
        name = self.host if self.port == 22 else f"[{self.host}]:{self.port}"
        self.known_hosts.write_text(f"{name} {key[0]} {key[1]}\n")

    def change_host_key(self) -> None:
        """Give the server a new host key (a reinstalled or impostor NAS); restart it."""
        self.stop()
        for p in (self.host_key, self.host_key.with_suffix(".pub")):
            p.unlink()
        keygen(self.host_key)
        self.start()

    def rsync_options(self, path: str = ".") -> dict:
        return {
            "plugin": "rsync",
            "host": self.host,
            "port": self.port,
            "user": RSYNC_USER,
            "path": path,
            "identity_file": str(self.client_key),
            "known_hosts_file": str(self.known_hosts),
        }

    def sftp_options(self, path: str = "/upload") -> dict:
        return {**self.rsync_options(path), "plugin": "sftp", "user": SFTP_USER}


class Smbd(Daemon):
    """smbd on a high loopback port with one share ``nas`` and one user with a password.

    Its log has one ``Auth: [SMB2`` line per logon (``auth_audit:3``), so tests count
    sessions on the server's side; ``log_level`` 2 also logs each tree connect
    ("connect to service nas"). ``encrypt``: Samba's ``server smb encrypt`` ("off":
    a server that cannot encrypt at all)."""

    def __init__(
        self,
        base: Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        netns: str | None = None,
        encrypt: str = "if_required",
        log_level: int = 1,
    ):
        super().__init__(netns)
        self.host = host
        self.port = port or free_port()
        self.dir = base / "smbd"
        self.dir.mkdir(mode=0o755)
        self.log = self.dir / "smbd.log"
        self.share_root = base / "smb-nas"
        user = ensure_user(SMB_USER)
        self.share_root.mkdir(mode=0o755)
        os.chown(self.share_root, user.pw_uid, user.pw_gid)
        for sub in ("lock", "state", "cache", "private", "pid", "ncalrpc"):
            (self.dir / sub).mkdir(mode=0o755)
        self.config = self.dir / "smb.conf"
        self.config.write_text(f"""\
[global]
    server role = standalone server
    interfaces = {host}
    bind interfaces only = yes
    smb ports = {self.port}
    disable netbios = yes
    server min protocol = SMB2_10
    server smb encrypt = {encrypt}
    log level = {log_level} auth_audit:3
    passdb backend = tdbsam:{self.dir}/private/passdb.tdb
    lock directory = {self.dir}/lock
    state directory = {self.dir}/state
    cache directory = {self.dir}/cache
    private dir = {self.dir}/private
    pid directory = {self.dir}/pid
    ncalrpc dir = {self.dir}/ncalrpc
    log file = {self.dir}/log.%m
    load printers = no
    printing = bsd
    printcap name = /dev/null
    disable spoolss = yes
    map to guest = never
[nas]
    path = {self.share_root}
    read only = no
    valid users = {SMB_USER}
{SMB_SHARE_OPTIONS}""")
        self.password_file = base / "smb-password"
        self.password_file.write_text(SMB_PASSWORD + "\n")
        self.password_file.chmod(0o600)
        self.set_password(SMB_PASSWORD)

    def set_password(self, password: str) -> None:
        sh(
            "smbpasswd",
            "-c",
            str(self.config),
            "-s",
            "-a",
            SMB_USER,
            input=f"{password}\n{password}\n",
        )

    def argv(self) -> list[str]:
        return ["/usr/sbin/smbd", "--foreground", "--no-process-group", "--debug-stdout",
                "-s", str(self.config)]  # fmt: skip

    def start(self) -> None:
        self._spawn(self.host, self.port)

    def smb_options(self, path: str = "incoming") -> dict:
        return {
            "plugin": "smb",
            "server": self.host,
            "port": self.port,
            "share": "nas",
            "path": path,
            "username": SMB_USER,
            "password_file": str(self.password_file),
        }


class NetNs:
    """A network namespace ``name`` joined to the host by veth: host .1, namespace .2."""

    def __init__(self, name: str, subnet: str = "10.77.0"):
        self.name = name
        self.host_if = f"{name[:8]}-h"
        self.ns_if = f"{name[:8]}-n"
        self.host_ip = f"{subnet}.1"
        self.ns_ip = f"{subnet}.2"
        self.remove()
        sh("ip", "netns", "add", name)
        sh("ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if)
        sh("ip", "link", "set", self.ns_if, "netns", name)
        sh("ip", "addr", "add", f"{self.host_ip}/24", "dev", self.host_if)
        self.ns("ip", "addr", "add", f"{self.ns_ip}/24", "dev", self.ns_if)
        self.ns("ip", "link", "set", "lo", "up")
        self.ns("ip", "link", "set", self.ns_if, "up")
        self.link(up=True)

    def ns(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return sh("ip", "netns", "exec", self.name, *argv, check=check)

    def link(self, *, up: bool) -> None:
        """Cut or restore the wire: the host end of the veth goes down or up."""
        sh("ip", "link", "set", self.host_if, "up" if up else "down")

    def shape(self, mbit: float, burst: str = "64kb") -> None:
        """Limit both directions to ``mbit`` with tbf (this kernel has no netem)."""
        for run, dev in ((sh, self.host_if), (self.ns, self.ns_if)):
            args = ["tc", "qdisc", "replace", "dev", dev, "root", "tbf",
                    "rate", f"{mbit}mbit", "burst", burst, "latency", "50ms"]  # fmt: skip
            if run is sh:
                sh(*args)
            else:
                self.ns(*args)

    def remove(self) -> None:
        sh("ip", "link", "del", f"{self.name[:8]}-h", check=False)
        sh("ip", "netns", "del", self.name, check=False)


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, user: str, read_only: bool = False):
    """Mount a small tmpfs owned by ``user`` at ``path`` (a NAS disk); unmounted on exit."""
    path.mkdir(parents=True, exist_ok=True)
    pw = pwd.getpwnam(user)
    opts = f"size={size},mode=0755,uid={pw.pw_uid},gid={pw.pw_gid}" + (",ro" if read_only else "")
    sh("mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path))
    try:
        yield path
    finally:
        sh("umount", "-l", str(path), check=False)


def remount(path: Path, options: str) -> None:
    """Change a mounted tmpfs: 'rw', 'ro', 'size=64M'."""
    sh("mount", "-o", f"remount,{options}", str(path))


def cleanup(base: Path) -> None:
    """Remove a server base directory (after its daemons stopped)."""
    shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def sshd_in_netns(name: str, subnet: str) -> Iterator[tuple[Sshd, NetNs]]:
    """An ``Sshd`` on port 2222 in its own namespace ``name`` (``subnet``.0/24); its base
    removed afterwards (the accounts stay: tests/transports uses them meanwhile)."""
    netns = NetNs(name, subnet=subnet)
    base = make_base()
    server = Sshd(base, host=netns.ns_ip, port=2222, netns=netns.name)
    server.start()
    yield server, netns
    server.stop()
    netns.remove()
    cleanup(base)


@contextlib.contextmanager
def sshd_behind_a_slow_link(
    base: Path, name: str, subnet: str, port: int, mbit: float
) -> Iterator[Sshd]:
    """An ``Sshd`` (its accounts under ``base / name``) in its own namespace ``name``
    behind a veth shaped to ``mbit``; removed with the namespace afterwards."""
    netns = NetNs(name, subnet=subnet)
    try:
        (base / name).mkdir()
        sshd = Sshd(base / name, host=netns.ns_ip, port=port, netns=netns.name)
        sshd.start()
        netns.shape(mbit)
        yield sshd
        sshd.stop()
    finally:
        netns.remove()
