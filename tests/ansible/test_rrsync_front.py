"""livecam-rrsync, the NAS role's front for an rrsync without -no-overwrite (Debian 12).

Its rewriting of the rsync server command, word by word as rrsync reads it: the
commands livecam's own rsync transport sends pass with --ignore-existing added
after their options; anything that could replace, move or append to an existing
file, or make something other than a regular file or directory, is refused. The
real thing (Debian 12's rsync, sshd and rrsync in the debootstrap tree, a node's
key trying to tamper while livecam publishes) is in test_ansible_fleet_e2e.py.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys

import pytest

from tests.ansible import fleet

FRONT = fleet.REPO / "ansible/roles/livecam_nas/files/livecam-rrsync"


def load():
    loader = importlib.machinery.SourceFileLoader("livecam_rrsync", str(FRONT))
    spec = importlib.util.spec_from_loader("livecam_rrsync", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


front = load()

# What livecam's transport sends (plugins/livecam_plugins/rsync: the call, the
# checksum dry run, the dry run beside, a call with bwlimit and compression), as
# rsync 3.2.7 and 3.5 put it on the wire.
LIVECAM = [
    "rsync --server -re.iLsfxCIvu --log-format=%i --timeout=20 --ignore-existing --fsync "
    "--mkpath . path/",
    "rsync --server -nrce.iLsfxCIvu --log-format=%i%I --timeout=20 . path/",
    "rsync --server -nrce.iLsfxCIvu --log-format=%i%I --timeout=20 --compare-dest /path "
    ". path/.livecam-compare",
    "rsync --server -rze.iLsfxCIvu --log-format=%i --timeout=20 --bwlimit=100 "
    "--ignore-existing --fsync --mkpath . path/",
]


@pytest.mark.parametrize("command", LIVECAM)
def test_livecams_own_calls_pass_with_ignore_existing_forced(command):
    options, paths = command.split(" . ")
    assert front.rewrite(command) == f"{options} --ignore-existing . {paths}"


REFUSED = {
    "backup (renames the file it replaces)": "rsync --server -bre.iLsfxCIvu . x/",
    "archive mode (symlinks, devices)": "rsync --server -logDtpre.iLsfxCIvu . x/",
    "a symlink over a segment": "rsync --server -rle.iLsfxCIvu . x/",
    "hard links": "rsync --server -rHe.iLsfxCIvu . x/",
    "appending the log to a segment": "rsync --server -r --log-file=cam0/a.mp4 . x/",
    "log file as the next word": "rsync --server -r --log-file cam0/a.mp4 . x/",
    "partial dir": "rsync --server -r --partial-dir .p . x/",
    "delay updates": "rsync --server -r --delay-updates . x/",
    "backup dir": "rsync --server -rb --backup-dir=old . x/",
    "in place": "rsync --server -r --inplace . x/",
    "append": "rsync --server -r --append . x/",
    "link dest": "rsync --server -r --link-dest=/x . x/",
    "delete": "rsync --server -r --delete . x/",
    "remove source files": "rsync --server -r --remove-source-files . x/",
    "undo the forced option": "rsync --server -r --no-ignore-existing . x/",
    "escaped name": "rsync --server -r --log\\-file=a . x/",
    "the value swallowing the dot": "rsync --server -r --compare-dest . x/",
    "no dot at all": "rsync --server -r",
    "reading": "rsync --server --sender -r . x/",
}


@pytest.mark.parametrize("command", REFUSED.values(), ids=REFUSED.keys())
def test_what_could_replace_a_file_is_refused(command):
    with pytest.raises(front.Refused):
        front.rewrite(command)


def test_a_value_that_looks_like_an_option_does_not_hide_the_forced_one():
    """``--compare-dest`` takes the next word as its value, as rrsync reads it: the
    forced --ignore-existing still comes after every option."""
    command = "rsync --server -r --compare-dest --ignore-existing . x/"
    assert front.rewrite(command) == (
        "rsync --server -r --compare-dest --ignore-existing --ignore-existing . x/"
    )


def test_not_an_rsync_server_command_is_left_to_rrsync():
    assert front.rewrite("cat /etc/passwd") == "cat /etc/passwd"


def run_front(tmp_path, command: str) -> subprocess.CompletedProcess[str]:
    """The script's main() with a stand-in rrsync that prints what it was given."""
    fake = tmp_path / "rrsync"
    fake.write_text('#!/bin/sh\necho "$*"\necho "$SSH_ORIGINAL_COMMAND"\n')
    fake.chmod(0o755)
    code = (
        "import importlib.machinery as m, sys\n"
        f"f = m.SourceFileLoader('f', {str(FRONT)!r}).load_module()\n"
        f"f.RRSYNC = {str(fake)!r}\n"
        "sys.argv = ['/usr/local/libexec/livecam-rrsync', '-wo', '-no-del', '-no-lock',"
        " '-no-overwrite', '/srv/livecam/lab/node01']\n"
        "f.main()\n"
    )
    env = {**os.environ, "SSH_ORIGINAL_COMMAND": command}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=30)  # fmt: skip


def test_it_runs_rrsync_with_the_rewritten_command_and_without_no_overwrite(tmp_path):
    out = run_front(tmp_path, LIVECAM[1])
    assert out.returncode == 0, out.stderr
    argv, command = out.stdout.splitlines()
    assert argv == "-wo -no-del -no-lock /srv/livecam/lab/node01"
    assert command == front.rewrite(LIVECAM[1])


def test_a_refusal_is_one_line_the_transport_reads_as_refused(tmp_path):
    from livecam_plugins.rsync.errors import PERMANENT

    out = run_front(tmp_path, REFUSED["a symlink over a segment"])
    assert out.returncode == 1 and not out.stdout
    assert out.stderr.count("\n") == 1, out.stderr
    assert "livecam-rrsync error: option -rle.iLsfxCIvu is not allowed" in out.stderr
    why = [text for pattern, text in PERMANENT if pattern.search(out.stderr)]
    assert why == ["the NAS's rrsync refused the request"], why
