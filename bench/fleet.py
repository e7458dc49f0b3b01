"""Benchmark a fleet catching up: N real shippers against one plain rsync, one shaped link.

    flock /tmp/lc-lock-fleet .venv/bin/python bench/fleet.py --nodes 30 [--outage 100]
        [--cameras 2] [--segments 20] [--segment-mb 2] [--mbit 100]
        [--max-startups role|default] [--rrsync role|plain] [--no-plain] [--first-only]
        [--report FILE]
    flock /tmp/lc-lock-fleet .venv/bin/python bench/fleet.py --nodes 10 --probe-cost 2
    flock /tmp/lc-lock-fleet .venv/bin/python bench/fleet.py --sweep [--outage 100]

One NAS sshd runs in a network namespace behind a veth pair shaped with tc tbf
(``--mbit``), with one account whose authorized_keys confine each node's key to
``rrsync`` below its own directory, and the MaxStartups line, as the NAS role
renders them (``--max-startups default`` leaves sshd's own 10:30:100 and
``--rrsync plain`` gives the keys a plain ``rrsync -wo``: a NAS the role does
not manage). sshd logs at VERBOSE to its own file (``-E``): every connection it
drops past MaxStartups is a line. Each of ``--nodes`` nodes is a real ``livecam ship``
process with a spool backlog of cameras x segments x segment-mb, shipping over
the rsync transport. First, one plain ``rsync -a`` sends the same bytes (every
node's spool) over the same link; then the fleet starts at once. With
``--outage S`` the link is down when the fleet starts and comes back after S
seconds; times are then counted from its return.

Prints JSON: fleet drain as a fraction of the plain tool (plain seconds / the
fleet's seconds until the last node's spool is empty), node completion
min/median/max, first arrival on the NAS per node (min/median/max), sshd
drops (its log's "MaxStartups"/"drop connection" lines), failed publishes
(the shippers' own counts), CPU seconds (the shipper and the rsync/ssh
children it waited for) and peak RSS per node. Checks every segment arrived
once, intact, with no temp left. Also where each node's first seconds went
(``phases_s``, from the shippers' logs: probe answered, ssh connection started
and up, first segment published) and how many segments were on the NAS when the
last node's first one arrived. ``--probe-cost MINUTES`` measures instead what
reaches the NAS per node per minute while it is unreachable (iptables counters
in its namespace): MINUTES with the link down, then MINUTES with sshd stopped.
``--sweep`` runs the return after ``--outage`` (default 100 s) with
``--first-only`` at 30 and 50 nodes, against sshd at its defaults with plain
``rrsync -wo`` keys and against the role's settings, and prints one row each:
time to each node's first segment after the return (p50, max), sshd's drops,
the nodes' "busy" retries. Needs root.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import ClassVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.core.node import Node, wait_for  # noqa: E402
from tests.fleet.fleet import (  # noqa: E402
    DEFAULT,
    Clock,
    FleetNas,
    backlog,
    check_arrived,
    fleet_node,
    tear_down,
)
from tests.transports import servers  # noqa: E402

USER = "lcfleet-b"
MiB = 1024 * 1024
RETRY_DEFAULTS = {"initial": "1s", "max": "60s"}
FAILED = re.compile(r"publish failed \((?:transient|PERMANENT)\): (.*?)(?:; retry \d+ in|$)", re.M)
LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+\[\d+\]: (.*)$", re.M)
UP = re.compile(r"ssh connection to \S+ up in ([\d.]+)s(?: \(sshd greeted in ([\d.]+)s\))?")
BUSY = "sshd closed the connection before its greeting"


def spread(values: list[float]) -> dict[str, float]:
    return {
        "min": round(min(values), 1),
        "median": round(statistics.median(values), 1),
        "max": round(max(values), 1),
    }


def usage(pid: int) -> tuple[float, int]:
    """(CPU seconds of ``pid`` and its reaped children, peak RSS in KiB)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    hwm = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return ticks / os.sysconf("SC_CLK_TCK"), hwm


def phases(log: str, t_ref: float) -> dict[str, float | None]:
    """Where one node's first seconds after ``t_ref`` went, from its own log:
    its probe's first answer, its ssh connection started and up, its first
    segment published; the failed attempts before that; its first call's size."""
    events = [
        (datetime.strptime(t, "%Y-%m-%d %H:%M:%S,%f").timestamp() - t_ref, msg)
        for t, msg in LINE.findall(log)
    ]
    events = [(t, m) for t, m in events if t >= 0]

    def first(prefix: str) -> float | None:
        return next((t for t, m in events if m.startswith(prefix)), None)

    published = first("published ")
    up = next(
        ((t, float(m.group(1)), m.group(2)) for t, msg in events if (m := UP.match(msg))), None
    )
    before = [m for t, m in events if published is None or t < published]
    return {
        "probe_answered": first("the NAS answers again"),
        "connect_started": up[0] - up[1] if up else None,
        "connected": up[0] if up else None,
        "greeted_in": float(up[2]) if up and up[2] else None,
        "first_published": published,
        "failed_before": sum(1 for m in before if m.startswith("publish failed")),
        "first_call_segments": sum(
            1 for t, m in events if m.startswith("published ") and t - (published or 0) < 0.3
        ),
    }


STATS = {"min": min, "median": statistics.median, "max": max}


def phase_spreads(per_node: list[dict[str, float | None]]) -> dict[str, object]:
    """Each phase's min/median/max over the nodes (and how many nodes lack it)."""
    out: dict[str, object] = {}
    for key in per_node[0]:
        values = [float(p[key]) for p in per_node if p[key] is not None]
        out[key] = spread(values) if values else None
        if key == "greeted_in" and values:  # hundredths of a second
            out[key] = {k: round(f(values), 3) for k, f in STATS.items()}
        if len(values) < len(per_node):
            out[key + "_missing"] = len(per_node) - len(values)
    return out


class NasCounters:
    """iptables counters in the NAS's namespace: packets, and SYNs to sshd's port."""

    def __init__(self, netns: servers.NetNs, port: int):
        self.netns = netns
        self.ns("iptables", "-w", "-I", "INPUT", "1")  # every packet in
        self.ns("iptables", "-w", "-I", "INPUT", "1", "-p", "tcp", "--syn", "--dport", str(port))

    def ns(self, *argv: str) -> str:
        done = subprocess.run(["ip", "netns", "exec", self.netns.name, *argv],
                              check=True, capture_output=True, text=True)  # fmt: skip
        return done.stdout

    def read(self) -> tuple[int, int]:
        """(SYNs to the port, packets) since the rules were made."""
        rows = self.ns("iptables", "-w", "-L", "INPUT", "-v", "-x", "-n").splitlines()[2:4]
        syns, packets = (int(r.split()[0]) for r in rows)
        return syns, packets


def probe_cost(nas: FleetNas, netns: servers.NetNs, nodes: dict[str, Node],
               minutes: int) -> dict:  # fmt: skip
    """Packets and SYNs reaching the NAS per node per minute while it is unreachable:
    first with the link down, then with the link up and sshd stopped (SYNs refused)."""
    counters = NasCounters(netns, nas.port)
    result: dict[str, list[dict[str, float]]] = {"link_down": [], "sshd_stopped": []}
    netns.link(up=False)
    for node in nodes.values():
        node.start("ship")
    for kind in result:
        if kind == "sshd_stopped":
            nas.stop()
            netns.link(up=True)
        for _ in range(minutes):
            before = counters.read()
            time.sleep(60)
            after = counters.read()
            result[kind].append({
                "syns": round((after[0] - before[0]) / len(nodes), 1),
                "packets": round((after[1] - before[1]) / len(nodes), 1),
            })  # fmt: skip
    return {"per_node_per_minute": result, "note": "minute 1 of link_down includes the start"}


class SshdWatch:
    """When sshd's log gained each line of interest (its -E log has no times):
    connections accepted, logins, drops; sampled every 0.1 s in a thread."""

    KINDS: ClassVar = {"connections": "Connection from ", "logins": "Accepted publickey",
             "drops": "drop connection #"}  # fmt: skip

    def __init__(self, nas: FleetNas):
        self.nas = nas
        self.seen: dict[str, list[float]] = {k: [] for k in self.KINDS}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            now = time.time()
            lines = self.nas.log_lines()
            for kind, text in self.KINDS.items():
                count = sum(1 for ln in lines if text in ln)
                self.seen[kind] += [now] * (count - len(self.seen[kind]))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def per_second(self, t_ref: float, seconds: int = 30) -> dict[str, list[int]]:
        """Each kind's count in each second after ``t_ref``."""
        return {
            kind: [sum(1 for t in times if s <= t - t_ref < s + 1) for s in range(seconds)]
            for kind, times in self.seen.items()
        }


def plain_rsync(nas: FleetNas, first: str, nodes: dict[str, Node]) -> float:
    """One ``rsync -a`` of every node's spool (hard links, no copy) over the same link."""
    src = Path(tempfile.mkdtemp(prefix="lcfleet-plain-", dir=nas.root.parent))
    for name, node in nodes.items():
        for f in node.spool.glob("*/*.mp4"):
            (src / name / f.parent.name).mkdir(parents=True, exist_ok=True)
            os.link(f, src / name / f.parent.name / f.name)
    ssh = ["ssh", "-F", "none", "-i", str(nas.keys[first]), "-o", "IdentitiesOnly=yes",
           "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={nas.known_hosts}"]  # fmt: skip
    t0 = time.monotonic()
    subprocess.run(
        ["rsync", "-a", "-e", " ".join(ssh), f"{src}/", f"{nas.user}@{nas.host}:plain/"],
        check=True,
        capture_output=True,
    )
    seconds = time.monotonic() - t0
    shutil.rmtree(src)
    shutil.rmtree(nas.store(first) / "plain")
    return seconds


def run(args: argparse.Namespace) -> dict:
    base = servers.make_base()
    netns = servers.NetNs("lcfleetB", subnet="10.79.2")
    names = [f"lcfleet-b{i:03d}" for i in range(args.nodes)]
    startups = DEFAULT if args.max_startups == "default" else None
    rrsync = "-wo" if args.rrsync == "plain" else servers.RRSYNC_OPTIONS
    nas = FleetNas(base, netns, names, user=USER, max_startups=startups, rrsync=rrsync)
    nodes: dict[str, Node] = {}
    try:
        netns.shape(args.mbit, burst="256kb")
        nas.start()
        size = int(args.segment_mb * MiB)
        made = {}
        for name in names:
            # livecam's own timeout and backoff defaults (tests.core.node's are short).
            node = fleet_node(
                base / "nodes" / name, nas, name, timeout="120s", retry=RETRY_DEFAULTS
            )
            nodes[name] = node
            made[name] = backlog(node.spool, args.cameras, args.segments, size)
        total = sum(len(m) for m in made.values()) * size
        if args.probe_cost:
            return {"nodes": args.nodes, **probe_cost(nas, netns, nodes, args.probe_cost)}
        plain = 0.0 if args.no_plain else plain_rsync(nas, names[0], nodes)
        print(f"plain rsync -a: {total / MiB:.0f} MiB in {plain:.1f} s", file=sys.stderr)
        if args.outage:
            netns.link(up=False)
        watch = SshdWatch(nas)
        with Clock(nas, nodes, interval=0.25) as clock:
            started = time.time()
            procs = {name: node.start("ship") for name, node in nodes.items()}
            t_ref = started
            if args.outage:
                time.sleep(args.outage)
                t_ref = time.time()
                netns.link(up=True)
            for name in names:
                if args.first_only:
                    wait_for(lambda name=name: clock.arrived[name], 120, f"{name} arrives", 0.5)
                else:
                    wait_for(lambda n=name: clock.done(n), args.timeout, f"{name} drained", 0.5)
        watch.stop()
        first = [min(clock.arrived[n].values()) - t_ref for n in names]
        # Segments (of any node) on the NAS by the time the last node's first one was:
        # beyond one per node, the link went to calls that competed with first ones.
        by_last_first = sum(
            1 for n in names for at in clock.arrived[n].values() if at - t_ref <= max(first)
        )
        return_figures = {
            "first_arrival_s": spread(first),
            "segments_on_nas_at_last_first_arrival": by_last_first,
            "phases_s": phase_spreads([phases(nodes[n].log_text(), t_ref) for n in names]),
            "sshd_drops": nas.drops(),
            "sshd_throttling": nas.throttled(),
            "busy_retries": sum(nodes[n].log_text().count(BUSY) for n in names),
            "sshd_per_second_after": watch.per_second(t_ref),
        }
        if args.first_only:
            return {
                "nodes": args.nodes,
                "outage_s": args.outage,
                "max_startups": nas.max_startups,
                "rrsync": nas.rrsync,
                **return_figures,
            }
        cpu, rss = {}, {}
        for name, proc in procs.items():
            cpu[name], rss[name] = usage(proc.pid)
        for node in nodes.values():
            node.stop()
        failed, reasons = {}, collections.Counter()
        for name, node in nodes.items():
            state = json.loads((node.buffer / ".livecam" / "shipper.json").read_text())
            failed[name] = state["failures"]
            for m in FAILED.finditer(node.log_text()):
                reasons[m.group(1)[:100]] += 1
        for name in names:
            check_arrived(nas, name, made[name])
        done = [max(clock.freed[n].values()) - t_ref for n in names]
        first_freed = [min(clock.freed[n].values()) - t_ref for n in names]
        # How long each segment's spool copy outlived its arrival on the NAS.
        kept_at = sorted(
            (clock.freed[n][seg] - at, n, seg, at - t_ref)
            for n in names
            for seg, at in clock.arrived[n].items()
            if seg in clock.freed[n]
        )
        kept = [k[0] for k in kept_at]
        return {
            "nodes": args.nodes,
            "backlog_per_node": f"{args.cameras} cameras x {args.segments} x {args.segment_mb} MiB",
            "link_mbit": args.mbit,
            "outage_s": args.outage,
            "max_startups": nas.max_startups,
            "bytes": total,
            "plain_rsync_s": round(plain, 1),
            "fleet_s": round(max(done), 1),
            "fraction_of_plain": round(plain / max(done), 3) if plain else None,
            "completion_s": spread(done),
            "slowest_over_median": round(max(done) / statistics.median(done), 2),
            **return_figures,
            "first_freed_s": spread(first_freed),
            "spool_copy_kept_after_arrival_s": {
                "median": round(statistics.median(kept), 1),
                "p95": round(sorted(kept)[int(0.95 * (len(kept) - 1))], 1),
                "max": round(max(kept), 1),
            },
            # The three longest: which node and segment, and when it arrived.
            "spool_copy_kept_longest": [
                {"s": round(k, 1), "node": n, "segment": seg, "arrived_s": round(at, 1)}
                for k, n, seg, at in kept_at[-3:]
            ],
            "failed_publishes": sum(failed.values()),
            "failed_publishes_max_node": max(failed.values()),
            "failure_reasons": dict(reasons.most_common(5)),
            "cpu_s_per_node": spread(list(cpu.values())),
            "cpu_s_per_node_per_gib": round(
                statistics.mean(cpu.values()) / (total / args.nodes / 1024**3), 1
            ),
            "rss_mib_per_node": spread([v / 1024 for v in rss.values()]),
            "lost_duplicated_partial": 0,  # check_arrived raised otherwise
        }
    finally:
        tear_down(nodes, nas, netns, base, USER)


def sweep(args: argparse.Namespace) -> list[dict]:
    """The return at 30 and 50 nodes, sshd at its defaults with plain ``rrsync -wo``
    keys and with the role's settings: one row each (``--sweep``)."""
    rows = []
    for nodes in (30, 50):
        for nas in ("default", "role"):
            args.nodes, args.max_startups, args.rrsync = nodes, nas, nas.replace("default", "plain")
            args.first_only = args.no_plain = True
            args.outage = args.outage or 100.0
            r = run(args)
            rows.append({
                "nodes": nodes,
                "nas": "sshd defaults, rrsync -wo" if nas == "default" else "the role's settings",
                "first_segment_after_return_p50_s": r["first_arrival_s"]["median"],
                "first_segment_after_return_max_s": r["first_arrival_s"]["max"],
                "sshd_drops": r["sshd_drops"],
                "busy_retries": r["busy_retries"],
            })  # fmt: skip
            print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", type=int, default=10)
    ap.add_argument("--cameras", type=int, default=2)
    ap.add_argument("--segments", type=int, default=20, help="per camera")
    ap.add_argument("--segment-mb", type=float, default=2.0, help="MiB per segment")
    ap.add_argument("--mbit", type=float, default=100.0, help="the tbf-shaped link")
    ap.add_argument("--outage", type=float, default=0.0, help="seconds the link is down first")
    ap.add_argument("--max-startups", choices=("role", "default"), default="role")
    ap.add_argument("--rrsync", choices=("role", "plain"), default="role",
                    help="the keys' rrsync options: the role's, or a plain -wo")  # fmt: skip
    ap.add_argument("--sweep", action="store_true",
                    help="30 and 50 nodes, sshd's defaults and the role's")  # fmt: skip
    ap.add_argument("--timeout", type=float, default=1800.0, help="per node, seconds")
    ap.add_argument("--no-plain", action="store_true", help="skip the plain rsync run")
    ap.add_argument("--first-only", action="store_true",
                    help="stop once every node's first segment arrived")  # fmt: skip
    ap.add_argument(
        "--probe-cost",
        type=int,
        default=0,
        metavar="MINUTES",
        help="only measure what reaches the NAS per node per minute while it is "
        "unreachable: MINUTES with the link down, then MINUTES with sshd stopped",
    )
    ap.add_argument("--report", type=Path, help="write the JSON here too")
    args = ap.parse_args()
    result = sweep(args) if args.sweep else run(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.report:
        args.report.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
