"""sftp: in a batch ``workers`` segments (default 6) share the link, so each
one's time limit is ``timeout`` x ``workers`` (docs/transports.md, sftp). sshd
sits in a network namespace behind a shaped veth, so six segments in flight each
take longer than two of one segment's ``timeout`` and still go.
"""

from __future__ import annotations

import time

import pytest

from tests.conftest import sha256
from tests.transports import servers
from tests.transports.conftest import Nas, backlog

pytestmark = pytest.mark.slow

TIMEOUT = 2.0


@pytest.fixture(scope="module")
def shaped_sshd(base):
    # 8 Mbit/s: six 1 MB segments side by side take about 6 s each.
    with servers.sshd_behind_a_slow_link(base, "lc-sftplim", "10.77.21", 2222, 8) as sshd:
        yield sshd


def test_each_segment_of_a_batch_may_take_timeout_times_workers(shaped_sshd, tmp_path):
    nas = Nas("sftp", shaped_sshd)
    try:
        t = nas.transport(timeout=TIMEOUT)
        items = backlog(tmp_path, 6, size=1_000_000)
        t0 = time.monotonic()
        done = list(t.publish_batch(items))
        seconds = time.monotonic() - t0
    finally:
        nas.close()
    # One round of six: each segment outlived two timeouts, and none was cut off.
    assert seconds > 2 * TIMEOUT, seconds
    assert sorted(i.local for i, _ in done) == sorted(i.local for i in items)
    assert all(sent for _, sent in done)
    got = nas.segments()
    for item in items:
        assert sha256(got[item.local.name]) == sha256(item.local)
