"""`livecam check-config` with the s3 transport: it reaches the store and says whether
conditional writes are honoured; a secret file readable by others is one line, exit 2."""

from __future__ import annotations

from pathlib import Path

from tests.s3.servers import NODE
from tests.transports.test_check_config import config


def test_check_config_probes_the_store(bucket, tmp_path, run_livecam):
    result = run_livecam("-c", config(tmp_path, bucket.options()), "check-config")
    assert result.returncode == 0, result.stderr
    assert ".livecam-probe" in bucket.objects()  # it really asked the server
    assert "conditional writes honoured" in result.stdout, result.stdout
    assert NODE[1] not in result.stdout + result.stderr


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
