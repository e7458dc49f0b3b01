"""What the two SSH transports (``rsync`` and ``sftp``) share: options and host-key pins.

Both read the same YAML keys and pin the NAS host key the same way: the host must
already be listed in ``known_hosts_file`` (OpenSSH format, plain or hashed, with
``[host]:port`` for a port other than 22). Nothing here needs paramiko or ssh.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from livecam import options as o
from livecam.options import ConfigError, Option

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


GREETS, BUSY, DOWN = "greets", "busy", "down"
# How far a fleet that finds its NAS back at once spreads its logins (each node a
# random 0..W s after its probe's answer). sshd at its defaults (MaxStartups
# 10:30:100) drops connections at random from the 10th still logging in. A login
# holds one of those for some LOGIN_GREETINGS times as long as sshd takes to greet
# (both grow with the NAS's load and with the round trip), so FLEET nodes spread
# over W seconds keep FLEET x LOGIN_GREETINGS x greeting / W of them in flight on
# average: IN_FLIGHT for W = SPREAD_PER_GREETING x the greeting, within
# SPREAD_MIN..SPREAD_MAX (docs/architecture.md, "A fleet's return spread over sshd's room").
FLEET, LOGIN_GREETINGS, IN_FLIGHT = 50, 15, 4
SPREAD_PER_GREETING = FLEET * LOGIN_GREETINGS / IN_FLIGHT  # 187.5
SPREAD_MIN, SPREAD_MAX = 3.0, 10.0
# (host, port) -> when sshd last greeted this process there, and how long it took.
_greeted: dict[tuple[str, int], tuple[float, float]] = {}


def ssh_greeting(host: str, port: int, timeout: float) -> str:
    """What the SSH server at ``host``:``port`` does within ``timeout`` seconds:
    ``GREETS`` (its identification line, ``SSH-...``, sent before anything else),
    ``BUSY`` (it accepted the connection, then closed or reset it before greeting:
    an sshd past its ``MaxStartups`` does that, and so does nothing else on the
    way to a NAS that is down), or ``DOWN`` (refused, unreachable, or no greeting
    in time: a proxy or firewall may accept connections for a host that is down).
    Hangs up then: no key exchange, no login."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except ConnectionResetError:  # accepted, and reset before connect() returned
        return BUSY
    except OSError:
        return DOWN
    seen = b""
    with sock:
        try:
            while b"SSH-" not in seen and len(seen) < 1024:
                sock.settimeout(max(0.05, deadline - time.monotonic()))
                chunk = sock.recv(256)
                if not chunk:
                    return DOWN if seen else BUSY
                seen += chunk
        except ConnectionResetError:
            return DOWN if seen else BUSY
        except OSError:
            return DOWN
    if b"SSH-" not in seen:
        return DOWN
    _greeted[(host, port)] = (time.monotonic(), time.monotonic() - t0)
    return GREETS


def greeted_within(host: str, port: int, seconds: float) -> float | None:
    """How long sshd at ``host``:``port`` took to greet, if it greeted this process
    (``ssh_greeting``: a probe, a check) within the last ``seconds``; else None."""
    when, took = _greeted.get((host, port), (float("-inf"), 0.0))
    return took if time.monotonic() - when <= seconds else None


def return_spread(host: str, port: int) -> float:
    """Seconds over which a fleet finding sshd at ``host``:``port`` back spreads
    its logins: SPREAD_PER_GREETING times the probe's greeting time just now."""
    greeting = greeted_within(host, port, SPREAD_MAX) or 0.0
    return min(SPREAD_MAX, max(SPREAD_MIN, SPREAD_PER_GREETING * greeting))


def ssh_answers(host: str, port: int, timeout: float) -> bool:
    """Whether an SSH server is there (``ssh_greeting``): it greets, or it is up and
    turned this connection away (``BUSY``: the attempt that follows learns that
    itself). The transports' reachability probe."""
    return ssh_greeting(host, port, timeout) != DOWN
