"""A fleet whose NAS returns after an outage: every node back in seconds, spool freed as it goes.

Real `livecam ship` processes ship a spool backlog over rsync to a real sshd
(rrsync accounts as the NAS role renders them, its MaxStartups) in a network
namespace; the outage is the veth set down. The nodes' backoff is set far above
the bound (``retry.initial`` = ``retry.max`` = 600 s), so only the reachability
probe can bring a node back within the guard: without it this test fails.
How fast a fleet really comes back is measured by bench/fleet.py.

A NAS the role does not manage keeps sshd's defaults (``MaxStartups 10:30:100``:
past 10 connections not yet logged in, sshd drops new ones) and gives each key
a plain ``rrsync -wo``: 30 nodes returning to it together must make no
connection it drops, and every segment arrives.
"""

from __future__ import annotations

import re
import time

import pytest

from livecam.shipper.retry import PROBE_EVERY
from tests.core.node import wait_for
from tests.fleet.fleet import (
    DEFAULT,
    Clock,
    FleetNas,
    backlog,
    check_arrived,
    fleet_node,
    tear_down,
)
from tests.transports import servers

pytestmark = pytest.mark.slow

USER = "lcfleet-t"
NODES = 4
GUARD = 30.0  # s from the NAS's return to each node's first segment: a hang guard (bound: 10 s)
RETRY = {"initial": "600s", "max": "600s"}
RETRY_LINE = re.compile(r"publish failed \(transient\).*; retry \d+ in ([\d.]+)s")


@pytest.fixture
def fleet(tmp_path):
    base = servers.make_base()
    netns = servers.NetNs("lcfleetT", subnet="10.79.1")
    names = [f"lcfleet-n{i}" for i in range(NODES)]
    nas = FleetNas(base, netns, names, user=USER)
    nodes = {}
    try:
        nas.start()
        nodes = {n: fleet_node(tmp_path / n, nas, n, retry=RETRY) for n in names}
        yield netns, nas, nodes
    finally:
        tear_down(nodes, nas, netns, base, USER)


def test_a_returning_nas_is_noticed_within_seconds_and_spool_freed_as_it_goes(fleet):
    netns, nas, nodes = fleet
    netns.shape(8)  # 8 Mbit/s: the four backlogs take seconds, several rsync calls each
    made = {n: backlog(node.spool, cameras=2, count=4, size=256_000) for n, node in nodes.items()}
    netns.link(up=False)
    for node in nodes.values():
        node.start("ship")
    # Every node tried, failed, and now waits far longer than the guard.
    retry_at = {}
    for name, node in nodes.items():
        m = wait_for(lambda node=node: RETRY_LINE.search(node.log_text()), 60, f"{name} backs off")
        retry_at[name] = time.time() + float(m.group(1))
    time.sleep(2 * PROBE_EVERY + 1)  # the probes have found the NAS unreachable
    assert not any(any(nas.store(n).rglob("*.mp4")) for n in nodes)
    with Clock(nas, nodes) as clock:
        returned = time.time()
        netns.link(up=True)
        for name in nodes:
            wait_for(lambda name=name: clock.done(name), 120, f"{name} drained")
    # What happened: backoff waits the probe had to cut short, then the probe's word.
    late = [n for n, at in retry_at.items() if at > returned + GUARD]
    assert late, f"no node's backoff outlasted the guard: {retry_at}"
    for name, node in nodes.items():
        assert "the NAS answers again" in node.log_text(), name
    # Every node shipped its first segment within the guard of the NAS's return.
    first = {n: min(clock.arrived[n].values()) - returned for n in nodes}
    assert all(0 <= s <= GUARD for s in first.values()), first
    # Spool space came back during each node's drain, not at its end: a segment's
    # local copy was gone before the node's last segment reached the NAS.
    for name in nodes:
        assert min(clock.freed[name].values()) < max(clock.arrived[name].values()), name
    # Nothing lost, duplicated or partial; no connection dropped by sshd.
    for name, node in nodes.items():
        check_arrived(nas, name, made[name])
        assert not node.local_segments("spool")
    assert nas.drops() == 0, nas.log.read_text()[-2000:] if nas.log else ""


APPLIANCE_USER = "lcfleet-d"
APPLIANCE_NODES = 30
APPLIANCE_GUARD = 60.0  # s from the return to each node's first segment: a hang guard
DEFAULTS = {"initial": "1s", "max": "60s"}  # livecam's own backoff


@pytest.fixture
def appliance(tmp_path):
    """30 nodes and a NAS's sshd at its defaults, each key a plain ``rrsync -wo``."""
    base = servers.make_base()
    netns = servers.NetNs("lcfleetD", subnet="10.79.3")
    names = [f"lcfleet-d{i:02d}" for i in range(APPLIANCE_NODES)]
    nas = FleetNas(base, netns, names, user=APPLIANCE_USER, max_startups=DEFAULT, rrsync="-wo")
    nodes = {}
    try:
        nas.start()
        for n in names:
            nodes[n] = fleet_node(tmp_path / n, nas, n, timeout="60s", retry=DEFAULTS)
        yield netns, nas, nodes
    finally:
        tear_down(nodes, nas, netns, base, APPLIANCE_USER)


def test_a_fleet_returning_to_an_sshd_at_its_defaults_makes_no_connection_it_drops(appliance):
    netns, nas, nodes = appliance
    made = {n: backlog(node.spool, cameras=1, count=3, size=64_000) for n, node in nodes.items()}
    netns.link(up=False)
    for node in nodes.values():
        node.start("ship")
    for name, node in nodes.items():
        wait_for(lambda node=node: RETRY_LINE.search(node.log_text()), 60, f"{name} failed")
    time.sleep(2 * PROBE_EVERY + 1)  # the probes have found the NAS unreachable
    with Clock(nas, nodes) as clock:
        returned = time.time()
        netns.link(up=True)
        for name in nodes:
            wait_for(lambda name=name: clock.done(name), 180, f"{name} drained")
    first = sorted(min(clock.arrived[n].values()) - returned for n in nodes)
    print(f"first segment after the return: median {first[len(first) // 2]:.1f} s, "
          f"max {first[-1]:.1f} s; sshd: {nas.throttled()}")  # fmt: skip
    # sshd dropped no connection: it never even began throttling.
    assert nas.drops() == 0 and not nas.throttled(), nas.throttled()
    for name, node in nodes.items():
        check_arrived(nas, name, made[name])
        assert not node.local_segments("spool"), name
    assert first[-1] <= APPLIANCE_GUARD, first
