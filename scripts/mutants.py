#!/usr/bin/env python3
"""Break each guarantee on purpose in a scratch copy and show which tests catch it.

Each mutation is one text replacement in a copy of HEAD (``git archive``) under
/tmp/livecam-mutants/<name>; the tests run from that copy with PYTHONPATH
pointing at it, so the mutant ``livecam`` (and ``livecam_plugins``: the copy's
plugins/) is what every process imports (checked before the run); the Ansible
tests converge the copy's roles. ``--worktree`` copies the working tree instead
(every file git tracks or would add, as it is on disk: uncommitted work), and
the report says so. Prints JSON: per mutation, the tests run and the ones that
failed, then ``caught N/M``. Run it under the locks of the suites it touches,
or let it take them (``--locks``: per mutation, those of the suites its tests
are in, in the order core, transports, ..., ansible):

    flock /tmp/lc-lock-core .venv/bin/python scripts/mutants.py [NAME ...] [--report FILE]
    .venv/bin/python scripts/mutants.py --locks --report docs/mutants.json   # all of them

Each mutation breaks the promises of docs/promises.md that ``ROWS`` names.
``--report FILE`` writes (or, for a few NAMEs, updates) the JSON report
``tests/test_promises_table.py`` reads: per mutation its diff, rows, tests, the
tests that failed and the commit (and tree) it ran on. That test fails when a
mutation no test among its rows' caught in the last report: a row called proven
whose named tests would all pass with its promise broken.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.groups import group_of  # noqa: E402 - the repository's, found through REPO

SCRATCH = Path("/tmp/livecam-mutants")
REPORT_LOCK = "/tmp/lc-lock-mutants-report"  # write_report's
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
LOSS_RECORDS = "tests/core/test_loss_records.py"
READ_ONLY_SPOOL = "tests/core/test_read_only_spool.py"
CLOCK_STEPS = "tests/core/test_clock_steps.py"
METRICS_NODE = "tests/monitoring/test_metrics_node.py"
POWER_CUTS = "tests/powercut/test_power_cut.py"  # the spool on lazyfs, cut at many points

# name: (file, old text, new text, tests that should catch it)
RESTARTS = "tests/nas/test_restarts.py"
CONTRACT = "tests/cameras/test_camera_contract.py"
CLEAN_STOP = "tests/core/test_clean_stop.py"
MUTATIONS: dict[str, tuple[str, str, str, list[str]]] = {
    "no-size-check-before-rename": (
        "livecam/transport/protocol.py",
        "if written != item.size:",
        "if False:",
        [NFS, SHIPPER],
    ),
    "same-size-is-already-there": (
        "livecam/transport/protocol.py",
        "if size == item.size and store.digest(remote) == item.digest:",
        "if size == item.size:",
        [NFS, SHIPPER],
    ),
    "final-rename-replaces": (
        "livecam/transport/dirstore.py",
        "os.link(self.temp, remote, src_dir_fd=root, dst_dir_fd=root)",
        "os.replace(self.temp, remote, src_dir_fd=root, dst_dir_fd=root)\n            return",
        [NFS, SHIPPER],
    ),
    "eviction-not-counted": (
        "livecam/shipper/evictions.py",
        'record["count"] = record.get("count", 0) + 1',
        'record["count"] = record.get("count", 0)',
        [SHIPPER],
    ),
    "eviction-hook-not-fired": (
        "livecam/shipper/evictions.py",
        "self.plugins.segment_evicted(segment=segment, tier=tier, reason=reason)",
        "pass",
        [SHIPPER],
    ),
    # Issue 23: loss records, the clock, a read-only spool (rows N7, L1-L3).
    "eviction-not-recorded": (
        "livecam/shipper/evictions.py",
        "            self._record_loss(segment, tier, reason, size)\n"
        "            self._count(segment.at(aside), tier, reason, size)\n",
        "            self._count(segment.at(aside), tier, reason, size)\n",
        [SHIPPER, LOSS_RECORDS],
    ),
    "eviction-recorded-after-the-delete": (
        "livecam/shipper/evictions.py",
        "            self._record_loss(segment, tier, reason, size)\n"
        "            self._count(segment.at(aside), tier, reason, size)\n"
        "            aside.unlink(missing_ok=True)\n",
        "            self._count(segment.at(aside), tier, reason, size)\n"
        "            aside.unlink(missing_ok=True)\n"
        "            self._record_loss(segment, tier, reason, size)\n",
        [SHIPPER],
    ),
    "eviction-recorded-before-the-rename": (
        "livecam/shipper/evictions.py",
        "                size = segment.size\n                segment.path.rename(aside)\n",
        "                size = segment.size\n"
        "                self._record_loss(segment, tier, reason, size)\n"
        "                segment.path.rename(aside)\n",
        [READ_ONLY_SPOOL],
    ),
    "interrupted-eviction-not-recorded": (
        "livecam/shipper/evictions.py",
        "                if not counted:  # a record is written before its count\n"
        '                    self._record_loss(segment, tier, "interrupted", size)\n',
        "",
        [SHIPPER],
    ),
    "loss-records-evicted": (
        "livecam/shipper/evictions.py",
        "candidates = [s for s in tier.segments() if not s.is_record]",
        "candidates = tier.segments()",
        [SHIPPER, LOSS_RECORDS],
    ),
    "eviction-by-file-time": (
        "livecam/shipper/evictions.py",
        "candidates = [s for s in tier.segments() if not s.is_record]",
        "candidates = sorted((s for s in tier.segments() if not s.is_record),"
        " key=lambda s: s.path.stat().st_mtime)",
        [CLOCK_STEPS],
    ),
    "eviction-by-name": (
        "livecam/shipper/evictions.py",
        "candidates = [s for s in tier.segments() if not s.is_record]",
        "candidates = sorted((s for s in tier.segments() if not s.is_record),"
        " key=lambda s: s.name)",
        [CLOCK_STEPS],
    ),
    "spill-age-on-the-wall-clock": (
        "livecam/shipper/housekeeper.py",
        "if now - self._seen[segment.name] < self.spill_after and",
        "if time.time() - segment.path.stat().st_mtime < self.spill_after and",
        [CLOCK_STEPS, SHIPPER],
    ),
    "spill-age-of-a-found-segment-uncapped": (
        "livecam/shipper/housekeeper.py",
        "return now - min(max(age, 0.0), self.spill_after)",
        "return now - age",
        [CLOCK_STEPS, SHIPPER],
    ),
    "published-undeletable-shipped-again": (
        "livecam/shipper/publisher.py",
        "self._undeletable.add(segment.name)",
        "pass",
        [READ_ONLY_SPOOL],
    ),
    "loss-records-in-ram": (
        "livecam/storage/losses.py",
        "placed = self.disk.durably(LOSS_CAMERA, functools.partial(write_record, record=record))",
        "placed = NodeDisk(self.disk.buffer, self.disk.buffer).durably("
        "LOSS_CAMERA, functools.partial(write_record, record=record))",
        [LOSS_RECORDS],
    ),
    "crash-restart-recorded-as-clean": (
        "livecam/storage/losses.py",
        "clean=stopped is not None,",
        "clean=True,",
        [LOSS_RECORDS],
    ),
    "spool-failure-not-recorded": (
        "livecam/shipper/housekeeper.py",
        'self._record("spool_failed", f"running RAM-only: {error}", error=error)',
        "pass",
        [LOSS_RECORDS],
    ),
    "spool-recovery-not-recorded": (
        "livecam/shipper/housekeeper.py",
        'self._record("spool_recovered", f"spool {self.spool.path} works again")',
        "pass",
        [LOSS_RECORDS],
    ),
    "clock-step-not-recorded": (
        "livecam/recorder/sink.py",
        "if self.losses is not None:  # for the NAS audit: why this segment's time jumps",
        "if False:",
        [LOSS_RECORDS],
    ),
    "salvage-not-recorded": (
        "livecam/recorder/sink.py",
        "                if self.losses is not None:\n"
        "                    self.losses.record(\n"
        '                        "salvaged",',
        "                if False:\n"
        "                    self.losses.record(\n"
        '                        "salvaged",',
        [LOSS_RECORDS],
    ),
    "camera-down-not-recorded": (
        "livecam/recorder/process.py",
        '        self.losses.record(\n            "camera_down",',
        '        (lambda *a, **k: None)(\n            "camera_down",',
        [LOSS_RECORDS],
    ),
    "flat-backoff": (
        "livecam/shipper/retry.py",
        "self._jitter = wait_random_exponential(multiplier=initial, max=maximum)",
        "self._jitter = __import__('tenacity').wait_random(0, maximum)",
        [SHIPPER],
    ),
    "conflict-name-not-stable": (
        "livecam/shipper/publisher.py",
        "aside = conflict_path(item.remote, item.digest)",
        "aside = conflict_path(item.remote, __import__('os').urandom(32).hex())",
        [SHIPPER],
    ),
    "recorder-opens-a-socket": (
        "livecam/recorder/process.py",
        'log.info("camera %s: starting with %s", self.camera.name, self.camera.backend)',
        "__import__('socket').socket(2, 2).close()",
        ["tests/core/test_promises_network.py"],
    ),
    "spill-window-widened": (
        "livecam/shipper/housekeeper.py",
        "if now - self._seen[segment.name] < self.spill_after and",
        "if now - self._seen[segment.name] < self.spill_after + 1.5 and",
        [SHIPPER, POWER_CUT],
    ),
    "smb-downgrades-encryption": (
        "plugins/livecam_plugins/smb/transport.py",
        '"encrypt": o_["encrypt"] or None,',
        '"encrypt": None,',
        [SMB_ENCRYPTION],
    ),
    "smb-keeps-a-refused-connection": (
        "plugins/livecam_plugins/smb/transport.py",
        "            self.close()\n            raise self.classify(",
        "            raise self.classify(",
        [SMB_ENCRYPTION],
    ),
    "rsync-partial-exit-proves-nothing": (
        "plugins/livecam_plugins/rsync/errors.py",
        "PARTIAL = (23, 24)",
        "PARTIAL = ()",
        [RSYNC_CALLS],
    ),
    "rsync-call-limit-per-segment": (
        "plugins/livecam_plugins/rsync/send.py",
        "timeout = self.transport.timeout * max(1, len(items))",
        "timeout = self.transport.timeout",
        [RSYNC_CALLS],
    ),
    "rrsync-refusal-not-permanent": (
        "plugins/livecam_plugins/rsync/errors.py",
        'r"has been disabled on this server|rrsync error|not allowed"',
        'r"(?!)"',
        [RSYNC_CALLS],
    ),
    "new-connection-per-publish": (
        "livecam/transport/stores.py",
        "        (store,) = self.stores(1)\n",
        "        self.close()\n        (store,) = self.stores(1)\n",
        [ONE_CONNECTION],
    ),
    "batch-item-limit-one-timeout": (
        "livecam/transport/stores.py",
        "functools.partial(self.publish_item, s, share=n)",
        "functools.partial(self.publish_item, s, share=1)",
        [BATCH_LIMIT],
    ),
    "nfs-temp-opened-by-path": (
        "livecam/transport/dirstore.py",
        "return DirTemp(self, temp, os.open(temp, flags, 0o644, dir_fd=self.fd))",
        "return DirTemp(self, temp, os.open(os.path.join(self.label, temp), flags, 0o644))",
        [NFS],
    ),
    "supervisor-flat-restart": (
        "livecam/ops/supervisor.py",
        "delay = child.backoff.failed(now - child.started)",
        "delay = 0.5",
        [BACKOFF],
    ),
    "supervisor-backoff-never-reset": (
        "livecam/ops/supervisor.py",
        "delay = child.backoff.failed(now - child.started)",
        "delay = child.backoff.failed(0.0)",
        [BACKOFF],
    ),
    "sftp-accepts-an-unknown-host-key": (
        "plugins/livecam_plugins/sftp/transport.py",
        "ssh.set_missing_host_key_policy(paramiko.RejectPolicy())",
        "ssh.set_missing_host_key_policy(paramiko.AutoAddPolicy())",
        [HOST_KEYS],
    ),
    "rsync-asks-about-unknown-host-keys": (
        "plugins/livecam_plugins/rsync/master.py",
        '"-o", "StrictHostKeyChecking=yes",',
        '"-o", "StrictHostKeyChecking=accept-new",',
        [HOST_KEYS],
    ),
    "stale-control-dir-removed-while-its-master-answers": (
        "plugins/livecam_plugins/rsync/master.py",
        '                if any(socket_alive(m) for m in d.glob("master*")):\n'
        "                    continue\n",
        "",
        [RSYNC_CALLS],
    ),
    "children-in-the-supervisors-group": (
        "livecam/ops/supervisor.py",
        "                start_new_session=True,\n",
        "                start_new_session=False,\n",
        [CTRL_C],
    ),
    "shipper-stopped-first": (
        "livecam/ops/supervisor.py",
        "for wave in (first, last):",
        "for wave in (last, first):",
        [CTRL_C],
    ),
    "stall-limit-without-the-5s": (
        "livecam/recorder/process.py",
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
        "livecam/recorder/sequence.py",
        "self._next = max(rebooted, spooled, in_ram, floor)",
        "self._next = max(rebooted, spooled, in_ram)",
        ["tests/core/test_sequence.py"],
    ),
    "unplayable-leftover-kept": (
        "livecam/recorder/sink.py",
        "                leftover.unlink(missing_ok=True)\n",
        "",
        ["tests/core/test_promises_camera.py"],
    ),
    "metrics-writer-opens-a-socket": (
        "livecam/ops/metrics.py",
        'log.info("writing metrics to %s every %gs", path, interval)',
        "__import__('socket').socket(2, 2).close()",
        ["tests/core/test_promises_network.py"],
    ),
    "recorder-flat-restart": (
        "livecam/recorder/process.py",
        "delay = backoff.failed(time.monotonic() - started)",
        "delay = 0.5",
        [BACKOFF],
    ),
    "shipper-pings-with-a-hung-publisher": (
        "livecam/ops/heartbeat.py",
        "        if time.monotonic() - self._attempt > self.publisher_limit:\n"
        "            return  # the publisher is stuck: let the watchdog fire\n",
        "",
        [
            "tests/monitoring/test_sdnotify.py"
            "::test_a_hung_publish_stops_the_shipper_pings_while_housekeeping_goes_on",
            "tests/monitoring/test_units_systemd.py"
            "::test_a_hung_publish_is_killed_by_the_watchdog_while_recording_goes_on",
        ],
    ),
    "shipper-publisher-limit-without-slack": (
        "livecam/shipper/process.py",
        "config.transport_timeout + max(config.retry_max, config.retry_permanent) + 30",
        "config.transport_timeout + max(config.retry_max, config.retry_permanent)",
        [
            "tests/monitoring/test_sdnotify.py"
            "::test_a_hung_publish_stops_the_shipper_pings_while_housekeeping_goes_on",
        ],
    ),
    "status-renames-published-bytes": (
        "livecam/ops/status.py",
        '"published_bytes": ship.get("published_bytes", 0),',
        '"published_size": ship.get("published_bytes", 0),',
        [METRICS_NODE],
    ),
    "metrics-drop-bad-segments": (
        "livecam/ops/prometheus.py",
        'bad.add(cam.get("bad_segments", 0), camera=name)',
        "pass",
        [METRICS_NODE],
    ),
    # Every fsync the power-cut promises rely on, each removed on its own (issue 23).
    "replace-without-file-fsync": (
        "livecam/storage/files.py",
        "os.fsync(f.fileno())",
        "pass",
        [POWER_CUTS],
    ),
    "replace-without-folder-fsync": (
        "livecam/storage/files.py",
        "fsync_dir(path.parent)",
        "pass",
        [POWER_CUTS],
    ),
    "folder-fsync-does-nothing": (
        "livecam/storage/files.py",
        "os.fsync(fd)",
        "pass",
        [POWER_CUTS],
    ),
    "spill-copy-not-durable": (
        "livecam/storage/tiers.py",
        "replacing(dest, durable=True, temp=tmp)",
        "replacing(dest, durable=False, temp=tmp)",
        [POWER_CUTS],
    ),
    "camera-folder-name-not-synced": (
        "livecam/storage/tiers.py",
        "fsync_dir(self.path)",
        "pass",
        [POWER_CUTS],
    ),
    "state-not-durable": (
        "livecam/storage/layout.py",
        "atomic_write(directory / name, data, durable=True)",
        "atomic_write(directory / name, data, durable=False)",
        [POWER_CUTS],
    ),
    "state-folder-name-not-synced": (
        "livecam/storage/layout.py",
        "fsync_dir(tier.path)",
        "pass",
        [POWER_CUTS],
    ),
    "loss-record-without-fsync": (
        "livecam/storage/losses.py",
        "os.fsync(f.fileno())",
        "pass",
        [POWER_CUTS],
    ),
    "loss-record-name-not-synced": (
        "livecam/storage/losses.py",
        "fsync_dir(folder)",
        "pass",
        [POWER_CUTS],
    ),
    "clean-stop-note-not-durable": (
        "livecam/storage/losses.py",
        "atomic_write(marker, json.dumps(note), durable=True)",
        "atomic_write(marker, json.dumps(note), durable=False)",
        [POWER_CUTS],
    ),
    "clean-stop-note-consumed-lazily": (
        "livecam/storage/losses.py",
        "fsync_dir(marker.parent)",
        "pass",
        [POWER_CUTS],
    ),
    # --- issue 22: what livecam tells an operator ---
    "loss-records-counted-as-segments": (
        "livecam/shipper/publisher.py",
        "            if segment.is_record:\n                st.records_published += 1\n",
        "            if False:\n                st.records_published += 1\n",
        ["tests/core/test_loss_record_names.py"],
    ),
    "old-loss-records-not-records": (
        "livecam/storage/segment.py",
        "return self.camera in (LOSSES, OLD_LOSSES)",
        "return self.camera == LOSSES",
        ["tests/core/test_loss_record_names.py", "tests/nas/test_old_layout.py"],
    ),
    "web-serves-loss-records": (
        "livecam/web/nas.py",
        " or _loss_record(cfg.root, path):",
        ":",
        ["tests/web/test_nas.py::test_loss_records_are_never_served_as_video"],
    ),
    "silence-only-when-explained": (
        "livecam/nas/audit.py",
        "    if silent is not None:\n",
        "    if silent is not None and silent.explained:\n",
        ["tests/nas/test_silence.py::test_a_node_killed_and_never_back_is_unexplained_after_grace"],
    ),
    "no-stopped-record": (
        "livecam/storage/losses.py",
        'losses.record("stopped", camera, (), "the recorder stopped cleanly", last_seq=last_seq)',
        "pass",
        [
            "tests/nas/test_silence.py::test_a_node_stopped_cleanly_is_explained_by_its_stopped_records"
        ],
    ),
    "inventory-ignored": (
        "livecam/nas/audit.py",
        " | set(expected)",
        "",
        ["tests/nas/test_silence.py::test_an_inventory_camera_never_seen_is_unexplained"],
    ),
    "restart-always-jumps": (
        "livecam/recorder/sequence.py",
        "if spooled and not in_ram else 0",
        "if spooled else 0",
        [
            "tests/core/test_sequence.py",
            f"{RESTARTS}::test_a_clean_restart_continues_its_numbers_and_leaves_a_time_gap",
        ],
    ),
    "salvage-not-considered": (
        "livecam/nas/explain.py",
        "elif b.seq in salvaged and",
        "elif False and",
        [f"{RESTARTS}::test_a_recorder_crash_skips_one_range_and_its_salvaged_segment_is_not_lost"],
    ),
    "overlap-within-the-tolerance": (
        "livecam/nas/explain.py",
        "> FRAME_INTERVAL + rounding",
        "> TIME_TOLERANCE",
        [f"{RESTARTS}::test_an_overlap_between_segments_is_a_time_fault"],
    ),
    "segments-named-by-their-close": (
        "livecam/recorder/sink.py",
        "if start is None:",
        "if True:",
        [
            f"{CONTRACT}::test_a_segment_is_named_by_its_first_frames_capture_time",
            f"{CONTRACT}::test_consecutive_segments_neither_overlap_nor_leave_a_gap",
        ],
    ),
    "camera-without-input-records-a-pattern": (
        "plugins/livecam_plugins/ffmpeg_source.py",
        'if opts["input"] is None and opts["pattern"] is None:',
        "if False:",
        ["tests/core/test_config.py::test_bad_config_gets_one_clear_line_and_exit_2"],
    ),
    "status-hides-the-test-pattern": (
        "livecam/ops/status.py",
        '"test_pattern": config.cameras[name].test_pattern,',
        '"test_pattern": None,',
        ["tests/core/test_config.py::test_a_test_pattern_camera_is_named_as_such"],
    ),
    "closed-before-the-greeting-is-down": (
        "plugins/livecam_plugins/_ssh.py",
        "                if not chunk:\n                    return DOWN if seen else BUSY\n",
        "                if not chunk:\n                    return DOWN\n",
        ["tests/fleet/test_busy.py::test_a_connection_closed_before_the_greeting_is_busy_not_down"],
    ),
    "busy-backs-off": (
        "livecam/shipper/retry.py",
        "if self._busy_retry(_error(retry_state)):",
        "if False:",
        ["tests/fleet/test_busy.py::test_busy_comes_back_shortly_and_never_grows_the_backoff"],
    ),
    "clean-stop-spills-at-once": (
        "livecam/shipper/process.py",
        "deadline=self.config.stop_deadline,",
        "deadline=0,",
        [f"{CLEAN_STOP}::test_a_stop_on_a_healthy_link_ships_the_last_segments_and_spills_nothing"],
    ),
    "clean-stop-ignores-stopping-recorders": (
        "livecam/shipper/stop.py",
        'if state == "stopping" or grace:',
        "if False:",
        [f"{CLEAN_STOP}::test_the_shipper_waits_for_recorders_slow_to_stop"],
    ),
    "clean-stop-leaves-ram-unspilled": (
        "livecam/shipper/process.py",
        "self.housekeeper.spill_all()",
        "pass",
        [f"{CLEAN_STOP}::test_a_stop_with_the_nas_down_spills_everything_in_ram_and_loses_nothing"],
    ),
    "return-spread-fixed": (
        "plugins/livecam_plugins/_ssh.py",
        "return min(SPREAD_MAX, max(SPREAD_MIN, SPREAD_PER_GREETING * greeting))",
        "return SPREAD_MIN",
        ["tests/fleet/test_busy.py::test_the_return_spread_grows_with_sshds_greeting_time"],
    ),
}

# mutation: the rows of docs/promises.md whose promise it breaks; at least one test
# that catches it must be among the tests those rows name (tests/test_promises_table.py,
# from the last --report). Empty only where no row promises it (a speed goal).
ROWS: dict[str, tuple[str, ...]] = {
    "no-size-check-before-rename": ("A10",),
    "same-size-is-already-there": ("A10", "A12"),
    "final-rename-replaces": ("T2",),
    "eviction-not-counted": ("R7", "A16"),
    "eviction-hook-not-fired": ("A16",),
    "eviction-not-recorded": ("N7", "L3"),
    "eviction-recorded-after-the-delete": ("N7",),
    "eviction-recorded-before-the-rename": ("L2",),
    "interrupted-eviction-not-recorded": ("N7",),
    "loss-records-evicted": ("N7", "L3"),
    "eviction-by-file-time": ("L1",),
    "eviction-by-name": ("L1",),
    "spill-age-on-the-wall-clock": ("L1",),
    "spill-age-of-a-found-segment-uncapped": ("L1",),
    "published-undeletable-shipped-again": ("L2",),
    "loss-records-in-ram": ("L3",),
    "crash-restart-recorded-as-clean": ("L3",),
    "spool-failure-not-recorded": ("L3",),
    "spool-recovery-not-recorded": ("L3",),
    "clock-step-not-recorded": ("L3",),
    "salvage-not-recorded": ("L3",),
    "camera-down-not-recorded": ("L3",),
    "flat-backoff": ("A11",),
    "conflict-name-not-stable": ("A12",),
    "recorder-opens-a-socket": ("A1",),
    "spill-window-widened": ("R3", "A19"),
    "smb-downgrades-encryption": ("T27",),
    "smb-keeps-a-refused-connection": ("T27",),
    "rsync-partial-exit-proves-nothing": ("T14",),
    "rsync-call-limit-per-segment": ("T17",),
    "rrsync-refusal-not-permanent": ("T31",),
    "new-connection-per-publish": (),  # docs/transports.md's one connection: a speed goal
    "batch-item-limit-one-timeout": ("T25",),
    "nfs-temp-opened-by-path": ("A23",),
    "supervisor-flat-restart": ("A2",),
    "supervisor-backoff-never-reset": ("A2",),
    "sftp-accepts-an-unknown-host-key": ("T23",),
    "rsync-asks-about-unknown-host-keys": ("T23",),
    "stale-control-dir-removed-while-its-master-answers": ("T15",),
    "children-in-the-supervisors-group": ("A3",),
    "shipper-stopped-first": ("A3",),
    "stall-limit-without-the-5s": ("R10",),
    "playbook-skips-check-config": ("R19",),
    "sequence-ignores-the-tiers": ("A5",),
    "unplayable-leftover-kept": ("A7",),
    "metrics-writer-opens-a-socket": ("M13",),
    "recorder-flat-restart": ("R10",),
    "shipper-pings-with-a-hung-publisher": ("M9",),
    "shipper-publisher-limit-without-slack": ("M9",),
    "status-renames-published-bytes": ("M1",),
    "metrics-drop-bad-segments": ("M2",),
    "replace-without-file-fsync": ("R3", "A19"),
    "replace-without-folder-fsync": ("R3", "A19"),
    "folder-fsync-does-nothing": ("R3", "A19", "L3"),
    "spill-copy-not-durable": ("R3", "A19"),
    "camera-folder-name-not-synced": ("R3", "A19"),
    "state-not-durable": ("R3", "A19"),
    "state-folder-name-not-synced": ("R3", "A19"),
    "loss-record-without-fsync": ("R3", "L3"),
    "loss-record-name-not-synced": ("R3", "L3"),
    "clean-stop-note-not-durable": ("R3", "L3"),
    "clean-stop-note-consumed-lazily": ("R3", "L3"),
    "loss-records-counted-as-segments": ("O16",),
    "old-loss-records-not-records": ("O18", "O19"),
    "web-serves-loss-records": ("O17",),
    "silence-only-when-explained": ("O2",),
    "no-stopped-record": ("O3",),
    "inventory-ignored": ("O1",),
    "restart-always-jumps": ("O12",),
    "salvage-not-considered": ("O13",),
    "overlap-within-the-tolerance": ("O24",),
    "segments-named-by-their-close": ("O22", "O23"),
    "camera-without-input-records-a-pattern": ("O9",),
    "status-hides-the-test-pattern": ("O10",),
    "closed-before-the-greeting-is-down": ("O28",),
    "busy-backs-off": ("O28",),
    "return-spread-fixed": ("O30",),
    "clean-stop-spills-at-once": ("O20", "A17"),
    "clean-stop-ignores-stopping-recorders": ("O20",),
    "clean-stop-leaves-ram-unspilled": ("O20", "A17"),
}


def scratch_copy(name: str, worktree: bool = False) -> Path:
    """A copy of HEAD, or (``worktree``) of the files git tracks or would add, as they
    are on disk, under SCRATCH/name."""
    dest = SCRATCH / name
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    if worktree:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO,
            capture_output=True,
            check=True,
        ).stdout
        # A tracked file deleted on disk is gone from the working tree too.
        files = [f for f in listed.split(b"\0") if f and os.path.lexists(REPO / os.fsdecode(f))]
        archive = subprocess.run(
            ["tar", "-c", "--null", "-T", "-"],
            cwd=REPO,
            input=b"\0".join(files),
            capture_output=True,
            check=True,
        )
    else:
        archive = subprocess.run(
            ["git", "archive", "HEAD"], cwd=REPO, capture_output=True, check=True
        )
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    # The built-in plugins install as ``livecam_plugins`` (pyproject's package-dir:
    # plugins/livecam_plugins): the same name on PYTHONPATH, ahead of the editable
    # install, is the mutant tree.
    (dest / "livecam_plugins").symlink_to("plugins/livecam_plugins")
    # The Ansible tests run the venv's ansible-playbook from <repo>/.venv/bin.
    (dest / ".venv").symlink_to(REPO / ".venv")
    return dest


def module_name(file: str) -> str:
    """The import name of a mutated file: livecam/x.py, or plugins/livecam_plugins/x.py
    (``livecam_plugins.x``); a package's ``__init__.py`` is the package."""
    dotted = file.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
    return dotted.removeprefix("plugins.")


# Every group's lock (tests/groups.py), always taken in this order: two runs that
# each need several cannot deadlock.
LOCK_ORDER = (
    "ansible", "ansible-fleet", "systemd", "core", "transports", "monitoring", "s3", "nas",
    "web", "cameras", "fleet", "powercut", "docs",
)  # fmt: skip


def locked(command: list[str], tests: list[str]) -> list[str]:
    """``command`` under the lock of every group ``tests`` are in, outermost first."""
    groups = {group_of(test) for test in tests if test.startswith("tests/")}
    for group in reversed([g for g in LOCK_ORDER if g in groups]):
        command = ["flock", f"/tmp/lc-lock-{group}", *command]
    return command


def run(name: str, *, worktree: bool = False, locks: bool = False) -> dict[str, object]:
    file, old, new, tests = MUTATIONS[name]
    root = scratch_copy(name, worktree)
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
    pytest = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--tb=no", "-rfE"]
    t0 = time.monotonic()
    result = subprocess.run(
        locked([*pytest, *tests], tests) if locks else [*pytest, *tests],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=3600,
    )
    shutil.rmtree(root, ignore_errors=True)  # only this copy: another run may be using SCRATCH
    # A node id as the rows name it: no parameters, no xdist group ("...@core").
    node = r"(\S+?)(?:\[[^\]]*\])?(?:@[\w-]+)?(?: - |$)"
    failed = sorted(set(re.findall(rf"^FAILED {node}", result.stdout, re.M)))
    errors = sorted(set(re.findall(rf"^ERROR {node}", result.stdout, re.M)))
    return {
        "mutation": name,
        "file": file,
        "old": old,
        "new": new,
        "rows": list(ROWS.get(name, ())),
        "tests": tests,
        "failed": failed,
        "errors": errors,
        "caught": bool(failed),
        "summary": result.stdout.strip().splitlines()[-1] if result.stdout.strip() else "",
        "seconds": round(time.monotonic() - t0),
    }


def write_report(path: Path, results: list[dict[str, object]], made_at: dict[str, str]) -> None:
    """Write (or update: other mutations' entries are kept) the report at ``path``."""
    # Two runs at once (other mutations, other suites) each read, update and write the
    # report: without a lock one run's entries vanish under the other's write.
    with open(REPORT_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries: dict[str, dict[str, object]] = {}
        if path.exists():
            entries = {str(e["mutation"]): e for e in json.loads(path.read_text())["mutants"]}
        entries.update({str(r["mutation"]): {**r, **made_at} for r in results})
        kept = [entries[name] for name in MUTATIONS if name in entries]  # in the table's order
        report = {
            **made_at,
            "caught": sum(bool(e["caught"]) for e in kept),
            "total": len(kept),
            "mutants": kept,
        }
        path.write_text(json.dumps(report, indent=1) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=list(MUTATIONS))
    parser.add_argument("--report", type=Path, help="write or update this JSON report")
    parser.add_argument("--worktree", action="store_true", help="mutate the working tree's files")
    parser.add_argument("--locks", action="store_true", help="take the suites' locks per mutation")
    args = parser.parse_args()
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.strip()
    made_at = {"commit": head, "tree": "worktree" if args.worktree else "HEAD"}
    results = []
    for name in args.names:
        results.append(run(name, worktree=args.worktree, locks=args.locks))
        print(json.dumps(results[-1]), flush=True)
        if args.report:  # as it goes: a long run interrupted keeps what it learnt
            write_report(args.report, results, made_at)
    print(f"caught {sum(bool(r['caught']) for r in results)}/{len(results)}")
    sys.exit(0 if all(r["caught"] for r in results) else 1)


if __name__ == "__main__":
    main()
