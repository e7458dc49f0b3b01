"""rsync and sftp: a NAS whose host key is not pinned is a permanent error at run
time too (docs/transports.md: `StrictHostKeyChecking=yes` against
`known_hosts_file` only; sftp's `RejectPolicy`), not only in check-config. The
changed-key case is tests/transports/test_contract.py."""

from __future__ import annotations

import os

import pytest

from livecam.segment import file_digest
from livecam.transport import PermanentError
from tests.conftest import sha256


@pytest.mark.parametrize("nas", ["rsync", "sftp"], indirect=True)
def test_a_host_key_not_pinned_at_run_time_is_permanent(nas, tmp_path):
    t = nas.transport()  # check-config passed: the host was pinned then
    seg = tmp_path / "cam0-20261126T121530Z-000001.mp4"
    seg.write_bytes(os.urandom(100_000))
    remote = f"lab/node01/cam0/2026-11-26/{seg.name}"
    known = nas.server.known_hosts
    pinned = known.read_text()
    # The file now pins another host only (a NAS moved to a new address, say).
    known.write_text("[192.0.2.7]:22 " + " ".join(pinned.split()[1:]) + "\n")
    try:
        with pytest.raises(PermanentError, match=r"(?i)host key|known_hosts") as err:
            t.publish(seg, remote, size=seg.stat().st_size, digest=file_digest(seg))
        assert "\n" not in str(err.value)
        assert not nas.segments() and not nas.hidden()
    finally:
        known.write_text(pinned)
    assert t.publish(seg, remote, size=seg.stat().st_size, digest=file_digest(seg)) is True
    assert sha256(nas.segments()[seg.name]) == sha256(seg)
