"""A hung network mount (FUSE sshfs whose server froze) cannot freeze the shipper.

The share is a real sshfs mount of a real sshd's chrooted SFTP account on loopback.
SIGSTOP on the server makes every file operation on the mount hang, as a hard NFS
mount does when its server goes silent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest
from livecam_plugins.nfs import NfsTransport

from livecam.storage.files import file_digest
from livecam.transport import TransientError
from tests.core.node import Node, Target, assert_all_arrived, wait_for
from tests.transports.servers import (
    SFTP_USER,
    Sshd,
    cleanup,
    descendants,
    make_base,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def sshfs(tmp_path):
    base = make_base()
    server = Sshd(base, sftp_denied="")  # a file server standing in for NFS: links allowed
    server.start()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(
        ["sshfs", f"{SFTP_USER}@127.0.0.1:/upload", str(mnt), "-p", str(server.port),
         "-o", f"IdentityFile={server.client_key},UserKnownHostsFile={server.known_hosts},"
               "StrictHostKeyChecking=yes,BatchMode=yes,ServerAliveInterval=3600"],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    frozen: list[int] = []

    def freeze() -> None:
        frozen[:] = [server.proc.pid, *descendants(server.proc.pid)]
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)

    def thaw() -> None:
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)

    yield mnt, server, freeze, thaw
    thaw()
    server.stop()
    subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
    cleanup(base)  # the accounts stay: tests/transports uses them meanwhile


def test_publish_on_a_hung_mount_times_out(sshfs, tmp_path):
    mnt, _server, freeze, _thaw = sshfs
    segment = tmp_path / "cam0-20261126T120000Z-000001.mp4"
    segment.write_bytes(os.urandom(200_000))
    t = NfsTransport({"path": mnt, "fstypes": ["fuse.sshfs"]}, timeout=2)
    digest = file_digest(segment)
    assert t.publish(segment, "a/one.mp4", size=200_000, digest=digest) is True
    freeze()
    t0 = time.monotonic()
    with pytest.raises(TransientError, match="timed out"):
        t.publish(segment, "a/two.mp4", size=200_000, digest=digest)
    assert time.monotonic() - t0 < 6, "the shipper got its thread back"


def test_the_node_keeps_spilling_through_a_hung_mount_and_catches_up(sshfs, tmp_path):
    mnt, server, freeze, thaw = sshfs
    transport = {"plugin": "nfs", "path": str(mnt), "fstypes": ["fuse.sshfs"], "timeout": "2s"}
    node = Node(tmp_path / "node", transport)
    target = Target(server.sftp_root)
    try:
        proc = node.start()
        wait_for(lambda: len(target.segments()) >= 4, 30, "publishing through sshfs")
        freeze()
        wait_for(lambda: len(node.local_segments("spool")) >= 8, 30, "spilling while hung")
        # Status answers while the share hangs. Spilling no longer waits for the hung
        # attempt (its segment is copied while in flight), so the spool can fill
        # before that first attempt has timed out: wait for its verdict.
        status = wait_for(
            lambda: (s := node.status())["shipper"]["state"] in ("retrying", "alarm") and s,
            10,
            "status reports the hung publish",
        )
        assert "timed out" in status["shipper"]["last_error"]["message"]
        thaw()
        wait_for(lambda: not node.local_segments("spool"), 60, "caught up after the thaw")
        node.stop(proc)
        node.drain()
    finally:
        node.cleanup()
    assert_all_arrived(node, target)
