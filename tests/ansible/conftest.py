"""A fleet of camera nodes (rsync, sftp, smb) and a NAS, as Debian trees provisioned by site.yml."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.ansible import fleet

NODES = ("node1", "node2")  # ship over rsync (the e2e cuts node1's link)
SFTP_NODE = "node3"  # ships over sftp into a chrooted account
SMB_NODE = "node4"  # ships over smb to the role's append-only share
ALL_NODES = (*NODES, SFTP_NODE, SMB_NODE)
NAS_ADDRESS = "10.77.0.1"
SFTP_PORT = 2422  # not 22: the NAS role must make its sshd listen there too
WEB_NODE = "node1"  # the node whose web page is enabled (livecam-web.service)
WEB_TOKEN = "ansible-web-token-4711"  # node1's and the NAS's web token (a vault value)
SMB_PORT = 4450  # not 445: the NAS role must make smbd listen there too
SMB_PASSWORDS = ("first-Pa55-word", "changed-Pa55-word")  # loopback netns only


def write_vault(work: Path, password: str) -> None:
    """The smb node's password as the site keeps it: in a file ansible-vault
    encrypted (host_vars beside the inventory), its vault password in a file."""
    secret = work / fleet.VAULT_PASSWORD
    if not secret.exists():
        secret.write_text("test vault password\n")
        secret.chmod(0o600)
    vault = work / "host_vars" / f"{SMB_NODE}.yml"
    vault.parent.mkdir(exist_ok=True)
    vault.write_text(yaml.safe_dump({"vault_livecam_smb_password": password}))
    fleet.sh(str(fleet.VENV_BIN / "ansible-vault"), "encrypt", "--vault-password-file",
             str(secret), str(vault))  # fmt: skip
    assert vault.read_text().startswith("$ANSIBLE_VAULT;")


@dataclass
class Fleet:
    """The provisioned trees and the inventory that made them."""

    work: Path
    inventory: Path
    trees: dict[str, Path]
    runs: dict[str, tuple[float, dict]] = field(default_factory=dict)
    cleanup: fleet.Cleanup = field(default_factory=fleet.Cleanup)


def sftp_transport(node: str) -> dict:
    """A node's host vars for shipping over sftp into its own chrooted account
    (its directory is ``/<node>`` inside the chroot, the site directory)."""
    return {
        "livecam_node_transport": {"plugin": "sftp", "host": NAS_ADDRESS,
                                   "user": f"livecam-{node}", "path": f"/{node}",
                                   "port": SFTP_PORT},
        "livecam_node_remote_path": "{camera}/{date}/{name}",
    }  # fmt: skip


def _inventory(trees: dict[str, Path], work: Path, wheelhouse: Path) -> dict:
    cameras = {
        # Small test-pattern cameras: real ffmpeg and x264, little CPU.
        "node1": {"cam0": {"backend": "ffmpeg", "size": [160, 120], "fps": 10, "bitrate": "100k",
                           "pattern": "testsrc2"},
                  "cam1": {"backend": "ffmpeg", "size": [160, 120], "fps": 10, "bitrate": "100k",
                           "pattern": "smptebars"}},
        "node2": {"cam0": {"backend": "ffmpeg", "size": [160, 120], "fps": 10,
                           "bitrate": "100k", "pattern": "testsrc2"}},
        "node3": {"cam0": {"backend": "ffmpeg", "size": [160, 120], "fps": 10,
                           "bitrate": "100k", "pattern": "testsrc2"}},
        "node4": {"cam0": {"backend": "ffmpeg", "size": [160, 120], "fps": 10,
                           "bitrate": "100k", "pattern": "testsrc2"}},
    }  # fmt: skip
    hosts = {n: {"ansible_host": str(trees[n]), "livecam_node_cameras": cameras[n]}
             for n in ALL_NODES if n in trees}  # fmt: skip
    hosts[WEB_NODE].update(livecam_node_web=True, livecam_node_web_token=WEB_TOKEN)
    if SFTP_NODE in hosts:
        hosts[SFTP_NODE].update(sftp_transport(SFTP_NODE))
    if SMB_NODE in hosts:
        hosts[SMB_NODE]["livecam_node_transport"] = {
            "plugin": "smb", "server": NAS_ADDRESS, "port": SMB_PORT, "share": "livecam",
            "path": f"test/{SMB_NODE}", "username": f"livecam-{SMB_NODE}",
        }  # fmt: skip
        hosts[SMB_NODE]["livecam_node_remote_path"] = "{camera}/{date}/{name}"
        hosts[SMB_NODE]["livecam_node_transport_secret"] = "{{ vault_livecam_smb_password }}"
    return {
        "all": {
            "vars": {
                "ansible_connection": "community.general.chroot",
                "ansible_python_interpreter": "/usr/bin/python3",
                # No systemd runs in a chroot: enable units, start nothing.
                "livecam_node_services_start": False,
                "livecam_nas_services_start": False,
                "livecam_node_site": "test",
                "livecam_node_segment_seconds": 2,
                "livecam_node_buffer_max_bytes": "20M",
                "livecam_node_buffer_tmpfs_size": "32M",
                "livecam_node_spool_max_bytes": "200M",
                "livecam_node_spool_min_free_bytes": "10M",
                "livecam_node_transport": {"plugin": "rsync", "host": NAS_ADDRESS,
                                           "user": "livecam", "path": ".", "bwlimit": 0},
                "livecam_node_config_extra": {"retry": {"initial": "1s", "max": "2s"}},
                # Dependency wheels are fetched once per machine, not per run; one
                # wheelhouse per test group (tests/conftest.py), as groups converge
                # side by side and a run clears its livecam wheel from its wheelhouse.
                "livecam_node_wheelhouse": str(wheelhouse),
                "livecam_nas_wheelhouse": str(wheelhouse),
                "livecam_build_dir": str(work / "build"),
            },
            "children": {
                "livecam_nas": {"hosts": {"nas": {"ansible_host": str(trees["nas"]),
                                                  "livecam_nas_web": True,
                                                  "livecam_nas_web_token": WEB_TOKEN}}},
                "livecam_nodes": {"hosts": hosts},
            },
        }
    }  # fmt: skip


# The nodes each test group's fleet has (tests/groups.py) when it comes from the
# cache of converged fleets: the systemd group boots node1 and the NAS only.
NODES_OF_GROUP = {"systemd": (WEB_NODE,)}
# The group whose tests are about a first converge: it always converges, and
# publishes what it made for the other groups (fleet.Converged).
FIRST_CONVERGE = "ansible"


@pytest.fixture(scope="session")
def provisioned(tmp_path_factory) -> Fleet:
    """The node trees (``ALL_NODES``, or what ``NODES_OF_GROUP`` says for this test
    group) and a NAS tree, converged by site.yml: here, or (any group but
    FIRST_CONVERGE) by an earlier converge of the same source, roles and inventory
    on this machine, mounted from the cache."""
    if os.geteuid() != 0:
        pytest.skip("needs root: mounts overlays and chroots into Debian trees")
    for tool in ("debootstrap", "chroot", "ip"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}")
    t0 = time.monotonic()
    base = fleet.base_tree()
    print(f"\nbase tree {base} ready in {time.monotonic() - t0:.0f}s")
    work = tmp_path_factory.mktemp("fleet")
    f = Fleet(work=work, inventory=work / "inventory.yml", trees={})
    group = os.environ.get("LIVECAM_TEST_GROUP", "")
    lock = None
    try:
        # site.yml builds the wheel from a snapshot of the checkout, so edits made
        # to the working tree while the tests run cannot change the second run.
        source = work / "src"
        shutil.copytree(fleet.REPO, source, ignore=shutil.ignore_patterns(
            ".*", "tests", "ansible", "bench", "docs", "build", "dist", "*.egg-info",
            "__pycache__", "livecam-demo"))  # fmt: skip
        paths = {n: Path("/TREE") / n for n in (*ALL_NODES, "nas")}
        what = [base.name, _inventory(paths, Path("/WORK"), Path("/WHEELS")), SMB_PASSWORDS[0]]
        cache = fleet.Converged(fleet.digest(fleet.REPO / "ansible", source, extra=str(what)))
        # Wait while another group converges this fleet to publish it; the first
        # converge's own group never waits (it converges whatever the cache holds).
        lock = cache.lock(wait=group != FIRST_CONVERGE)
        hit = group != FIRST_CONVERGE and cache.ready()
        for name in (*(NODES_OF_GROUP.get(group, ALL_NODES) if hit else ALL_NODES), "nas"):
            under = cache.tree(name) if hit else None
            f.trees[name] = fleet.overlay_tree(base, work, name, f.cleanup, under)
        wheelhouse = fleet.CACHE / "wheelhouse" / (group or FIRST_CONVERGE)
        inventory = _inventory(f.trees, work, wheelhouse)
        inventory["all"]["vars"]["livecam_source"] = str(source)
        write_vault(work, SMB_PASSWORDS[0])
        f.inventory.write_text(yaml.safe_dump(inventory, sort_keys=False))
        if hit:
            print(f"converged fleet from {cache.home}")
        else:
            t0 = time.monotonic()
            out, recap = fleet.ansible_playbook(f.inventory)
            (work / "first-run.log").write_text(out)
            f.runs["first"] = (time.monotonic() - t0, recap)
            print(f"first converge: {f.runs['first'][0]:.0f}s {f.runs['first'][1]}")
            if lock is not None and not cache.ready():
                cache.publish({name: work / name / "upper" for name in f.trees})
        if lock is not None:
            lock.close()
            lock = None
        yield f
    finally:
        if lock is not None:
            lock.close()
        errors = f.cleanup.run()
        assert not errors, errors
