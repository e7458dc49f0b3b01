"""The roles and playbook pass ansible-lint's production profile and a syntax check."""

from __future__ import annotations

import os
import subprocess

from tests.ansible.fleet import REPO, VENV_BIN


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", NO_COLOR="1",
               PATH=f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}")  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


def test_ansible_lint_production_profile():
    out = _run(str(VENV_BIN / "ansible-lint"), "--offline", "--profile", "production",
               "ansible/", "inventory.example/")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_site_yml_syntax_check():
    out = _run(str(VENV_BIN / "ansible-playbook"), "--syntax-check", "-i", "inventory.example",
               "ansible/site.yml")  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
