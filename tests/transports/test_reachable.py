"""Each transport's reachability probe asks its real server something, not just for
a TCP accept: a proxy or firewall may accept connections for a NAS that is down
(in this sandbox a bare connect succeeds with the link cut).

rsync and sftp read sshd's greeting; smb has smbd answer an SMB2 NEGOTIATE. Each
probe must say True against its real server and False against a listener that
accepts and says nothing (which a bare TCP-connect probe would call reachable).
"""

from __future__ import annotations

import pytest

from tests.core.node import wait_for
from tests.fleet.test_probe import Listener


@pytest.mark.parametrize("nas", ["rsync", "sftp", "smb"], indirect=True)
def test_the_probe_wants_the_servers_answer_not_just_a_tcp_accept(nas):
    t = nas.transport()
    assert t.reachable(5.0) is True  # the real sshd / smbd answers
    silent = Listener(b"")
    try:
        t.opts = {**t.opts, "port": silent.port}
        assert t.reachable(1.0) is False
        wait_for(lambda: silent.accepted, 10, "the probe's connection")  # it did connect
    finally:
        silent.close()
