"""A fleet of real ``livecam ship`` nodes and the one NAS sshd they ship to.

Shared by tests/fleet and bench/fleet.py. The NAS is OpenSSH's sshd in a network
namespace behind a veth (``tests.transports.servers.NetNs``: ``link(up=False)``
is a real outage, ``shape`` a real tbf-limited link), with one account whose
authorized_keys give each node's key ``rrsync`` below its own
``<root>/<site>/<node>`` directory, exactly as the NAS role renders it (its
rrsync options and its MaxStartups rule are read from the role). Each node is a
``tests.core.node.Node`` whose spool holds a backlog of closed segments, shipped
by ``livecam ship`` over the rsync transport.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from livecam.storage.segment import segment_name
from tests.core.node import Node
from tests.transports import servers

SITE = "lab"
# sshd logs each connection it drops past MaxStartups (at VERBOSE; only the first
# of a burst at INFO) and the start and end of a burst.
DROPS = re.compile(r"drop connection #\d+ .*past MaxStartups")
THROTTLING = re.compile(r"MaxStartups throttling")
DEFAULT = "default"  # max_startups: no MaxStartups line, sshd's own 10:30:100


def role_max_startups(ssh_nodes: int) -> str:
    """sshd's MaxStartups as the NAS role renders it for ``ssh_nodes`` nodes."""
    base = int(servers.nas_role_var("__livecam_nas_startups_base"))
    per_node = int(servers.nas_role_var("__livecam_nas_startups_per_node"))
    start = base + per_node * ssh_nodes
    return f"{start}:30:{start + 100}"


class FleetNas(servers.Daemon):
    """sshd in ``netns`` with one rrsync-restricted account ``user`` for ``nodes``."""

    def __init__(
        self,
        base: Path,
        netns: servers.NetNs,
        nodes: list[str],
        *,
        user: str,
        max_startups: str | None = None,
        rrsync: str = servers.RRSYNC_OPTIONS,
    ):
        """``max_startups``: the sshd line's value; None renders the NAS role's rule,
        ``DEFAULT`` leaves sshd's own. ``rrsync``: the keys' rrsync options (the
        role's; ``-wo`` for a NAS the role does not manage)."""
        super().__init__(netns.name)
        self.host, self.port, self.user = netns.ns_ip, 22, user
        self.dir = base / "sshd"
        self.dir.mkdir(mode=0o755)
        self.log = self.dir / "sshd.log"
        self.host_key = servers.keygen(self.dir / "host_ed25519")
        self.known_hosts = base / "known_hosts"
        self.root = base / "nas"  # <root>/<site>/<node> per node, as the role lays it out
        account = servers.ensure_user(user)
        self.keys: dict[str, Path] = {}
        lines = []
        for node in nodes:
            d = self.root / SITE / node
            d.mkdir(parents=True)
            for p in (self.root, self.root / SITE, d):
                os.chown(p, account.pw_uid, account.pw_gid)
            key = servers.keygen(base / f"{node}_key")
            self.keys[node] = key
            pub = " ".join(key.with_suffix(".pub").read_text().split()[:2])
            lines.append(f'command="rrsync {rrsync} {d}",restrict {pub} {node}\n')
        keys = self.dir / "authorized_keys"
        keys.mkdir(mode=0o755)
        (keys / user).write_text("".join(lines))
        self.max_startups = max_startups or role_max_startups(len(nodes))
        self.rrsync = rrsync
        self.config = self.dir / "sshd_config"
        self.config.write_text(
            servers.sshd_config(self.host, self.port, self.host_key, keys, user)
            + "LogLevel VERBOSE\n"  # every dropped connection, not only a burst's first
            + ("" if self.max_startups == DEFAULT else f"MaxStartups {self.max_startups}\n")
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        pub = self.host_key.with_suffix(".pub").read_text().split()
        self.known_hosts.write_text(f"{self.host} {pub[0]} {pub[1]}\n")

    def argv(self) -> list[str]:
        return ["/usr/sbin/sshd", "-D", "-E", str(self.log), "-f", str(self.config)]

    def start(self) -> None:
        self._spawn(self.host, self.port)

    def transport(self, node: str) -> dict:
        """The node's ``transport:`` mapping (rsync, as the node role renders it)."""
        return {
            "plugin": "rsync",
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "path": ".",
            "identity_file": str(self.keys[node]),
            "known_hosts_file": str(self.known_hosts),
        }

    def store(self, node: str) -> Path:
        return self.root / SITE / node

    def drops(self) -> int:
        """Connections sshd dropped past MaxStartups (the lines of its log)."""
        return sum(1 for ln in self.log_lines() if DROPS.search(ln))

    def throttled(self) -> list[str]:
        """sshd's lines on its MaxStartups throttling (its start and end, with a count)."""
        return [ln for ln in self.log_lines() if THROTTLING.search(ln)]

    def log_lines(self) -> list[str]:
        if self.log is None or not self.log.exists():
            return []
        return self.log.read_text(errors="replace").splitlines()


def backlog(spool: Path, cameras: int, count: int, size: int) -> dict[str, str]:
    """Closed segments in ``spool`` (``cameras`` x ``count`` of ``size`` bytes, an
    hour old); returns {name: sha256}."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
    block = os.urandom(size)
    made = {}
    for c in range(cameras):
        cam = f"cam{c}"
        (spool / cam).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = segment_name(cam, start + timedelta(seconds=30 * i), i)
            data = os.urandom(64) + block[64:]  # unique per file, cheap to make
            (spool / cam / name).write_bytes(data)
            made[name] = hashlib.sha256(data).hexdigest()
    return made


def fleet_node(root: Path, nas: FleetNas, name: str, timeout: str = "10s", **overrides) -> Node:
    """A node ``name`` shipping to ``nas`` (rsync, the node role's remote layout)
    with ``timeout`` per segment."""
    return Node(
        root,
        {**nas.transport(name), "timeout": timeout},
        node=name,
        site=SITE,
        remote_path="{camera}/{date}/{name}",
        spool={"max_bytes": "10G"},
        **overrides,
    )


class Clock:
    """Polls the NAS and the nodes' spools; when each segment first had its final
    name on the NAS, and when its spool copy was gone."""

    def __init__(self, nas: FleetNas, nodes: dict[str, Node], interval: float = 0.1):
        self.nas, self.nodes, self.interval = nas, nodes, interval
        self.arrived: dict[str, dict[str, float]] = {n: {} for n in nodes}
        self.freed: dict[str, dict[str, float]] = {n: {} for n in nodes}
        self._local: dict[str, set[str]] = {
            n: {p.name for p in node.spool.glob("*/*.mp4")} for n, node in nodes.items()
        }
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Clock:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, node in self.nodes.items():
                now = time.time()
                arrived = self.arrived[name]
                for p in self.nas.store(name).rglob("*.mp4"):
                    if not p.name.startswith(".") and p.name not in arrived:
                        arrived[p.name] = now
                left = {p.name for p in node.spool.glob("*/*.mp4")}
                for gone in self._local[name] - left:
                    self.freed[name].setdefault(gone, now)
            self._stop.wait(self.interval)

    def done(self, name: str) -> bool:
        return len(self.freed[name]) == len(self._local[name])


def check_arrived(nas: FleetNas, node: str, made: dict[str, str]) -> None:
    """Every segment of ``made`` is on the NAS once, byte-identical; no temp left."""
    store = nas.store(node)
    files = [p for p in store.rglob("*") if p.is_file()]
    hidden = [p for p in files if p.name.startswith(".")]
    assert not hidden, f"{node}: temp files left on the NAS: {hidden[:3]}"
    names = [p.name for p in files]
    assert len(names) == len(set(names)), f"{node}: a segment is on the NAS twice"
    assert sorted(names) == sorted(made), f"{node}: lost or extra segments"
    for p in files:
        assert hashlib.sha256(p.read_bytes()).hexdigest() == made[p.name], f"{p} differs"


def tear_down(nodes: dict[str, Node], nas: FleetNas, netns: servers.NetNs, base: Path,
              user: str) -> None:  # fmt: skip
    """End a fleet: its nodes, the NAS's sshd, the namespace, the account."""
    for node in nodes.values():
        node.cleanup()
    nas.stop()
    netns.remove()
    servers.cleanup(base)
    servers.remove_user(user)


def wipe(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
