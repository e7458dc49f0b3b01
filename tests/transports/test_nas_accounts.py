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
from typing import Any

import pytest

from livecam.storage.files import file_digest
from livecam.transport import ConflictError
from tests.conftest import sha256
from tests.transports import servers, tamper
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
    work = tmp_path / "tamper"
    tamper.prepare(work, [f"{REMOTE}/{name}" for name in before])
    ran = {}
    for what, args in tamper.attempts(work, dest, f"{sub}/{REMOTE}/{min(before)}").items():
        proc = rsync_as_node(sshd, *args)
        ran[what] = proc.returncode
        after = {n: sha256(nas.store / REMOTE / n) for n in before
                 if (nas.store / REMOTE / n).is_file()}  # fmt: skip
        assert after == before, f"{what}: {proc.stdout} {proc.stderr}"
    print({what: code for what, code in ran.items()})
    # The attempts reached rrsync (a refused option or a skipped file, not ssh failing).
    assert rsync_as_node(sshd, "-r", f"{work}/empty/", dest).returncode == 0
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


def sftp_as_node(sshd: servers.Sshd):
    """paramiko with the node's key, as the sftp account, and nothing of livecam's."""
    import paramiko

    client = paramiko.SSHClient()
    client.load_host_keys(str(sshd.known_hosts))
    client.connect(
        sshd.host,
        port=sshd.port,
        username=servers.SFTP_USER,
        key_filename=str(sshd.client_key),
        look_for_keys=False,
        allow_agent=False,
    )
    return client, client.open_sftp()


@pytest.fixture
def sftp_shipped(sshd, tmp_path):
    """Three segments livecam published to the sftp account: (nas, {name: sha256})."""
    nas = Nas("sftp", sshd)
    t = nas.transport()
    for i in range(3):
        seg = tmp_path / f"cam0-20261126T1215{i:02d}Z-{i:06d}.mp4"
        seg.write_bytes(os.urandom(50_000 + i))
        assert t.publish(seg, f"{REMOTE}/{seg.name}", size=seg.stat().st_size,
                         digest=file_digest(seg))  # fmt: skip
    before = {p.name: sha256(p) for p in (nas.store / REMOTE).iterdir()}
    assert len(before) == 3
    yield nas, before
    nas.close()


def test_sftp_account_cannot_delete_overwrite_rename_or_truncate(sftp_shipped, sshd):
    nas, before = sftp_shipped
    assert "remove" in servers.SFTP_DENIED.split(",")
    for p in (nas.store / REMOTE).iterdir():
        assert p.stat().st_mode & 0o777 == 0o444  # read-only from its creation
    d = f"/upload/{nas.store.name}/{REMOTE}"
    name = sorted(before)[0]
    target = f"{d}/{name}"
    client, sftp = sftp_as_node(sshd)
    try:
        import io

        sftp.putfo(io.BytesIO(b"forged"), f"{d}/forged.mp4")  # adding works
        attempts = {
            "remove": lambda: sftp.remove(target),
            "rename-over": lambda: sftp.rename(f"{d}/forged.mp4", target),
            "posix-rename-over": lambda: sftp.posix_rename(f"{d}/forged.mp4", target),
            "truncate-open": lambda: sftp.open(target, "w"),
            "overwrite-open": lambda: sftp.open(target, "r+").write(b"x"),
            "append": lambda: sftp.open(target, "a").write(b"x"),
            "truncate-setstat": lambda: sftp.truncate(target, 0),
            "chmod": lambda: sftp.chmod(target, 0o644),
            "rmdir": lambda: sftp.rmdir(d),
            "symlink": lambda: sftp.symlink(target, f"{d}/link.mp4"),
        }
        refused = {}
        for what, attempt in attempts.items():
            try:
                attempt()
            except OSError as exc:
                refused[what] = str(exc)
            after = {p.name: sha256(p) for p in (nas.store / REMOTE).iterdir() if p.name in before}
            assert after == before, what
        assert set(refused) == set(attempts), set(attempts) - set(refused)
    finally:
        client.close()


def already_there_and_conflict(nas, t, name: str, tmp_path: Path) -> None:
    """The same bytes under a shipped name are "already there"; other bytes conflict."""
    copy = tmp_path / "again" / name
    copy.parent.mkdir()
    copy.write_bytes((nas.store / REMOTE / name).read_bytes())
    assert t.publish(copy, f"{REMOTE}/{name}", size=copy.stat().st_size,
                     digest=file_digest(copy)) is False  # fmt: skip
    other = tmp_path / "other" / name
    other.parent.mkdir()
    other.write_bytes(os.urandom(1000))
    with pytest.raises(ConflictError):
        t.publish(other, f"{REMOTE}/{name}", size=1000, digest=file_digest(other))


def cut_attempt(nas, tmp_path: Path, user: str) -> tuple[Path, Path]:
    """A segment to publish, and the temp a cut attempt of it left, owned by ``user``."""
    seg = tmp_path / "cam0-20261126T121700Z-000042.mp4"
    seg.write_bytes(os.urandom(40_000))
    leftover = nas.store / REMOTE / f".{seg.name}.part"
    leftover.write_bytes(b"half")
    uid = servers.pwd.getpwnam(user)
    os.chown(leftover, uid.pw_uid, uid.pw_gid)
    return seg, leftover


def test_livecam_sftp_retries_and_answers_already_there_under_the_restrictions(
    sftp_shipped, tmp_path
):
    nas, before = sftp_shipped
    t = nas.transport()
    already_there_and_conflict(nas, t, sorted(before)[0], tmp_path)
    # A cut attempt left its read-only temp, which the account can neither
    # truncate nor remove: the retry writes beside it and publishes.
    seg, leftover = cut_attempt(nas, tmp_path, servers.SFTP_USER)
    leftover.chmod(0o444)
    assert t.publish(seg, f"{REMOTE}/{seg.name}", size=seg.stat().st_size,
                     digest=file_digest(seg)) is True  # fmt: skip
    assert sha256(nas.store / REMOTE / seg.name) == sha256(seg)
    assert leftover.read_bytes() == b"half"  # not removable: left for the NAS's retention


def smbclient_as_node(smbd: servers.Smbd, auth: Path, command: str) -> str:
    """Samba's own smbclient with the node's user and password: its output."""
    proc = subprocess.run(
        ["smbclient", "//127.0.0.1/nas", "-p", str(smbd.port), "-A", str(auth), "-m", "SMB3",
         "-c", command],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return proc.stdout + proc.stderr


def published(nas: Nas) -> dict[str, str]:
    """{name: sha256} of the final names in the test's directory (temps left out)."""
    return {p.name: sha256(p) for p in (nas.store / REMOTE).iterdir() if not p.name.startswith(".")}


@pytest.fixture
def smb_shipped(smbd, tmp_path):
    """Three segments livecam published to the smb share: (nas, {name: sha256})."""
    nas = Nas("smb", smbd)
    t = nas.transport()
    for i in range(3):
        seg = tmp_path / f"cam0-20261126T1215{i:02d}Z-{i:06d}.mp4"
        seg.write_bytes(os.urandom(50_000 + i))
        assert t.publish(seg, f"{REMOTE}/{seg.name}", size=seg.stat().st_size,
                         digest=file_digest(seg))  # fmt: skip
    before = published(nas)
    assert len(before) == 3
    yield nas, before
    nas.close()


class SmbAsNode:
    """smbprotocol's own client (no livecam code) logged on as the node: raw creates
    and set-info requests, to try what smbclient has no command for."""

    def __init__(self, smbd: servers.Smbd):
        import uuid

        from smbprotocol.connection import Connection
        from smbprotocol.session import Session
        from smbprotocol.tree import TreeConnect

        self.conn = Connection(uuid.uuid4(), "127.0.0.1", smbd.port)
        self.conn.connect()
        session = Session(self.conn, servers.SMB_USER, servers.SMB_PASSWORD)
        session.connect()
        self.tree = TreeConnect(session, r"\\127.0.0.1\nas")
        self.tree.connect()

    def open(self, path: str, access: int, disposition: int) -> Any:
        from smbprotocol.open import (
            CreateOptions,
            FileAttributes,
            ImpersonationLevel,
            Open,
            ShareAccess,
        )  # fmt: skip

        f = Open(self.tree, path)
        f.create(ImpersonationLevel.Impersonation, access, FileAttributes.FILE_ATTRIBUTE_NORMAL,
                 ShareAccess.FILE_SHARE_READ | ShareAccess.FILE_SHARE_WRITE
                 | ShareAccess.FILE_SHARE_DELETE,
                 disposition, CreateOptions.FILE_NON_DIRECTORY_FILE)  # fmt: skip
        return f

    def set_info(self, f: Any, info: Any) -> None:
        from smbprotocol.open import SMB2SetInfoRequest

        req = SMB2SetInfoRequest()
        req["info_type"] = info.INFO_TYPE
        req["file_info_class"] = info.INFO_CLASS
        req["file_id"] = f.file_id
        req["buffer"] = info
        request = self.conn.send(req, sid=self.tree.session.session_id,
                                 tid=self.tree.tree_connect_id)  # fmt: skip
        self.conn.receive(request)

    def close(self) -> None:
        self.conn.disconnect(True)


def test_smb_account_cannot_delete_overwrite_rename_or_truncate(smb_shipped, smbd, tmp_path):
    from smbprotocol.exceptions import SMBResponseException
    from smbprotocol.file_info import (
        FileDispositionInformation,
        FileEndOfFileInformation,
        FileLinkInformation,
        FileRenameInformation,
    )  # fmt: skip
    from smbprotocol.open import CreateDisposition as Disp
    from smbprotocol.open import FilePipePrinterAccessMask as Access

    nas, before = smb_shipped
    assert servers.SMB_SHARE_OPTIONS  # the share is the role's, vfs_worm and all
    auth = tmp_path / "auth"
    auth.write_text(f"username={servers.SMB_USER}\npassword={servers.SMB_PASSWORD}\n")
    auth.chmod(0o600)
    d = f"{nas.store.name}/{REMOTE}".replace("/", "\\")
    name = sorted(before)[0]
    size = (nas.store / REMOTE / name).stat().st_size
    forged = tmp_path / "forged"
    forged.write_bytes(b"forged")
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    # Adding works (and proves the logon, the path and the commands).
    out = smbclient_as_node(smbd, auth, f'put "{forged}" "{d}\\added.mp4"')
    assert (nas.store / REMOTE / "added.mp4").read_bytes() == b"forged", out
    attempts = {
        "delete": f'rm "{d}\\{name}"',
        "delete-mask": f'rm "{d}\\*.mp4"',
        "overwrite": f'put "{forged}" "{d}\\{name}"',
        "truncate": f'put "{empty}" "{d}\\{name}"',
        "append": f'reput "{forged}" "{d}\\{name}"',
        "rename-over": f'put "{forged}" "{d}\\fresh.mp4"; rename "{d}\\fresh.mp4" "{d}\\{name}" -f',
        "rename-away": f'rename "{d}\\{name}" "{d}\\away.mp4"',
        "hardlink-over": f'hardlink "{d}\\added.mp4" "{d}\\{name}"',
        "set-read-only": f'setmode "{d}\\{name}" +r',
        "backdate": f'utimes "{d}\\{name}" -1 -1 2020:01:01-00:00:00 -1',  # retention bait
        "delete-dir": f'deltree "{d}"',
        "remove-dir": f'rmdir "{d}"',
        "rename-dir": f'rename "{d}" "{nas.store.name}\\away"',
    }
    for what, command in attempts.items():
        out = smbclient_as_node(smbd, auth, command)
        assert "NT_STATUS_ACCESS_DENIED" in out, f"{what}: {out}"
        assert {k: v for k, v in published(nas).items() if k in before} == before, what
    allinfo = smbclient_as_node(smbd, auth, f'allinfo "{d}\\{name}"')
    assert f"stream: [::$DATA], {size} bytes" in allinfo, allinfo
    # What smbclient has no command for, through smbprotocol's own requests.
    node = SmbAsNode(smbd)
    try:
        target = f"{d}\\{name}"
        refused = {}
        opens = {
            "truncating open": (Access.FILE_READ_ATTRIBUTES, Disp.FILE_OVERWRITE),
            "superseding open": (Access.FILE_READ_ATTRIBUTES, Disp.FILE_SUPERSEDE),
            "open for writing": (Access.FILE_WRITE_DATA, Disp.FILE_OPEN),
            "open for appending": (Access.FILE_APPEND_DATA, Disp.FILE_OPEN),
            "open for delete": (Access.DELETE, Disp.FILE_OPEN),
        }
        for what, (access, disposition) in opens.items():
            try:
                node.open(target, access, disposition).close()
            except SMBResponseException as exc:
                refused[what] = exc.status
        # From a fresh file of its own, still open for writing: rename, link over.
        fresh = node.open(f"{d}\\.fresh.part", Access.FILE_WRITE_DATA | Access.DELETE
                          | Access.FILE_READ_ATTRIBUTES, Disp.FILE_CREATE)  # fmt: skip
        fresh.write(b"forged", 0)
        for what, info_class in (("rename over", FileRenameInformation),
                                 ("link over", FileLinkInformation)):  # fmt: skip
            info = info_class()
            info["replace_if_exists"] = True
            info["file_name"] = target
            try:
                node.set_info(fresh, info)
            except SMBResponseException as exc:
                refused[what] = exc.status
        # And on a published file opened without write access: truncate, delete on close.
        reader = node.open(target, Access.FILE_READ_ATTRIBUTES, Disp.FILE_OPEN)
        for what, info in (("set end of file", FileEndOfFileInformation()),
                           ("delete on close", FileDispositionInformation())):  # fmt: skip
            if what == "delete on close":
                info["delete_pending"] = True
            try:
                node.set_info(reader, info)
            except SMBResponseException as exc:
                refused[what] = exc.status
        reader.close()
        fresh.close()
        expected = {*opens, "rename over", "link over", "set end of file", "delete on close"}
        assert set(refused) == expected, expected - set(refused)
    finally:
        node.close()
    assert {k: v for k, v in published(nas).items() if k in before} == before


def test_livecam_smb_links_retries_and_answers_already_there_under_the_restrictions(
    smb_shipped, tmp_path
):
    nas, before = smb_shipped
    # The share refused renaming livecam's own temp; the final step linked it instead
    # (never replacing), and the temp stays as a second name of the same file.
    assert nas.transports[0].renames_refused
    for name in before:
        final, temp = nas.store / REMOTE / name, nas.store / REMOTE / f".{name}.part"
        assert final.stat().st_ino == temp.stat().st_ino and final.stat().st_nlink == 2
    t = nas.transport()
    already_there_and_conflict(nas, t, sorted(before)[0], tmp_path)
    # A cut attempt left its temp, now immutable: the retry writes beside it.
    seg, leftover = cut_attempt(nas, tmp_path, servers.SMB_USER)
    assert t.publish(seg, f"{REMOTE}/{seg.name}", size=seg.stat().st_size,
                     digest=file_digest(seg)) is True  # fmt: skip
    assert sha256(nas.store / REMOTE / seg.name) == sha256(seg)
    assert leftover.read_bytes() == b"half"  # immutable: left for the NAS's retention
    beside = [p for p in (nas.store / REMOTE).iterdir() if p.name.startswith(leftover.name + "-")]
    assert len(beside) == 1
    assert beside[0].stat().st_ino == (nas.store / REMOTE / seg.name).stat().st_ino
    assert {k: v for k, v in published(nas).items() if k in before} == before
