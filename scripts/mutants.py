#!/usr/bin/env python3
"""Break each guarantee on purpose in a scratch copy and show which tests catch it.

Each mutation is one text replacement in a copy of HEAD (``git archive``) under
/tmp/livecam-mutants/<name>; the tests run from that copy with PYTHONPATH
pointing at it, so the mutant ``livecam`` (and ``livecam_plugins``: the copy's
plugins/) is what every process imports (checked before the run); the Ansible
tests converge the copy's roles. Prints JSON: per mutation, the tests run and the ones that
failed. Run it under the locks of the suites it touches:

    flock /tmp/lc-lock-core .venv/bin/python scripts/mutants.py [NAME ...] [--report FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRATCH = Path("/tmp/livecam-mutants")
SHIPPER = "tests/core/test_shipper.py"
NFS = "tests/core/test_nfs.py"
POWER_CUT = "tests/core/test_pipeline.py::test_power_cut_loses_at_most_the_stated_window"
SMB_ENCRYPTION = "tests/transports/test_smb_encryption.py"
RSYNC_CALLS = "tests/transports/test_rsync_calls.py"
BATCH_LIMIT = "tests/transports/test_sftp_batch_limit.py"
BACKOFF = "tests/core/test_restart_backoff.py"
HOST_KEYS = "tests/transports/test_host_keys.py"
CTRL_C = "tests/core/test_ctrl_c.py"
ONE_CONNECTION = "tests/transports/test_contract.py::test_backlog_over_one_connection"

# name: (file, old text, new text, tests that should catch it)
MUTATIONS: dict[str, tuple[str, str, str, list[str]]] = {
    "no-size-check-before-rename": (
        "livecam/publish.py",
        "if written != item.size:",
        "if False:",
        [NFS, SHIPPER],
    ),
    "same-size-is-already-there": (
        "livecam/publish.py",
        "if size == item.size and store.digest(remote) == item.digest:",
        "if size == item.size:",
        [NFS, SHIPPER],
    ),
    "final-rename-replaces": (
        "livecam/dirstore.py",
        "os.link(self.temp, remote, src_dir_fd=root, dst_dir_fd=root)",
        "os.replace(self.temp, remote, src_dir_fd=root, dst_dir_fd=root)\n            return",
        [NFS, SHIPPER],
    ),
    "eviction-not-counted": (
        "livecam/evictions.py",
        'record["count"] = record.get("count", 0) + 1',
        'record["count"] = record.get("count", 0)',
        [SHIPPER],
    ),
    "eviction-hook-not-fired": (
        "livecam/evictions.py",
        "self.plugins.segment_evicted(segment=segment, tier=tier, reason=reason)",
        "pass",
        [SHIPPER],
    ),
    "flat-backoff": (
        "livecam/retry.py",
        "self._jitter = wait_random_exponential(multiplier=initial, max=maximum)",
        "self._jitter = __import__('tenacity').wait_random(0, maximum)",
        [SHIPPER],
    ),
    "conflict-name-not-stable": (
        "livecam/publisher.py",
        "aside = conflict_path(item.remote, item.digest)",
        "aside = conflict_path(item.remote, __import__('os').urandom(32).hex())",
        [SHIPPER],
    ),
    "recorder-opens-a-socket": (
        "livecam/recorder.py",
        'log.info("camera %s: recording with %s", self.camera.name, self.camera.backend)',
        "__import__('socket').socket(2, 2).close()",
        ["tests/core/test_promises_network.py"],
    ),
    "spill-window-widened": (
        "livecam/housekeeper.py",
        "if age < self.spill_after and",
        "if age < self.spill_after + 1.5 and",
        [SHIPPER, POWER_CUT],
    ),
    "smb-downgrades-encryption": (
        "plugins/smb.py",
        '"encrypt": o_["encrypt"] or None,',
        '"encrypt": None,',
        [SMB_ENCRYPTION],
    ),
    "smb-keeps-a-refused-connection": (
        "plugins/smb.py",
        "        except Exception as exc:\n            self.close()\n            raise classify(",
        "        except Exception as exc:\n            raise classify(",
        [SMB_ENCRYPTION],
    ),
    "rsync-partial-exit-proves-nothing": (
        "plugins/rsync.py",
        "PARTIAL = (23, 24)",
        "PARTIAL = ()",
        [RSYNC_CALLS],
    ),
    "rsync-call-limit-per-segment": (
        "plugins/rsync.py",
        "timeout = self.timeout * max(1, len(items))",
        "timeout = self.timeout",
        [RSYNC_CALLS],
    ),
    "rrsync-refusal-not-permanent": (
        "plugins/rsync.py",
        'r"has been disabled on this server|rrsync error|not allowed"',
        'r"(?!)"',
        [RSYNC_CALLS],
    ),
    "new-connection-per-publish": (
        "livecam/store_transport.py",
        "        (store,) = self.stores(1)\n",
        "        self.close()\n        (store,) = self.stores(1)\n",
        [ONE_CONNECTION],
    ),
    "batch-item-limit-one-timeout": (
        "livecam/store_transport.py",
        "functools.partial(self.publish_item, s, share=n)",
        "functools.partial(self.publish_item, s, share=1)",
        [BATCH_LIMIT],
    ),
    "nfs-temp-opened-by-path": (
        "livecam/dirstore.py",
        "return DirTemp(self, temp, os.open(temp, flags, 0o644, dir_fd=self.fd))",
        "return DirTemp(self, temp, os.open(os.path.join(self.label, temp), flags, 0o644))",
        [NFS],
    ),
    "supervisor-flat-restart": (
        "livecam/supervisor.py",
        "return min(BACKOFF_MAX, 0.5 * 2.0 ** (child.failures - 1))",
        "return 0.5",
        [BACKOFF],
    ),
    "supervisor-backoff-never-reset": (
        "livecam/supervisor.py",
        "if now - child.started > HEALTHY_AFTER:",
        "if False:",
        [BACKOFF],
    ),
    "sftp-accepts-an-unknown-host-key": (
        "plugins/sftp.py",
        "ssh.set_missing_host_key_policy(paramiko.RejectPolicy())",
        "ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())",
        [HOST_KEYS],
    ),
    "rsync-asks-about-unknown-host-keys": (
        "plugins/rsync.py",
        '"-o", "StrictHostKeyChecking=yes",',
        '"-o", "StrictHostKeyChecking=accept-new",',
        [HOST_KEYS],
    ),
    "stale-control-dir-removed-while-its-master-answers": (
        "plugins/rsync.py",
        '                if _socket_alive(d / "master"):\n                    continue\n',
        "",
        [RSYNC_CALLS],
    ),
    "children-in-the-supervisors-group": (
        "livecam/supervisor.py",
        "                start_new_session=True,\n",
        "                start_new_session=False,\n",
        [CTRL_C],
    ),
    "shipper-stopped-first": (
        "livecam/supervisor.py",
        "for wave in (first, last):",
        "for wave in (last, first):",
        [CTRL_C],
    ),
    "stall-limit-without-the-5s": (
        "livecam/recorder.py",
        "return 2.5 * self.config.segment_seconds + 5",
        "return 2.5 * self.config.segment_seconds",
        ["tests/core/test_pipeline.py::test_a_stalled_camera_is_restarted_and_the_log_says_so"],
    ),
    "playbook-skips-check-config": (
        "ansible/roles/livecam_node/tasks/config.yml",
        '    validate: "{{ livecam_node_venv }}/bin/livecam -c %s check-config"\n',
        "",
        [
            "tests/ansible/test_ansible_promises.py"
            "::test_a_bad_config_is_refused_by_check_config_before_any_restart"
        ],
    ),
    "sequence-ignores-the-tiers": (
        "livecam/segment.py",
        "self._next = max(spooled + ram_blocks * block if spooled else 0, in_ram, floor)",
        "self._next = max(spooled + ram_blocks * block if spooled else 0, in_ram)",
        ["tests/core/test_sequence.py"],
    ),
    "unplayable-leftover-kept": (
        "livecam/sink.py",
        "                leftover.unlink(missing_ok=True)\n",
        "",
        ["tests/core/test_promises_camera.py"],
    ),
    "metrics-writer-opens-a-socket": (
        "livecam/textfile.py",
        'log.info("writing metrics to %s every %gs", path, interval)',
        "__import__('socket').socket(2, 2).close()",
        ["tests/core/test_promises_network.py"],
    ),
    "recorder-flat-restart": (
        "livecam/recorder.py",
        "delay = min(BACKOFF_MAX, 0.5 * 2 ** (failures - 1))",
        "delay = 0.5",
        [BACKOFF],
    ),
}


def scratch_copy(name: str) -> Path:
    dest = SCRATCH / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    # The built-in plugins install as ``livecam_plugins`` (pyproject's package-dir):
    # the same name on PYTHONPATH, ahead of the editable install, is the mutant tree.
    (dest / "livecam_plugins").symlink_to("plugins")
    # The Ansible tests run the venv's ansible-playbook from <repo>/.venv/bin.
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


def module_name(file: str) -> str:
    """The import name of a mutated file: livecam/x.py or plugins/x.py."""
    dotted = file.removesuffix(".py").replace("/", ".")
    if file.startswith("plugins/"):
        return "livecam_plugins." + dotted.removeprefix("plugins.")
    return dotted


def run(name: str) -> dict[str, object]:
    file, old, new, tests = MUTATIONS[name]
    root = scratch_copy(name)
    path = root / file
    text = path.read_text()
    assert text.count(old) == 1, f"{name}: {old!r} not found once in {file}"
    path.write_text(text.replace(old, new))
    env = dict(os.environ, PYTHONPATH=str(root), LIVECAM_BIN=str(REPO / ".venv" / "bin"))
    if file.endswith(".py"):
        module = module_name(file)
        where = subprocess.run(
            [sys.executable, "-c", f"import {module} as m; print(m.__file__)"],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert Path(where).resolve() == path.resolve(), f"{name}: {module} came from {where}"
    # Anything else (the Ansible roles) the tests read from their own tree: the copy.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=no", "-rf", *tests],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    failed = sorted(set(re.findall(r"^FAILED (\S+?)(?:\[[^\]]*\])?(?: - |$)", result.stdout, re.M)))
    return {
        "mutation": name,
        "diff": f"{file}: {old!r} -> {new!r}",
        "tests": tests,
        "failed": failed,
        "caught": bool(failed),
        "summary": result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(MUTATIONS))
    parser.add_argument("--report", type=Path)
    args = parser.parse_args()
    results = []
    for name in args.names:
        results.append(run(name))
        print(json.dumps(results[-1]), flush=True)
    if args.report:
        args.report.write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(SCRATCH, ignore_errors=True)
    sys.exit(0 if all(r["caught"] for r in results) else 1)


if __name__ == "__main__":
    main()
