"""End to end: real ``livecam run`` recording two ffmpeg test patterns, shipping to a
real SeaweedFS that is stopped in the middle and started again.

Every closed segment must arrive once and byte-identical (the witness plugin logged
its digest before the node deleted it), and stay on the node while it cannot arrive.
"""

from __future__ import annotations

import pytest

from tests.conftest import ffprobe
from tests.core.node import Node, assert_all_arrived, wait_for

pytestmark = pytest.mark.slow


def test_node_ships_through_an_object_store_outage(bucket, tmp_path):
    n = Node(tmp_path / "node", bucket.options())
    try:
        proc = n.start()
        wait_for(lambda: len(bucket.segments()) >= 4, 60, "first segments published")
        bucket.server.stop()
        down = len(n.closed())
        wait_for(lambda: len(n.closed()) >= down + 4, 20, "recording goes on while down")
        status = n.status()["shipper"]
        assert status["last_error"] and not status["last_error"]["permanent"], status
        assert len(n.local_segments("buffer") + n.local_segments("spool")) >= 3
        bucket.server.start()
        wait_for(lambda: len(bucket.segments()) >= down + 4, 60, "shipping resumes by itself")
        assert n.stop(proc) == 0
        if n.local_segments("buffer") or n.local_segments("spool"):
            n.drain()
        closed = assert_all_arrived(n, bucket)
    finally:
        n.cleanup()
    files = bucket.segments()
    for cam in ("cam0", "cam1"):
        mine = sorted((c for c in closed if c["camera"] == cam), key=lambda c: c["seq"])
        assert len(mine) >= 4, cam
        for c in mine[:-1]:  # the last one was cut short by the stop
            assert ffprobe(files[c["name"]])["frames"] == 10, c["name"]
    assert "conditional writes honoured" in n.status()["shipper"].get("transport", ""), n.status()
