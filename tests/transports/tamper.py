"""What a node's rsync key tries against segments it already published.

Plain rsync and nothing of livecam's: delete, overwrite (in place, by checksum,
with a backup, through rsync's delayed or partial renames), append, put a
symlink, a directory or a hard link where a segment is, and have the NAS's rsync
write its log into one. Shared by the loopback test (the NAS's rrsync as the
machine has it, tests/transports/test_nas_accounts.py) and the Debian 12 NAS
tree (rsync 3.2.7, tests/ansible/test_ansible_fleet_e2e.py).
"""

from __future__ import annotations

import os
from pathlib import Path

TREES = ("empty", "forged", "symlink", "directory", "hardlink")


def prepare(work: Path, victims: list[str]) -> None:
    """Source trees below ``work`` for ``attempts``: ``victims`` are the published
    segments' paths relative to the destination the attempts name."""
    for tree in TREES:
        (work / tree).mkdir(parents=True, exist_ok=True)
    for rel in victims:
        for tree in TREES[1:]:
            (work / tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / "forged" / rel).write_bytes(b"forged")  # shorter: a truncate if it lands
        (work / "symlink" / rel).symlink_to("forged-target")
        (work / "directory" / rel).mkdir()
        (work / "directory" / rel / "inside").write_bytes(b"forged")
        # A new name (sorting first, so rsync sends it as the group's leader) and
        # the segment's name, one file: a hard link over the segment if it lands.
        leader = work / "hardlink" / rel
        leader = leader.with_name("0-new-" + leader.name + ".linked")
        leader.write_bytes(b"forged")
        os.link(leader, work / "hardlink" / rel)
    for path in work.rglob("*"):
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)


def attempts(work: Path, dest: str, log_target: str) -> dict[str, list[str]]:
    """{what: rsync arguments} of each attempt on the trees ``prepare`` made, sent to
    ``dest``; ``log_target`` is a victim's path relative to the key's own directory."""
    forged, empty = f"{work}/forged/", f"{work}/empty/"
    return {
        "delete": ["-r", "--delete", empty, dest],
        "delete-excluded": ["-r", "--delete-excluded", empty, dest],
        "overwrite": ["-r", "-I", forged, dest],
        "overwrite-inplace": ["-r", "-I", "--inplace", forged, dest],
        "overwrite-checksum": ["-r", "-c", forged, dest],
        "truncate-append": ["-r", "--append", forged, dest],
        "rename-over-backup": ["-r", "-I", "-b", forged, dest],
        "rename-over-delay-updates": ["-r", "-I", "--delay-updates", forged, dest],
        "rename-over-partial-dir": ["-r", "-I", "--partial-dir=.tamper", forged, dest],
        "symlink-over": ["-rl", f"{work}/symlink/", dest],
        "directory-over": ["-r", f"{work}/directory/", dest],
        "hard-link-over": ["-rH", f"{work}/hardlink/", dest],
        "append-the-log": ["-r", f"--remote-option=--log-file={log_target}", empty, dest],
        # Last: were it allowed, it would remove the sources of the attempts above.
        "remove-source": ["-r", "--remove-source-files", forged, dest],
    }
