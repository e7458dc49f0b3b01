"""What the two SSH transports (``rsync`` and ``sftp``) share: options and host-key pins.

Both read the same YAML keys and pin the NAS host key the same way: the host must
already be listed in ``known_hosts_file`` (OpenSSH format, plain or hashed, with
``[host]:port`` for a port other than 22). Nothing here needs paramiko or ssh.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.transport import answers

KEEPALIVE = 5  # seconds between SSH keepalives; 3 unanswered = the link is dead
CONNECT_TIMEOUT = 10  # seconds to connect and log in

SSH_OPTIONS: dict[str, Option] = {
    "host": Option(o.string, help="the NAS host name or address"),
    "port": Option(o.integer(1, 65535), 22),
    "user": Option(o.string, help="the node's account on the NAS"),
    "path": Option(o.string, ".", "target directory on the NAS"),
    "identity_file": Option(o.path, "~/.ssh/id_ed25519", "the node's private key"),
    "known_hosts_file": Option(o.path, "~/.ssh/known_hosts", "the pinned NAS host key"),
}


def host_pattern(host: str, port: int) -> str:
    """The name OpenSSH looks up in known_hosts: ``host`` or ``[host]:port``."""
    return host if port == 22 else f"[{host}]:{port}"


def _matches(field: str, name: str) -> bool:
    if field.startswith("|1|"):
        try:
            salt, digest = (base64.b64decode(p) for p in field[3:].split("|", 1))
        except ValueError:
            return False
        return hmac.compare_digest(hmac.new(salt, name.encode(), hashlib.sha1).digest(), digest)
    return name in field.split(",")


def known_host_listed(known_hosts: Path, host: str, port: int) -> bool:
    """True if ``known_hosts`` holds a key for ``host`` at ``port`` (no wildcards)."""
    name = host_pattern(host, port)
    for line in known_hosts.read_text(errors="replace").splitlines():
        fields = line.split()
        if len(fields) < 3 or fields[0].startswith("#"):
            continue
        if fields[0].startswith("@"):  # @cert-authority / @revoked markers
            continue
        if _matches(fields[0], name):
            return True
    return False


def check_ssh_options(opts: Mapping[str, Any], key: str) -> None:
    """Raise ConfigError unless the key files are readable (the private key by its
    owner only) and the host key is pinned."""
    o.secret_file(str(opts["identity_file"]), f"{key}.identity_file")
    o.readable_file(str(opts["known_hosts_file"]), f"{key}.known_hosts_file")
    if not opts["host"].strip():
        raise ConfigError(f"{key}.host: must not be empty")
    if not known_host_listed(opts["known_hosts_file"], opts["host"], opts["port"]):
        pattern = host_pattern(opts["host"], opts["port"])
        raise ConfigError(
            f"{key}.known_hosts_file: {opts['known_hosts_file']} has no key for {pattern}; "
            f"pin it first, e.g. ssh-keyscan -p {opts['port']} {opts['host']} >> FILE "
            "(then compare the fingerprint with the NAS console)"
        )


def ssh_answers(host: str, port: int, timeout: float) -> bool:
    """Whether an SSH server greets at ``host``:``port`` within ``timeout`` seconds.

    Reads the server's identification line (``SSH-...``, sent before anything
    else) and hangs up: no key exchange, no login (``livecam.transport.answers``)."""
    return answers(host, port, timeout, hello=b"", expect=b"SSH-")
