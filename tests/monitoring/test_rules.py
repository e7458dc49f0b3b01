"""The alert rules: valid, unit-tested with promtool for each alert, and documented."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "monitoring" / "livecam.rules.yml"
RULE_TESTS = REPO / "monitoring" / "livecam.rules.test.yml"

pytestmark = pytest.mark.skipif(
    not shutil.which("promtool"), reason="needs promtool (Debian package prometheus)"
)


def promtool(*args: str, cwd: Path = REPO / "monitoring") -> subprocess.CompletedProcess[str]:
    return subprocess.run(["promtool", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def alerts() -> list[dict]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rules_file_is_valid():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in result.stdout


def test_every_alert_says_what_to_look_at_and_which_command_shows_it():
    names = [a["alert"] for a in alerts()]
    for wanted in ("LivecamCameraDown", "LivecamCameraRestarting", "LivecamDroppedFrames",
                   "LivecamShipperLagging", "LivecamSpoolFilling", "LivecamEvicting",
                   "LivecamShipperAlarm", "LivecamNodeNotReporting", "LivecamNasUnexplainedGaps",
                   "LivecamNasAuditStale", "LivecamNasVolumeFilling",
                   "LivecamNasNotReporting"):  # fmt: skip
        assert wanted in names
    for alert in alerts():
        notes = alert["annotations"]
        assert notes["summary"] and notes["description"], alert["alert"]
        assert "`" in notes["description"], f"{alert['alert']}: no command to run"
        assert alert["labels"]["severity"] in ("warning", "critical")


def test_every_alert_has_a_firing_and_a_quiet_unit_test():
    cases = [
        case
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test.get("alert_rule_test", [])
    ]
    for alert in alerts():
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{alert['alert']}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert['alert']}: no quiet case"


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_unit_tests_catch_a_broken_rule(tmp_path):
    """A wrong threshold in the rules fails the promtool tests: they can fail."""
    broken = RULES.read_text().replace(
        "(3 * livecam_segment_seconds)", "(5 * livecam_segment_seconds)"
    )
    assert broken != RULES.read_text()
    (tmp_path / RULES.name).write_text(broken)
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    result = promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0
    assert "LivecamCameraDown" in result.stdout + result.stderr
