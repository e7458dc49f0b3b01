"""README "Change transport": segments waiting on a node ship through the new one.

The playbook renders the new ``transport:`` and restarts the shipper; here the
same two steps by hand. The node records while its NAS is away (every segment
waits in the spool), stops, gets a config naming another transport, and the
shipper alone delivers every one of them there, byte-identical.
"""

from __future__ import annotations

import pytest

from tests.conftest import write_config
from tests.core.node import Node, Share, Target, assert_all_arrived, wait_for

pytestmark = pytest.mark.slow


def test_changing_transport_ships_what_waits_through_the_new_one(tmp_path):
    old = Share(tmp_path / "old-nas")
    old.unmount()  # the old NAS is away: everything waits on the node
    n = Node(
        tmp_path / "node",
        {"plugin": "nfs", "path": str(old.mnt), "fstypes": ["tmpfs"]},
        spill_after="1s",
    )
    try:
        proc = n.start()
        wait_for(lambda: len(n.local_segments("spool")) >= 4, 30, "segments wait in the spool")
        assert n.stop(proc) == 0  # a clean stop spills what RAM held
        waiting = n.local_segments("buffer") + n.local_segments("spool")
        assert len(waiting) >= 4 and not old.segments(), "nothing went through the old one"
        new = Target(tmp_path / "new-nas")
        new.store.mkdir()
        n.config["transport"] = {"timeout": "10s", "plugin": "local", "path": str(new.store)}
        write_config(n.config_file, n.config)
        n.drain()
    finally:
        n.cleanup()
        old.close()
    closed = assert_all_arrived(n, new)
    waiting_names = {p.name for p in waiting}
    # Every camera segment waited (none reached the old NAS), and everything that
    # waited, the node's loss records included, is on the new one.
    assert {c["name"] for c in closed} <= waiting_names
    assert waiting_names <= {p.name for p in new.store.rglob("*.mp4")}
    assert not old.segments()
