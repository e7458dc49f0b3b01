"""rsync through a real cut: sshd in a network namespace, the veth set down mid-file.

The link is shaped (tbf) so a file takes seconds to cross, then cut while it is
in flight. The attempt must fail as transient within the keepalive bound, no
partial file may ever be visible under the final name, and once the link is
back the same segment arrives intact.
"""

from __future__ import annotations

import contextlib
import os

import pytest

from livecam.storage.files import file_digest
from tests.conftest import sha256
from tests.core.node import Watcher, wait_for
from tests.transports import servers
from tests.transports.conftest import Attempt, Nas, backlog, retry_proves_what_arrived

pytestmark = pytest.mark.slow


def partial(nas: Nas) -> list:
    """Dot-named temps holding some bytes: a file in flight."""
    found = []
    for p in nas.hidden():
        with contextlib.suppress(FileNotFoundError):
            if p.stat().st_size > 0:
                found.append(p)
    return found


@pytest.fixture(scope="module")
def ns_sshd(base):
    netns = servers.NetNs("lc-cut", subnet="10.77.1")
    (base / "ns").mkdir()
    s = servers.Sshd(base / "ns", host=netns.ns_ip, port=2222, netns=netns.name)
    s.start()
    s.netns_obj = netns
    yield s
    s.stop()
    netns.remove()


def test_link_cut_mid_file_is_transient_and_heals(ns_sshd, tmp_path):
    netns = ns_sshd.netns_obj
    netns.shape(8)  # 8 Mbit/s: 6 MB take about 6 s
    nas = Nas("rsync", ns_sshd)
    t = nas.transport(timeout=60)
    seg = tmp_path / "cam0-20261126T121530Z-000001.mp4"
    seg.write_bytes(os.urandom(6_000_000))
    remote = f"lab/node01/cam0/{seg.name}"
    try:
        with Watcher(nas) as watcher:
            attempt = Attempt(
                lambda: t.publish(seg, remote, size=seg.stat().st_size, digest=file_digest(seg))
            )
            # Cut once data flows into the temp and before the final name exists.
            wait_for(lambda: partial(nas), 30, "the temp receiving data", interval=0.05)
            netns.link(up=False)
            assert not nas.segments(), "the cut came mid-file"
            attempt.failed_transient(timeout=60)
            # Noticed by keepalives/--timeout in seconds, not by TCP's minutes.
            assert attempt.seconds < 35
            assert not nas.segments(), "a partial file is visible under the final name"
            netns.link(up=True)
            assert t.publish(seg, remote, size=seg.stat().st_size, digest=file_digest(seg))
        assert sha256(nas.segments()[seg.name]) == sha256(seg)
        # Whenever the final name was visible, it held the whole file.
        assert watcher.seen.get(seg.name, set()) <= {seg.stat().st_size}
    finally:
        netns.link(up=True)
        nas.close()  # the master connection and its control directory


def test_link_cut_mid_batch_keeps_what_is_unproven_and_heals(ns_sshd, tmp_path):
    netns = ns_sshd.netns_obj
    netns.shape(8)  # 8 x 750 KB take about 6 s
    nas = Nas("rsync", ns_sshd)
    t = nas.transport(timeout=60)
    items = backlog(tmp_path, 8, size=750_000)
    done: list = []
    try:
        with Watcher(nas) as watcher:
            attempt = Attempt(lambda: done.extend(t.publish_batch(items)))
            # Cut once some files are renamed into place, the rest to come.
            wait_for(nas.segments, 30, "a first segment renamed into place", interval=0.05)
            netns.link(up=False)
            at_cut = len(nas.segments())
            attempt.failed_transient(timeout=60)
            assert attempt.seconds < 35
            # Nothing is handed back (so nothing deleted locally) without proof.
            assert not done
            assert 0 < at_cut < len(items), "the cut came mid-batch"
            assert len(nas.segments()) < len(items)
            netns.link(up=True)
            retry_proves_what_arrived(t, items, nas, watcher)
    finally:
        netns.link(up=True)
        nas.close()  # the master connection and its control directory
