"""End to end: real ``livecam run`` recording two ffmpeg test patterns, shipping to a
real SeaweedFS that is stopped in the middle and started again.

Every closed segment must arrive once and byte-identical (the witness plugin logged
its digest before the node deleted it), and stay on the node while it cannot arrive.
"""

from __future__ import annotations

import pytest

from tests.core.node import (
    Node,
    assert_all_arrived,
    assert_records_arrived,
    assert_whole_segments,
    ship_through_a_restart,
)

pytestmark = pytest.mark.slow


def test_node_ships_through_an_object_store_outage(bucket, tmp_path):
    n = Node(tmp_path / "node", bucket.options())
    try:
        ship_through_a_restart(n, bucket, 60)
        closed = assert_all_arrived(n, bucket)
        assert_records_arrived(n, bucket)  # as JSON beside the videos (issue 22)
    finally:
        n.cleanup()
    assert_whole_segments(closed, bucket.segments(), 10)
    # The shipper's first connection probed the store and logged what it found;
    # status shows it from the first publish on (``describe`` makes no request).
    transport = n.status()["shipper"].get("transport", "")
    assert bucket.server.endpoint in transport and "conditional writes honoured" in transport
    assert "conditional writes honoured" in n.log_text()
