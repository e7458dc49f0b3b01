"""Which group each test runs in, side by side with the others (no pytest import:
scripts/mutants.py takes the same groups' locks).

The suites run side by side (pytest-xdist, ``--dist loadgroup`` in pyproject.toml):
every test of one group runs on one worker, in order, so its session fixtures
(servers, debootstrap trees, accounts) start once, and each group keeps its own
ports, namespaces, accounts and lock (``/tmp/lc-lock-<group>``). A group is a suite
folder, except for the files below. The groups are handed out longest first
(measured), so the workers finish about together.
"""

from __future__ import annotations

GROUP_OF_FILE = {
    # Each of these converges its own fleet of Debian trees (tests/ansible/conftest.py),
    # so the three run side by side; each builds in its own work dir and wheelhouse.
    "tests/ansible/test_ansible_fleet_e2e.py": "ansible-fleet",
    "tests/monitoring/test_units_systemd.py": "systemd",
    "tests/monitoring/test_monitor_role.py": "ansible",
}
# ansible-fleet and systemd start after ansible's first converge has been published
# (tests/ansible/fleet.py, Converged), so they mount it instead of converging.
LONGEST_FIRST = [
    "core", "ansible", "s3", "ansible-fleet", "systemd", "monitoring", "nas", "transports",
    "fleet", "web", "cameras", "powercut", "docs",
]  # fmt: skip


def group_of(nodeid: str) -> str:
    """The group of a test (or test file): its suite folder, ``docs`` for
    tests/test_*.py, or what ``GROUP_OF_FILE`` says."""
    path = nodeid.split("::", 1)[0]
    if path in GROUP_OF_FILE:
        return GROUP_OF_FILE[path]
    parts = path.split("/")
    return parts[1] if len(parts) > 2 else "docs"
