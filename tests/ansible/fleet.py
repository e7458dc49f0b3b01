"""Real Debian trees, overlays, namespaces and ansible runs for the deployment tests.

The expensive part, a debootstrapped bookworm tree with every package the roles
install, is built once per machine under ``/var/cache/livecam-tests`` (keyed by a
hash of suite, variant, mirror and package list) and reused read-only: each test
tree is an overlayfs over it, so making three trees costs three mounts. A fleet
converged by site.yml is kept there too (``Converged``: the trees' upper dirs, keyed
by all that made them), mounted between the base and a fresh upper dir by the test
groups whose tests are not about a first converge.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
CACHE = Path(os.environ.get("LIVECAM_TEST_CACHE", "/var/cache/livecam-tests"))
SUITE = "bookworm"
VARIANT = "minbase"
# Everything the node and NAS roles install, plus python3-apt for ansible's apt
# module and systemd for `systemctl enable` and `systemd-analyze`. Both kinds of
# tree share one base; the roles' apt tasks then find their packages present.
PACKAGES = sorted([
    "ffmpeg", "openssh-client", "openssh-server", "prometheus-node-exporter", "python3",
    "python3-apt", "python3-venv", "rsync", "samba", "samba-vfs-modules", "systemd",
])  # fmt: skip

VAULT_PASSWORD = "vault-password"  # beside the inventory: ansible-vault's password file
RECAP_RE = re.compile(r"^(\S+)\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)",
                      re.M)  # fmt: skip


def apt_mirror() -> str:
    """The Debian mirror this machine's apt uses (deb822 or one-line sources)."""
    if os.environ.get("LIVECAM_TEST_MIRROR"):
        return os.environ["LIVECAM_TEST_MIRROR"]
    sources = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in sources:
        try:
            text = path.read_text()
        except OSError:
            continue
        for block in re.split(r"\n\s*\n", text):
            if f"{SUITE}" not in block or "security" in block:
                continue
            m = re.search(r"^URIs:\s*(\S+/debian)/?\s*$", block, re.M) or re.search(
                r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+/debian)/?\s+" + SUITE + r"\s", block, re.M
            )
            if m:
                return m.group(1)
    return "http://deb.debian.org/debian"


def base_tree() -> Path:
    """The cached base tree (built now if missing). Never write into it."""
    mirror = apt_mirror()
    key = hashlib.sha256(json.dumps([SUITE, VARIANT, mirror, PACKAGES]).encode()).hexdigest()[:16]
    home = CACHE / f"{SUITE}-{VARIANT}-{key}"
    root = home / "root"
    if (home / "complete").exists():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second test run waits for the first build
        if (home / "complete").exists():
            return root
        shutil.rmtree(home, ignore_errors=True)
        build = CACHE / f".build-{key}"
        shutil.rmtree(build, ignore_errors=True)
        subprocess.run(
            ["debootstrap", f"--variant={VARIANT}", "--include=" + ",".join(PACKAGES),
             SUITE, str(build), mirror],
            check=True, capture_output=True, timeout=1800,
        )  # fmt: skip
        subprocess.run(["chroot", str(build), "apt-get", "clean"], check=True, timeout=120)
        home.mkdir()
        build.rename(root)
        (home / "complete").write_text(json.dumps({"mirror": mirror, "packages": PACKAGES}))
    return root


class Cleanup:
    """Teardown actions, run in reverse order; one failing never skips the rest."""

    def __init__(self) -> None:
        self._actions: list[tuple[str, Callable[[], object]]] = []

    def push(self, what: str, action: Callable[[], object]) -> None:
        self._actions.append((what, action))

    def run(self) -> list[str]:
        errors = []
        while self._actions:
            what, action = self._actions.pop()
            try:
                action()
            except Exception as exc:
                errors.append(f"{what}: {exc}")
        return errors


def sh(*argv: str, check: bool = True, timeout: float = 60, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True, timeout=timeout, **kw)


def umount(path: Path) -> None:
    """Unmount, lazily if busy, and never fail when it is not mounted."""
    mounted = subprocess.run(["mountpoint", "-q", str(path)]).returncode == 0
    if mounted and subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=True)


def overlay_tree(
    base: Path, work: Path, name: str, cleanup: Cleanup, converged: Path | None = None
) -> Path:
    """A writable tree ``work/name/root`` over the read-only ``base`` (and over a
    cached converge of this tree, ``converged``: see ``Converged``)."""
    d = work / name
    upper, wd, root = d / "upper", d / "work", d / "root"
    for p in (upper, wd, root):
        p.mkdir(parents=True)
    lower = f"{converged}:{base}" if converged is not None else str(base)
    sh("mount", "-t", "overlay", "overlay", "-o",
       f"lowerdir={lower},upperdir={upper},workdir={wd}", str(root))  # fmt: skip
    cleanup.push(f"umount {root}", lambda: umount(root))
    return root


def digest(*roots: Path, extra: str = "") -> str:
    """sha256 over every file under ``roots`` (path and bytes; dot-folders such as
    ansible/.wheelhouse and __pycache__ left out) and ``extra``."""
    h = hashlib.sha256(extra.encode())
    for root in roots:
        for path in sorted(root.rglob("*")):
            rel = path.relative_to(root)
            skip = any(part.startswith(".") or part == "__pycache__" for part in rel.parts)
            if path.is_file() and not skip:
                h.update(f"{rel}\0".encode() + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


class Converged:
    """What site.yml wrote into each tree of a fleet (the overlays' upper dirs), kept
    per machine under ``CACHE/converged/KEY``, KEY a digest of all that made it
    (ansible/, the source, the inventory without its paths, the base tree). A test
    group whose tests are not about a first converge mounts it under its own trees
    instead of converging (one converge of five trees is minutes of CPU, and three
    groups ran one each at once); the ``ansible`` group converges for real and
    publishes. Entries are read-only once complete; the newest few are kept."""

    KEEP = 3

    def __init__(self, key: str):
        self.home = CACHE / "converged" / key
        self._lockfile = CACHE / "converged" / f".lock-{key}"

    def ready(self) -> bool:
        return (self.home / "complete").exists()

    def lock(self, wait: bool) -> IO[str] | None:
        """The entry's lock (held by whoever converges to publish it), or None when
        ``wait`` is false and someone else holds it. Close the returned file to
        release it."""
        self._lockfile.parent.mkdir(parents=True, exist_ok=True)
        lock = open(self._lockfile, "w")  # noqa: SIM115 - held past this call
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            lock.close()
            return None
        return lock

    def publish(self, uppers: dict[str, Path]) -> None:
        """Copy each tree's upper dir (whiteouts and overlay xattrs kept: cp -a) into
        the entry, then mark it complete; drop entries beyond the newest KEEP that
        no run touched for six hours (a run side by side may have one mounted)."""
        tmp = self.home.with_name(f".build-{self.home.name}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name, upper in uppers.items():
            sh("cp", "-a", str(upper), str(tmp / name), timeout=300)
        shutil.rmtree(self.home, ignore_errors=True)
        tmp.rename(self.home)
        (self.home / "complete").write_text(json.dumps(sorted(uppers)))
        entries = sorted((p for p in self.home.parent.iterdir() if not p.name.startswith(".")),
                         key=lambda p: p.stat().st_mtime, reverse=True)  # fmt: skip
        for old in entries[self.KEEP :]:
            if time.time() - old.stat().st_mtime > 6 * 3600:
                shutil.rmtree(old, ignore_errors=True)

    def tree(self, name: str) -> Path:
        os.utime(self.home)  # in use: not pruned for six hours
        return self.home / name


def mount_runtime(root: Path, cleanup: Cleanup) -> None:
    """/proc and a minimal /dev inside a tree, for running daemons in it."""
    sh("mount", "-t", "proc", "proc", str(root / "proc"))
    cleanup.push(f"umount {root}/proc", lambda: umount(root / "proc"))
    dev = root / "dev"
    sh("mount", "-t", "tmpfs", "-o", "mode=0755,nosuid", "tmpfs", str(dev))
    cleanup.push(f"umount {dev}", lambda: umount(dev))
    for name, major, minor in (("null", 1, 3), ("zero", 1, 5), ("random", 1, 8),
                               ("urandom", 1, 9), ("tty", 5, 0)):  # fmt: skip
        os.mknod(dev / name, 0o20666, os.makedev(major, minor))
        os.chmod(dev / name, 0o666)
    (dev / "shm").mkdir(mode=0o1777)
    os.chmod(dev / "shm", 0o1777)
    # As systemd makes them on a booted system (ffmpeg opens /dev/fd/N).
    (dev / "fd").symlink_to("/proc/self/fd")
    for n, name in enumerate(("stdin", "stdout", "stderr")):
        (dev / name).symlink_to(f"/proc/self/fd/{n}")


def fstab_mount(root: Path, mountpoint: str, cleanup: Cleanup) -> str:
    """Mount the tree's own fstab entry for ``mountpoint``; returns its options."""
    for line in (root / "etc/fstab").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 4 and not line.lstrip().startswith("#") and fields[1] == mountpoint:
            target = root / mountpoint.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            sh("mount", "-t", fields[2], "-o", fields[3], fields[0], str(target))
            cleanup.push(f"umount {target}", lambda target=target: umount(target))
            return fields[3]
    raise AssertionError(f"no fstab entry for {mountpoint} in {root}/etc/fstab")


def ansible_playbook(inventory: Path, *args: str, timeout: float = 900) -> tuple[str, dict]:
    """Run site.yml; returns its output and {host: (ok, changed, unreachable, failed)}."""
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0",
               ANSIBLE_RETRY_FILES_ENABLED="0", ANSIBLE_DEPRECATION_WARNINGS="0",
               ANSIBLE_LOCAL_TEMP=str(inventory.parent / "ansible-tmp"),
               PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")  # fmt: skip
    if (inventory.parent / VAULT_PASSWORD).exists():  # the smb node's secret is vaulted
        env["ANSIBLE_VAULT_PASSWORD_FILE"] = str(inventory.parent / VAULT_PASSWORD)
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-playbook"), "-i", str(inventory),
         str(REPO / "ansible" / "site.yml"), *args],
        capture_output=True, text=True, timeout=timeout, env=env, cwd=str(inventory.parent),
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    recap = {m[1]: tuple(int(x) for x in m.groups()[1:]) for m in RECAP_RE.finditer(out)}
    if proc.returncode != 0:
        raise AssertionError(f"ansible-playbook {' '.join(args)} failed:\n{out[-12000:]}")
    return out, recap


def netns_fleet(names: list[str], cleanup: Cleanup, prefix: str) -> dict[str, str]:
    """A NAS namespace with a bridge at 10.77.0.1 and one namespace per node.

    Returns {node: netns}; the NAS side of node i's link is ``{prefix}v{i}``.
    """
    nas = f"{prefix}-nas"
    sh("ip", "netns", "add", nas)
    cleanup.push(f"netns {nas}", lambda: sh("ip", "netns", "del", nas))
    sh("ip", "-n", nas, "link", "set", "lo", "up")
    sh("ip", "-n", nas, "link", "add", "br0", "type", "bridge")
    sh("ip", "-n", nas, "addr", "add", "10.77.0.1/24", "dev", "br0")
    sh("ip", "-n", nas, "link", "set", "br0", "up")
    spaces = {"nas": nas}
    for i, node in enumerate(names, start=1):
        ns = f"{prefix}-{node}"
        sh("ip", "netns", "add", ns)
        cleanup.push(f"netns {ns}", lambda ns=ns: sh("ip", "netns", "del", ns))
        outer = f"{prefix}v{i}"
        sh("ip", "link", "add", outer, "type", "veth", "peer", "name", f"{prefix}p{i}")
        cleanup.push(
            f"link {outer}", lambda outer=outer: sh("ip", "link", "del", outer, check=False)
        )
        sh("ip", "link", "set", outer, "netns", nas)
        sh("ip", "link", "set", f"{prefix}p{i}", "netns", ns)
        sh("ip", "-n", ns, "link", "set", f"{prefix}p{i}", "name", "eth0")
        sh("ip", "-n", ns, "addr", "add", f"10.77.0.{10 + i}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
        sh("ip", "-n", ns, "link", "set", "lo", "up")
        sh("ip", "-n", nas, "link", "set", outer, "master", "br0")
        sh("ip", "-n", nas, "link", "set", outer, "up")
        spaces[node] = ns
    return spaces


def wait_for(predicate: Callable[[], object], timeout: float, what: str, step: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)


def web_probe(token: str, path: str, port: int = 8470) -> str:
    """Python (for ``python3 -c``) that waits until ``livecam web`` listens, then prints
    the HTTP status of GET ``path`` without credentials and with the token."""
    return (
        "import time, urllib.request as u, urllib.error as e\n"
        "def get(auth):\n"
        f"    r = u.Request('http://127.0.0.1:{port}{path}', headers=auth)\n"
        "    try:\n"
        "        return u.urlopen(r, timeout=10).status\n"
        "    except e.HTTPError as x:\n"
        "        return x.code\n"
        "for _ in range(600):\n"
        "    try:\n"
        f"        print(get({{}}), get({{'Authorization': 'Bearer {token}'}}))\n"
        "        break\n"
        "    except OSError:\n"
        "        time.sleep(0.1)\n"
    )
