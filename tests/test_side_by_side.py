"""The suites run side by side only if each stays on one worker: check that it does.

pytest-xdist's ``--dist loadgroup`` sends every test of one ``xdist_group`` to one
worker by renaming it ``<id>@<group>``. With pytest 9 that rename does nothing, and each
suite's tests then spread over every worker, each starting its own servers and trees
at once (found so: every worker booted the Ansible fleet). This runs two small
suites the way the whole run does and reads where each test ran.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections import defaultdict

from tests.conftest import REPO

LINE = re.compile(r"^\[(gw\d+)\] .*(PASSED|FAILED) (tests/\S+?)@(\w+)\s*$", re.M)


def test_each_suite_runs_on_one_worker_under_its_own_group():
    files = ["tests/core/test_import_graph.py", "tests/test_docs.py"]
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-v", "-n", "2", *files],
        cwd=REPO,
        # Not under the suites' locks: this run's own core worker holds core's.
        env={k: v for k, v in os.environ.items() if k != "LIVECAM_TEST_LOCKS"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-2000:]
    ran = LINE.findall(run.stdout)
    assert len(ran) == len(re.findall(r"^\[gw\d+\] ", run.stdout, re.M)) >= 8, run.stdout
    workers = defaultdict(set)
    for worker, _, nodeid, group in ran:
        expected = "core" if nodeid.startswith("tests/core/") else "docs"
        assert group == expected, f"{nodeid} ran in group {group}"
        workers[group].add(worker)
    assert {g: len(w) for g, w in workers.items()} == {"core": 1, "docs": 1}, workers
