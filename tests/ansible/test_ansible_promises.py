"""What README.md's "Deploy a fleet" promises of site.yml, on the provisioned trees.

- a bad rendered config is refused by `livecam check-config` before it replaces
  the node's file, and nothing is restarted (R19);
- a kept wheel deploys with `-e livecam_wheel=...` (a rollback), and the next
  run without it brings the checkout's build back (R23);
- `--check --diff` shows a change it would make, and makes none (R21).

These run after the converge tests (file order) and leave the trees as they found them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.ansible import fleet

pytestmark = pytest.mark.slow

NODE = "node2"
CONFIG = "etc/livecam/livecam.yaml"


def chroot(tree, *argv, **kw):
    return fleet.sh("chroot", str(tree), *argv, **kw)


def version(tree) -> str:
    return chroot(tree, "/opt/livecam/venv/bin/livecam", "--version").stdout.strip()


def test_a_bad_config_is_refused_by_check_config_before_any_restart(provisioned):
    tree = provisioned.trees[NODE]
    before = (tree / CONFIG).read_bytes()
    bad = {"livecam_node_config_extra": {"retry": {"initial": "soon"}}}
    with pytest.raises(AssertionError) as err:
        fleet.ansible_playbook(
            provisioned.inventory, "--limit", f"localhost,{NODE}", "-e", json.dumps(bad)
        )
    out = str(err.value)
    # The run failed at the rendering, with check-config's own line naming the key.
    fatal = out.find(f"fatal: [{NODE}]")
    assert fatal > 0, out[-4000:]
    tasks = re.findall(r"TASK \[([^\]]+)\]", out[:fatal])
    assert tasks and tasks[-1] == "livecam_node : Render livecam.yaml", out[-4000:]
    assert "check-config" in out and "retry.initial" in out, out[-4000:]
    assert "RUNNING HANDLER" not in out, out[-4000:]  # nothing restarted
    assert (tree / CONFIG).read_bytes() == before  # the node keeps its good file
    check = chroot(tree, "/opt/livecam/venv/bin/livecam", "-c", f"/{CONFIG}", "check-config",
                   check=False)  # fmt: skip
    assert check.returncode == 0, check.stderr


def test_a_kept_wheel_rolls_the_node_back_and_the_next_run_returns(provisioned, tmp_path):
    tree = provisioned.trees[NODE]
    assert version(tree) == "livecam 0.1.0"
    # The "kept wheel": the same source released as 0.0.9.
    source = tmp_path / "old"
    shutil.copytree(provisioned.work / "src", source)
    for name in ("pyproject.toml", "livecam/__init__.py"):
        path = source / name
        path.write_text(path.read_text().replace('"0.1.0"', '"0.0.9"', 1))
    subprocess.run(
        [str(fleet.VENV_BIN / "python"), "-m", "pip", "wheel", "--quiet", "--no-deps",
         f"--wheel-dir={tmp_path / 'kept'}", str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = (tmp_path / "kept").glob("livecam-0.0.9-*.whl")
    limit = ("--limit", f"localhost,{NODE}")
    fleet.ansible_playbook(provisioned.inventory, *limit, "-e", f"livecam_wheel={wheel}")
    assert version(tree) == "livecam 0.0.9"
    check = chroot(tree, "/opt/livecam/venv/bin/livecam", "-c", f"/{CONFIG}", "check-config",
                   check=False)  # fmt: skip
    assert check.returncode == 0, check.stderr
    # Back to the checkout's build: the node installs it again.
    out, recap = fleet.ansible_playbook(provisioned.inventory, *limit)
    assert recap[NODE][1] > 0, out[-4000:]
    assert version(tree) == "livecam 0.1.0"


def test_check_diff_shows_a_change_and_makes_none(provisioned):
    tree = provisioned.trees[NODE]
    before = (tree / CONFIG).read_bytes()
    assert b"segment_seconds: 2\n" in before
    out, recap = fleet.ansible_playbook(
        provisioned.inventory, "--limit", f"localhost,{NODE}", "--check", "--diff",
        "-e", json.dumps({"livecam_node_segment_seconds": 3}),
    )  # fmt: skip
    assert recap[NODE][1] > 0, out[-4000:]  # it reports the change ...
    assert re.search(r"^-segment_seconds: 2$", out, re.M), out[-4000:]
    assert re.search(r"^\+segment_seconds: 3$", out, re.M), out[-4000:]
    assert (tree / CONFIG).read_bytes() == before  # ... and makes none


@pytest.mark.parametrize(
    ("unit", "stated"), [("livecam-record@cam0.service", 0.4), ("livecam-ship.service", 1.1)]
)
def test_units_are_as_hardened_as_the_readme_says(provisioned, unit, stated):
    """README.md: `systemd-analyze security`: recorder 0.4, shipper 1.1 (the tree's
    own systemd-analyze, offline, on the provisioned units)."""
    out = chroot(provisioned.trees[NODE], "systemd-analyze", "security", "--offline=true",
                 "--no-pager", unit, check=False)  # fmt: skip
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", out.stdout)
    assert m, out.stdout + out.stderr
    assert float(m[1]) <= stated, m[0]
