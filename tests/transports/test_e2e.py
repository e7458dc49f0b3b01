"""End to end per transport: real `livecam run` recording ffmpeg test patterns, shipping
to a real server that is stopped and started again in the middle.

Every closed segment must arrive once and byte-identical (the witness plugin
logged its digest before the node deleted it), decode to a full second of
frames, never be visible partially, and stay on the node until it arrived.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import command_lines, ffprobe
from tests.core.node import Node, Watcher, assert_all_arrived, wait_for
from tests.transports.servers import SMB_PASSWORD

pytestmark = pytest.mark.slow

FRAMES_PER_SEGMENT = 10  # Node's cameras: 10 fps, 1 s segments


def drain(n: Node) -> None:
    # Node.drain SIGTERMs a shipper that may not have set its handlers yet when
    # there is nothing to do (exit -15); only drain what is there.
    if n.local_segments("buffer") or n.local_segments("spool"):
        n.drain()


def secrets_of(options: dict) -> list[str]:
    """The smb password and a line of the ssh private key this node uses."""
    secrets = [SMB_PASSWORD]
    if "identity_file" in options:
        lines = Path(options["identity_file"]).read_text().splitlines()
        secrets.append(lines[len(lines) // 2])
    return secrets


def test_node_ships_through_a_server_restart(nas, tmp_path):
    n = Node(tmp_path / "node", nas.options())
    try:
        with Watcher(nas) as watcher:
            proc = n.start()
            wait_for(lambda: len(nas.segments()) >= 4, 40, "first segments published")
            # Secrets never in argv: every command line while the node ships.
            secrets = secrets_of(nas.options())
            leaks = [(pid, s) for pid, cmd in command_lines() for s in secrets if s in cmd]
            assert not leaks, leaks
            nas.server.stop()
            down = len(n.closed())
            wait_for(lambda: len(n.closed()) >= down + 4, 20, "recording goes on while down")
            status = n.status()["shipper"]
            assert status["last_error"] and not status["last_error"]["permanent"], status
            # Nothing is deleted on the node while it cannot arrive.
            assert len(n.local_segments("buffer") + n.local_segments("spool")) >= 3
            nas.server.start()
            wait_for(lambda: len(nas.segments()) >= down + 4, 40, "shipping resumes by itself")
            assert n.stop(proc) == 0
            drain(n)
        closed = assert_all_arrived(n, nas)
    finally:
        n.cleanup()
    # ... nor in the log or status, after a run that failed and reconnected.
    seen = n.log_text() + json.dumps(n.status())
    assert "published" in n.log_text() and not [s for s in secrets if s in seen]
    sizes = {c["name"]: c["size"] for c in closed}
    assert watcher.samples > 0 and len(watcher.seen) >= 3, "the watcher saw the share fill"
    for name, seen in watcher.seen.items():
        assert seen == {sizes[name]}, f"{name} was visible with sizes {seen}"
    files = nas.segments()
    for cam in ("cam0", "cam1"):
        mine = sorted((c for c in closed if c["camera"] == cam), key=lambda c: c["seq"])
        for c in mine[:-1]:  # the last one was cut short by the stop
            assert ffprobe(files[c["name"]])["frames"] == FRAMES_PER_SEGMENT, c["name"]
    assert n.status()["shipper"]["backlog_segments"] == 0


@pytest.mark.parametrize("nas", ["rsync"], indirect=True)
def test_changed_host_key_alarms_in_status_and_keeps_the_data(nas, tmp_path):
    n = Node(tmp_path / "node", nas.options())
    try:
        nas.server.change_host_key()
        proc = n.start()
        wait_for(
            lambda: (n.status()["shipper"].get("last_error") or {}).get("permanent"),
            30,
            "a permanent alarm",
        )
        assert "host key" in n.status()["shipper"]["last_error"]["message"]
        assert not nas.segments()
        assert n.local_segments("buffer") + n.local_segments("spool")
        assert n.stop(proc) == 0
        nas.server.pin_host_key()  # the admin verified the new key
        time.sleep(0.5)
        drain(n)
        assert_all_arrived(n, nas)
    finally:
        nas.server.pin_host_key()
        n.cleanup()
