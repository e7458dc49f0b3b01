"""lazyfs (``tests/powercut/lazyfs.py``) forgets exactly what a power cut forgets.

Each test changes files through the mount, cuts, then reads what is left twice:
in the backing directory (the durable state, as a disk would hold it) and through
a new mount of it (the reboot). What was not made durable by fsync of the file
(data) or of its directory (names) must be gone; what was must be there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.powercut.mount import Cgroup, LazyMount

pytestmark = pytest.mark.slow


@pytest.fixture
def lazy(tmp_path: Path) -> Iterator[LazyMount]:
    cgroup = Cgroup(f"livecam-powercut-{os.getpid()}-{tmp_path.name}")
    mount = LazyMount(tmp_path / "backing", tmp_path / "mnt", cgroup)
    try:
        mount.mount()
        yield mount
    finally:
        try:
            cgroup.remove()
        finally:
            mount.unmount()


def fsync(path: Path) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def durable(path: Path, data: bytes) -> Path:
    """Write ``path`` and make it durable: fsync of the file, then of its directory."""
    path.write_bytes(data)
    fsync(path)
    fsync(path.parent)
    return path


def tree(root: Path) -> dict[str, bytes | None]:
    """Every file (its content) and directory (None) below ``root``."""
    return {
        str(p.relative_to(root)): None if p.is_dir() else p.read_bytes()
        for p in sorted(root.rglob("*"))
    }


def after_the_cut(lazy: LazyMount) -> dict[str, bytes | None]:
    """Cut, check the backing directory and a new mount agree, return what is left."""
    lazy.cut()
    with pytest.raises(OSError, match="Input/output error"):
        os.listdir(lazy.mnt)  # a cut disk answers nothing
    on_disk = tree(lazy.backing)
    lazy.power_cycle()
    assert tree(lazy.mnt) == on_disk, "the new mount serves what the backing directory holds"
    return on_disk


def test_a_cut_forgets_data_names_and_directories_not_made_durable(lazy: LazyMount):
    m = lazy.mnt
    base = {"data": b"synced", "old-name": b"renamed", "unlinked": b"unlinked",
            "truncated": b"0123456789", "linked": b"linked"}  # fmt: skip
    for name, data in base.items():
        durable(m / name, data)
    # From here on the top directory is never fsynced again.
    with open(m / "data", "r+b") as f:
        f.write(b"SYNCED, NOT")  # written, never fsynced
    created = m / "created"
    created.write_bytes(b"fsynced, but its directory never was")
    fsync(created)
    os.rename(m / "old-name", m / "new-name")
    os.unlink(m / "unlinked")
    os.truncate(m / "truncated", 2)
    os.link(m / "linked", m / "second-name")
    (m / "folder").mkdir()
    durable(m / "folder" / "inside", b"synced in a folder whose own name never was")
    assert tree(lazy.backing) == base, "the disk holds only what is durable, before the cut too"
    assert after_the_cut(lazy) == base


def test_what_was_made_durable_survives_the_cut(lazy: LazyMount):
    m = lazy.mnt
    durable(m / "file", b"kept")
    (m / "folder").mkdir()
    fsync(m)
    durable(m / "folder" / "inside", b"kept in a folder")
    durable(m / "gone", b"unlinked, durably")
    os.unlink(m / "gone")
    os.link(durable(m / "one", b"two names"), m / "two")
    os.rename(durable(m / "was", b"moved"), m / "folder" / "moved")
    fsync(m)
    fsync(m / "folder")
    with open(m / "file", "ab") as f:
        f.write(b" and more")
        f.flush()
        os.fsync(f.fileno())
    assert after_the_cut(lazy) == {
        "file": b"kept and more",
        "folder": None,
        "folder/inside": b"kept in a folder",
        "folder/moved": b"moved",
        "one": b"two names",
        "two": b"two names",
    }
    assert os.stat(m / "one").st_ino == os.stat(m / "two").st_ino, "still one file"


def test_a_rename_whose_directory_was_fsynced_survives_with_the_synced_content(
    lazy: LazyMount,
):
    """The atomic replace (write a temp, fsync it, rename it over, fsync the
    directory), and what each missing step would cost."""
    m = lazy.mnt
    durable(m / "final", b"old content")
    temp = m / ".final.tmp"
    temp.write_bytes(b"new content")
    fsync(temp)
    os.rename(temp, m / "final")
    fsync(m)
    with open(m / "final", "ab") as f:
        f.write(b", appended, never fsynced")
    # The same replace without fsync of the file: the name survives, its data not.
    unsynced = m / ".unsynced.tmp"
    unsynced.write_bytes(b"never fsynced")
    os.rename(unsynced, durable(m / "replaced", b"before"))
    fsync(m)
    # Into another folder, with only the destination fsynced: in the strict model the
    # source's entry is still durable too, so the file is in both after the cut.
    (m / "to").mkdir()
    fsync(m)
    os.rename(durable(m / "moving", b"moving"), m / "to" / "moving")
    fsync(m / "to")
    assert after_the_cut(lazy) == {
        "final": b"new content",
        "moving": b"moving",
        "replaced": b"",
        "to": None,
        "to/moving": b"moving",
    }


REPLACER = """
import os, sys
folder = sys.argv[1]
for value in range(1000):
    temp, final = os.path.join(folder, ".value.tmp"), os.path.join(folder, "value")
    with open(temp, "w") as f:
        f.write(str(value))
        f.flush()
        os.fsync(f.fileno())
    os.rename(temp, final)
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    os.fsync(fd)
    os.close(fd)
    print(value, flush=True)
"""


def test_an_armed_cut_falls_at_its_operation_and_kills_the_processes(lazy: LazyMount):
    """Cut after the 4th rename of a process that replaces a file atomically, in a
    loop: that rename's directory fsync never happens, the process is dead at the
    cut, and the file holds the value whose replace completed last."""
    assert lazy.cgroup is not None
    lazy.arm("after", "rename", r"/value$", skip=3)
    proc = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(REPLACER), str(lazy.mnt)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=lazy.cgroup.join,
    )
    event = lazy.wait_cut(30)
    assert (event["when"], event["op"]) == ("after", "rename")
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -9, "killed at the cut"
    assert out.split() == ["0", "1", "2"], "it did nothing after the cut"
    assert lazy.cgroup.empty()
    on_disk = tree(lazy.backing)
    lazy.power_cycle()
    assert tree(lazy.mnt) == on_disk == {"value": b"2"}
    assert lazy.stats()["counts"].get("rename", 0) == 0, "a new mount, counted anew"
