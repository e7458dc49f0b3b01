"""`livecam check-config` with the s3 transport: with ``--online`` it reaches the store
and says whether conditional writes are honoured (a store not there: one line, exit
1); a secret file readable by others is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

from tests.s3.servers import NODE, free_ports
from tests.transports.test_check_config import config


def test_check_config_probes_the_store(bucket, tmp_path, run_livecam):
    path = config(tmp_path, bucket.options())
    result = run_livecam("-c", path, "check-config")
    assert result.returncode == 0, result.stderr
    assert not bucket.objects(), "without --online check-config asks the server nothing"
    result = run_livecam("-c", path, "check-config", "--online")
    assert result.returncode == 0, result.stderr
    assert ".livecam-probe" in bucket.objects()  # it really asked the server
    assert "  online: " in result.stdout and "conditional writes honoured" in result.stdout
    assert NODE[1] not in result.stdout + result.stderr


def test_check_config_online_with_the_store_down_is_one_line_exit_1(bucket, tmp_path, run_livecam):
    (port,) = free_ports(1)
    path = config(tmp_path, bucket.options(endpoint=f"http://127.0.0.1:{port}"))
    assert run_livecam("-c", path, "check-config").returncode == 0  # the config is fine
    result = run_livecam("-c", path, "check-config", "--online")
    assert result.returncode == 1, result.stdout + result.stderr
    assert result.stderr.startswith("livecam: error: s3 "), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert NODE[1] not in result.stderr


def test_secret_readable_by_others_is_one_line(bucket, tmp_path, run_livecam):
    opts = bucket.options()
    Path(opts["secret_access_key_file"]).chmod(0o644)
    result = run_livecam("-c", config(tmp_path, opts), "check-config")
    assert result.returncode == 2
    assert "transport.secret_access_key_file:" in result.stderr
    assert "chmod 600" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert NODE[1] not in result.stderr


def test_an_id_without_a_secret_file_is_one_line(bucket, tmp_path, run_livecam):
    opts = bucket.options()
    del opts["secret_access_key_file"]
    result = run_livecam("-c", config(tmp_path, opts), "check-config")
    assert result.returncode == 2
    assert "transport.secret_access_key_file: give it with access_key_id" in result.stderr
