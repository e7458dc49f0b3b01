"""The node's commands: record cameras, ship their segments, show status.

    livecam [-c FILE | --demo] run | record CAMERA | ship | status [--json|--prometheus]
                               | metrics --textfile FILE | check-config [--online]
                               | plugins

(``livecam.main`` sends ``nas``, ``export`` and ``web`` to their own modules.)

A bad config, a broken plugin or a bad argument gives one clear line on stderr
and exit code 2; nothing starts. ``plugins`` also works without a config file:
it then lists what is installed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import yaml

from livecam import __version__, build
from livecam import config as configmod
from livecam.config import Config
from livecam.ops import logs
from livecam.ops import metrics as metricsmod
from livecam.ops import status as statusmod
from livecam.ops.supervisor import Supervisor, role_argv
from livecam.options import ConfigError
from livecam.pluginhost.manager import Plugins
from livecam.recorder.process import Recorder
from livecam.shipper.process import Shipper
from livecam.shipper.stop import SPILL_MARGIN
from livecam.transport import PublishError

log = logging.getLogger("livecam")

DESCRIPTION = "livecam: record cameras, ship their segments, show status."
UNHEALTHY = 1  # `livecam status`: a camera, the shipper or the spool is down, failed or alarmed


def _common() -> argparse.ArgumentParser:
    # Accepted before or after the subcommand: `livecam -c F ship` == `livecam ship -c F`.
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument(
        "-c",
        "--config",
        default=argparse.SUPPRESS,
        help="config file (default: $LIVECAM_CONFIG, else /etc/livecam/livecam.yaml)",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        default=argparse.SUPPRESS,
        help="use the built-in demo config: two test-pattern cameras, a local target",
    )
    p.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )
    return p


def parser() -> argparse.ArgumentParser:
    common = _common()
    p = argparse.ArgumentParser(prog="livecam", parents=[common], description=DESCRIPTION)
    p.add_argument("--version", action="version", version=f"livecam {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("run", parents=[common], help="record every camera and ship, supervised")
    rec = sub.add_parser("record", parents=[common], help="record one camera (one process)")
    rec.add_argument("camera")
    sub.add_parser("ship", parents=[common], help="ship segments to the NAS (one per node)")
    st = sub.add_parser("status", parents=[common], help="cameras, tiers and shipper at a glance")
    st.add_argument("--json", action="store_true", help="machine-readable")
    st.add_argument("--prometheus", action="store_true", help="as Prometheus metrics")
    me = sub.add_parser("metrics", parents=[common], help="keep a node_exporter textfile fresh")
    me.add_argument("--textfile", required=True, type=Path, help="a *.prom file on a tmpfs")
    me.add_argument("--interval", type=float, default=15.0, help="seconds (default 15)")
    cc = sub.add_parser("check-config", parents=[common], help="validate the config and exit")
    cc.add_argument("--online", action="store_true", help="also reach the NAS: what answers")
    sub.add_parser("plugins", parents=[common], help="list loaded plugins and what they register")
    return p


# Libraries that log protocol exchanges at debug or info: smbprotocol and spnego
# log every SMB packet, the NTLM CHALLENGE and AUTHENTICATE messages among them
# (crackable offline), paramiko the SSH authentication. No log level of livecam's
# lets them below WARNING.
QUIET_LOGGERS = ("smbprotocol", "smbclient", "spnego", "paramiko")


def main(argv: list[str] | None = None) -> int:
    """Run one node command; returns the process exit code (``livecam.main`` calls it)."""
    # A stop that comes while we are still starting is a clean stop: nothing runs yet.
    # Each role installs its own handler once it has something to finish.
    signal.signal(signal.SIGTERM, _stop_before_start)
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    config_file = getattr(args, "config", None)
    demo = getattr(args, "demo", False)
    logs.setup(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        if demo and config_file:
            raise ConfigError("--demo and -c/--config exclude each other")
        path = configmod.find(config_file)
        if args.command == "plugins" and not demo and not _named(config_file, path):
            # No config anywhere: list what is installed (and in the default plugin dir).
            return cmd_plugins(Plugins(configmod.default_plugin_dirs()))
        if demo:
            raw = yaml.safe_load(configmod.DEMO_PATH.read_text())
            cfg, plugins = build.from_document(raw, source="built-in demo")
            # The demo makes its own directories; a deployed spool is never made with
            # its parents (a vanished mount must not reappear on the root disk).
            if args.command == "run":
                cfg.spool.path.mkdir(parents=True, exist_ok=True)
        else:
            cfg, plugins = build.load(path)
    except ConfigError as exc:
        print(f"livecam: error: {exc}", file=sys.stderr)
        return 2
    if not getattr(args, "verbose", False):
        logging.getLogger().setLevel(cfg.log_level.upper())
    config_args = ["--demo"] if demo else ["-c", str(Path(cfg.source).resolve())]
    if getattr(args, "verbose", False):
        config_args.append("-v")
    return COMMANDS[args.command](args, cfg, plugins, config_args)


def _named(explicit: str | None, path: Path) -> bool:
    """True if the user named a config file (``-c``, ``$LIVECAM_CONFIG``) or one exists."""
    return bool(explicit) or bool(os.environ.get("LIVECAM_CONFIG")) or path.exists()


def _stop_before_start(signum: int, frame: object) -> None:
    raise SystemExit(0)


Command = Callable[[argparse.Namespace, Config, Plugins, list[str]], int]


def cmd_check_config(
    args: argparse.Namespace, cfg: Config, plugins: Plugins, config_args: list[str]
) -> int:
    transport = build.transport(cfg, plugins)
    try:
        where = transport.describe()
        answer = transport.online() if args.online else None
    except PublishError as exc:  # only online() reaches the NAS
        print(f"livecam: error: {exc}", file=sys.stderr)
        return 1
    finally:
        transport.close()
    cams = ", ".join(
        f"{n} ({c.backend}" + (f", TEST PATTERN {c.test_pattern})" if c.test_pattern else ")")
        for n, c in cfg.cameras.items()
    )
    print(f"{cfg.source}: OK")
    print(f"  node {cfg.node}, site {cfg.site}, {cfg.segment_seconds:g}s segments")
    print(f"  cameras: {cams}")
    print(f"  buffer {cfg.buffer.path}, spool {cfg.spool.path}, spill after {cfg.spill_after:g}s")
    print(f"  transport: {where}")
    if answer is not None:
        print(f"  online: {answer}")
    return 0


def cmd_plugins(plugins: Plugins) -> int:
    for info in plugins.info.values():
        print(f"{info.name}  ({info.source})")
        for item in info.registers:
            print(f"    registers {item}")
        events = [h for h in info.hooks if not h.startswith("livecam_register_")]
        if events:
            print(f"    implements {', '.join(events)}")
    return 0


def cmd_status(
    args: argparse.Namespace, cfg: Config, plugins: Plugins, config_args: list[str]
) -> int:
    if args.prometheus:
        print(metricsmod.node_metrics(cfg, build.disk(cfg, plugins)), end="")
        return 0
    data = statusmod.gather(cfg, build.disk(cfg, plugins))
    if args.json:  # for programs: they read the health from the data
        print(json.dumps(data, indent=2, default=str))
        return 0
    print(statusmod.render(data))
    # Health in the exit code, as `systemctl is-active` and `borgmatic check` give it.
    return UNHEALTHY if statusmod.problems(data) else 0


def cmd_metrics(
    args: argparse.Namespace, cfg: Config, plugins: Plugins, config_args: list[str]
) -> int:
    try:
        metricsmod.check_textfile(args.textfile)
    except ConfigError as exc:
        print(f"livecam: error: {exc}", file=sys.stderr)
        return 2
    return metricsmod.run(cfg, build.disk(cfg, plugins), args.textfile, max(1.0, args.interval))


def cmd_record(
    args: argparse.Namespace, cfg: Config, plugins: Plugins, config_args: list[str]
) -> int:
    if args.camera not in cfg.cameras:
        known = ", ".join(cfg.cameras)
        print(
            f"livecam: error: no camera {args.camera!r} in {cfg.source} (cameras: {known})",
            file=sys.stderr,
        )
        return 2
    return Recorder(cfg, plugins, args.camera).run()


def cmd_ship(
    args: argparse.Namespace, cfg: Config, plugins: Plugins, config_args: list[str]
) -> int:
    return Shipper(cfg, plugins).run()


def cmd_run(args: argparse.Namespace, cfg: Config, plugins: Plugins, config_args: list[str]) -> int:
    roles = {f"recorder {cam}": ["record", cam] for cam in cfg.cameras}
    roles["shipper"] = ["ship"]
    children = {name: role_argv(role, config_args) for name, role in roles.items()}
    log.info("running %d cameras and the shipper from %s", len(cfg.cameras), cfg.source)
    # The shipper's stop: its deadline, then the spill of what RAM still holds.
    grace = cfg.stop_deadline + SPILL_MARGIN
    return Supervisor(children, stop_last=("shipper",), last_grace=grace).run()


COMMANDS: dict[str, Command] = {
    "run": cmd_run,
    "record": cmd_record,
    "ship": cmd_ship,
    "status": cmd_status,
    "metrics": cmd_metrics,
    "check-config": cmd_check_config,
    "plugins": lambda args, cfg, plugins, config_args: cmd_plugins(plugins),
}
