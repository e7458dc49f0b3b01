"""The one publish protocol: the final step never replaces, the private APIs it needs
are where they were, and the example transport in docs/plugins.md works as shown.

A file is planted on the server's own disk under the final name in the window
between the protocol's check and its rename (a wrapper around the store's rename
writes it just before the real rename runs): it must survive byte for byte, and
the publish must raise ConflictError, or answer "already there" when the planted
file holds the same content.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import subprocess
from pathlib import Path

import pytest
from livecam_plugins import smb
from livecam_plugins.sftp import SftpTemp
from livecam_plugins.smb import SmbTemp

from livecam.storage.files import file_digest
from livecam.transport import ConflictError, PermanentError
from tests.conftest import REPO, VENV_BIN, sha256
from tests.transports.conftest import backlog

BOTH = pytest.mark.parametrize("nas", ["sftp", "smb"], indirect=True)


def plant_before_rename(monkeypatch, cls: type, target: Path, content: bytes) -> list[Path]:
    """Wrap ``cls.rename``: write ``content`` at ``target`` on the server's disk just
    before the real rename runs. Returns the list of files planted so far."""
    planted: list[Path] = []
    real = cls.rename

    def rename(self, remote: str) -> None:
        target.write_bytes(content)
        planted.append(target)
        real(self, remote)

    monkeypatch.setattr(cls, "rename", rename)
    return planted


def temp_class(nas) -> type:
    return SftpTemp if nas.kind == "sftp" else SmbTemp


@BOTH
def test_a_file_planted_before_the_rename_is_never_replaced(nas, tmp_path, monkeypatch):
    t = nas.transport()
    (item,) = backlog(tmp_path, 1, size=300_000)
    theirs = os.urandom(1000)
    planted = plant_before_rename(monkeypatch, temp_class(nas), nas.store / item.remote, theirs)
    with pytest.raises(ConflictError, match="other content") as err:
        t.publish(item.local, item.remote, size=item.size, digest=item.digest)
    assert planted == [nas.store / item.remote], "the file was planted in the window"
    assert err.value.remote == item.remote
    assert (nas.store / item.remote).read_bytes() == theirs, "the planted file was replaced"
    assert not nas.hidden(), "the temp was left behind"


@BOTH
def test_the_same_content_planted_before_the_rename_is_already_there(nas, tmp_path, monkeypatch):
    t = nas.transport()
    (item,) = backlog(tmp_path, 1, size=300_000)
    same = item.local.read_bytes()
    planted = plant_before_rename(monkeypatch, temp_class(nas), nas.store / item.remote, same)
    assert t.publish(item.local, item.remote, size=item.size, digest=item.digest) is False
    assert planted, "the file was planted in the window"
    assert sha256(nas.store / item.remote) == sha256(item.local)
    assert not nas.hidden()


@BOTH
def test_a_batch_refuses_only_the_item_whose_name_was_taken(nas, tmp_path, monkeypatch):
    t = nas.transport()
    items = backlog(tmp_path, 6)
    victim = items[2]
    theirs = os.urandom(500)
    real = temp_class(nas).rename

    def rename(self, remote: str) -> None:
        if remote.endswith(victim.local.name):
            (nas.store / victim.remote).write_bytes(theirs)
        real(self, remote)

    monkeypatch.setattr(temp_class(nas), "rename", rename)
    done = []
    with pytest.raises(ConflictError) as err:
        done.extend(t.publish_batch(items))
    assert err.value.remote == victim.remote
    assert sorted(i.local for i, _ in done) == sorted(i.local for i in items if i is not victim)
    assert (nas.store / victim.remote).read_bytes() == theirs
    assert not nas.hidden()


@pytest.mark.parametrize("nas", ["rsync", "sftp", "smb"], indirect=True)
@pytest.mark.parametrize("remote", ["/abs/x.mp4", "../up/x.mp4", "a/\x07/x.mp4", "a\\b.mp4"])
def test_an_unsafe_remote_path_is_refused_before_any_request(nas, tmp_path, remote):
    (item,) = backlog(tmp_path, 1)
    with pytest.raises(PermanentError, match="unsafe remote path"):
        nas.transport().publish(item.local, remote, size=item.size, digest=item.digest)
    assert not nas.segments() and not nas.hidden()


@BOTH
def test_a_leftover_temp_of_a_dead_attempt_is_overwritten_not_piled_up(nas, tmp_path):
    t = nas.transport()
    (item,) = backlog(tmp_path, 1, size=300_000)
    leftover = nas.store / Path(item.remote).with_name(f".{item.local.name}.part")
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(os.urandom(700_000))  # a connection that died mid-write
    os.chown(leftover.parent, *owner(nas.store.parent))
    os.chown(leftover, *owner(nas.store.parent))
    assert t.publish(item.local, item.remote, size=item.size, digest=item.digest) is True
    final = nas.store / item.remote
    assert sha256(final) == sha256(item.local)
    if nas.kind == "smb":
        # The role's share is append-only (vfs_worm): the leftover cannot be reopened,
        # so the publish wrote beside it, and the temp is the final file's second name.
        assert leftover.stat().st_size == 700_000
        (beside,) = leftover.parent.glob(f"{leftover.name}-*")
        assert beside.stat().st_ino == final.stat().st_ino
    else:
        assert not nas.hidden(), "the leftover temp was reused and renamed, not left beside"


def owner(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_uid, st.st_gid


@pytest.mark.parametrize("nas", ["smb"], indirect=True)
def test_smbprotocol_internals_are_where_the_smb_transport_uses_them(nas, tmp_path):
    # Fails with a line naming what moved when an smbprotocol upgrade changes them.
    assert smb.upstream_problems() == ""
    t = nas.transport()
    # The transport uses them for real: a publish through them arrives...
    (item,) = backlog(tmp_path, 1)
    assert t.publish(item.local, item.remote, size=item.size, digest=item.digest) is True
    assert sha256(nas.store / item.remote) == sha256(item.local)
    # ...and a live handle and its connection still have what the writes use.
    (store,) = t.stores(1)
    temp = store.open_temp(f"{item.remote}.probe")
    try:
        assert smb.live_problems(temp.raw) == ""
    finally:
        with contextlib.suppress(OSError):  # an append-only share keeps the probe
            temp.remove()
    assert not nas.hidden() and len(nas.segments()) == 1


def test_live_problems_name_what_moved():
    class Gone:
        pass

    message = smb.live_problems(Gone())
    assert "Open.write" in message and "Connection.sequence_window" in message
    assert "smbprotocol<1.18" in message


# --- the example in docs/plugins.md ------------------------------------------------------------


def example_plugin(tmp_path: Path):
    """The first python block under "## Write a transport", loaded as a site plugin."""
    doc = (REPO / "docs" / "plugins.md").read_text()
    section = doc.split("## Write a transport", 1)[1].split("\n## ", 1)[0]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code, "docs/plugins.md has no example under 'Write a transport'"
    path = tmp_path / "plugins" / "folder.py"
    path.parent.mkdir()
    path.write_text(code.group(1))
    spec = importlib.util.spec_from_file_location("site_folder", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_transport_in_the_docs_keeps_the_protocol(tmp_path, monkeypatch):
    module = example_plugin(tmp_path)
    example = tmp_path / "plugins" / "folder.py"
    for check in (["check"], ["format", "--check"]):
        lint = subprocess.run(
            [str(VENV_BIN / "ruff"), *check, "--config", str(REPO / "pyproject.toml"), example],
            capture_output=True,
            text=True,
        )
        assert lint.returncode == 0, lint.stdout + lint.stderr
    registered: dict[str, type] = {}
    module.livecam_register_transports(register=registered.__setitem__)
    assert registered == {"folder": module.FolderTransport}
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    t = module.FolderTransport({"path": inbox}, timeout=10)
    items = backlog(tmp_path, 6)
    assert dict(t.publish_batch(items)) == {i: True for i in items}
    for item in items:
        assert sha256(inbox / item.remote) == sha256(item.local)
    a = items[0]
    assert t.publish(a.local, a.remote, size=a.size, digest=a.digest) is False
    # Other content under a name: refused, never overwritten.
    other = tmp_path / "other.mp4"
    other.write_bytes(os.urandom(1000))
    with pytest.raises(ConflictError):
        t.publish(other, a.remote, size=1000, digest=file_digest(other))
    assert sha256(inbox / a.remote) == sha256(a.local)
    # A name taken between the check and the rename: kept, and a conflict.
    (tmp_path / "more").mkdir()
    (new,) = backlog(tmp_path / "more", 1)
    target = inbox / "late" / new.local.name
    planted = plant_before_rename(monkeypatch, module.FolderTemp, target, b"theirs")
    with pytest.raises(ConflictError):
        t.publish(new.local, f"late/{new.local.name}", size=new.size, digest=new.digest)
    assert planted and target.read_bytes() == b"theirs"
    assert not [p for p in inbox.rglob(".*")], "the temp was left behind"
