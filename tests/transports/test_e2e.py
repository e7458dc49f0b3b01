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

from tests.conftest import command_lines
from tests.core.node import (
    Node,
    Watcher,
    assert_all_arrived,
    assert_records_arrived,
    assert_whole_segments,
    ship_through_a_restart,
    wait_for,
)
from tests.transports.servers import SMB_PASSWORD

pytestmark = pytest.mark.slow

FRAMES_PER_SEGMENT = 10  # Node's cameras: 10 fps, 1 s segments


def secrets_of(options: dict) -> list[str]:
    """The smb password and a line of the ssh private key this node uses."""
    secrets = [SMB_PASSWORD]
    if "identity_file" in options:
        lines = Path(options["identity_file"]).read_text().splitlines()
        secrets.append(lines[len(lines) // 2])
    return secrets


def test_node_ships_through_a_server_restart(nas, tmp_path):
    n = Node(tmp_path / "node", nas.options())
    secrets = secrets_of(nas.options())

    def no_secret_in_argv() -> None:  # every command line while the node ships
        leaks = [(pid, s) for pid, cmd in command_lines() for s in secrets if s in cmd]
        assert not leaks, leaks

    try:
        with Watcher(nas) as watcher:
            ship_through_a_restart(n, nas, 40, no_secret_in_argv)
        closed = assert_all_arrived(n, nas)
        # Loss records travel the same way, as JSON beside the videos (issue 22).
        assert_records_arrived(n, nas)
    finally:
        n.cleanup()
    # ... nor in the log or status, after a run that failed and reconnected.
    seen = n.log_text() + json.dumps(n.status())
    assert "published" in n.log_text() and not [s for s in secrets if s in seen]
    sizes = {c["name"]: c["size"] for c in closed}
    assert watcher.samples > 0 and len(watcher.seen) >= 3, "the watcher saw the share fill"
    for name, seen in watcher.seen.items():
        assert seen == {sizes[name]}, f"{name} was visible with sizes {seen}"
    assert_whole_segments(closed, nas.segments(), FRAMES_PER_SEGMENT)
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
        # (The alarm can come from the start's loss record, before a segment closed.)
        wait_for(
            lambda: n.local_segments("buffer") + n.local_segments("spool"), 30, "a segment kept"
        )
        assert n.stop(proc) == 0
        nas.server.pin_host_key()  # the admin verified the new key
        time.sleep(0.5)
        n.drain()
        assert_all_arrived(n, nas)
    finally:
        nas.server.pin_host_key()
        n.cleanup()
