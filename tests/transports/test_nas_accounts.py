"""What a node's own NAS account can do, with the NAS side as the role renders it.

A compromised node holds its key or password: with the plain tools (rsync) it
tries to delete, overwrite, rename over and truncate segments already on the
NAS, and every attempt must leave them as they were. livecam itself must work
under the same restrictions: "already there", conflicts, a retry after a cut.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from livecam.segment import file_digest
from livecam.transport import ConflictError
from tests.conftest import sha256
from tests.transports import servers
from tests.transports.conftest import Nas

REMOTE = "lab/node01/cam0/2026-11-26"


def rsync_as_node(sshd: servers.Sshd, *args: str) -> subprocess.CompletedProcess[str]:
    """Plain rsync with the node's key and nothing of livecam's."""
    ssh = [
        "ssh", "-F", "none", "-p", str(sshd.port), "-l", servers.RSYNC_USER,
        "-i", str(sshd.client_key),
        "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
        "-o", f"UserKnownHostsFile={sshd.known_hosts}", "-o", "StrictHostKeyChecking=yes",
    ]  # fmt: skip
    argv = ["rsync", "-e", shlex.join(ssh), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.fixture
def shipped(sshd, tmp_path):
    """Five segments livecam published to the rsync account: (nas, {name: sha256})."""
    nas = Nas("rsync", sshd)
    t = nas.transport()
    for i in range(5):
        seg = tmp_path / f"cam0-20261126T1215{i:02d}Z-{i:06d}.mp4"
        seg.write_bytes(os.urandom(50_000 + i))
        remote = f"{REMOTE}/{seg.name}"
        assert t.publish(seg, remote, size=seg.stat().st_size, digest=file_digest(seg))
    before = {p.name: sha256(p) for p in (nas.store / REMOTE).iterdir()}
    assert len(before) == 5
    yield nas, before
    nas.close()


def test_rsync_key_cannot_delete_overwrite_rename_or_truncate(shipped, sshd, tmp_path):
    nas, before = shipped
    sub = nas.store.name
    dest = f"{sshd.host}:{sub}/"
    empty = tmp_path / "empty" / REMOTE
    empty.mkdir(parents=True)
    forged = tmp_path / "forged" / REMOTE
    forged.mkdir(parents=True)
    for name in before:
        (forged / name).write_bytes(b"forged")  # shorter: a truncate if it lands
    attempts = {
        "delete": ["-r", "--delete", f"{tmp_path / 'empty'}/", dest],
        "delete-excluded": ["-r", "--delete-excluded", f"{tmp_path / 'empty'}/", dest],
        "overwrite": ["-r", "-I", f"{tmp_path / 'forged'}/", dest],
        "overwrite-inplace": ["-r", "-I", "--inplace", f"{tmp_path / 'forged'}/", dest],
        "overwrite-checksum": ["-r", "-c", f"{tmp_path / 'forged'}/", dest],
        "rename-over-backup": ["-r", "-I", "-b", f"{tmp_path / 'forged'}/", dest],
        "remove-source": ["-r", "--remove-source-files", f"{tmp_path / 'forged'}/", dest],
        "truncate-append": ["-r", "--append", f"{tmp_path / 'forged'}/", dest],
    }
    ran = {}
    for what, args in attempts.items():
        proc = rsync_as_node(sshd, *args)
        ran[what] = proc.returncode
        after = {p.name: sha256(p) for p in (nas.store / REMOTE).iterdir()}
        assert after == before, f"{what}: {proc.stdout} {proc.stderr}"
    # The attempts reached rrsync (a refused option or a skipped file, not ssh failing).
    assert rsync_as_node(sshd, "-r", f"{tmp_path / 'empty'}/", dest).returncode == 0
    assert ran["delete"] != 0 and ran["rename-over-backup"] != 0
    # Adding is what the key is for.
    new = tmp_path / "add" / REMOTE
    new.mkdir(parents=True)
    (new / "cam0-20261126T121600Z-000099.mp4").write_bytes(b"new")
    assert rsync_as_node(sshd, "-r", f"{tmp_path / 'add'}/", dest).returncode == 0
    assert (nas.store / REMOTE / "cam0-20261126T121600Z-000099.mp4").read_bytes() == b"new"


def test_livecam_proves_already_there_and_conflicts_under_no_overwrite(shipped, tmp_path):
    nas, before = shipped
    assert "-no-overwrite" in servers.RRSYNC_OPTIONS.split()
    t = nas.transport()
    # The same five again (a shipper that died before its local delete): already there.
    local = tmp_path / "again"
    local.mkdir()
    items = []
    for name in before:
        copy = local / name
        copy.write_bytes((nas.store / REMOTE / name).read_bytes())
        items.append(copy)
    for seg in items:
        sent = t.publish(seg, f"{REMOTE}/{seg.name}", size=seg.stat().st_size,
                         digest=file_digest(seg))  # fmt: skip
        assert sent is False
    # Other content under a shipped name: a conflict, never retried forever.
    other = local / "other" / items[0].name
    other.parent.mkdir()
    other.write_bytes(os.urandom(50_000))
    with pytest.raises(ConflictError):
        t.publish(other, f"{REMOTE}/{other.name}", size=other.stat().st_size,
                  digest=file_digest(other))  # fmt: skip
    after = {p.name: sha256(p) for p in (nas.store / REMOTE).iterdir()}
    assert after == before
    assert not [p for p in Path(nas.store).rglob(".*") if p.name != "."]
