"""The YAML config: found, parsed and validated completely before anything starts.

``load(path)`` returns a ``Config`` and the loaded ``Plugins``, or raises
``ConfigError`` with one line that names the file and key and says what is right.
"""

from __future__ import annotations

import os
import socket
import string as _string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.plugins import Plugins
from livecam.segment import CAMERA_NAME_RE

DEFAULT_PATH = Path("/etc/livecam/livecam.yaml")
DEMO_PATH = Path(__file__).with_name("demo.yaml")
REMOTE_FIELDS = ("site", "node", "camera", "date", "hour", "time", "name", "seq")


def _remote_template(value: Any, key: str) -> str:
    text = o.string(value, key)
    try:
        fields = [f for _, f, _, _ in _string.Formatter().parse(text) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{key}: not a valid template ({exc}): {text!r}") from None
    for f in fields:
        if f not in REMOTE_FIELDS:
            raise ConfigError(
                f"{key}: unknown field {{{f}}} in {text!r} (known: "
                + ", ".join("{" + k + "}" for k in REMOTE_FIELDS)
                + ")"
            )
    if "name" not in fields:
        raise ConfigError(f"{key}: must contain {{name}} so segments never overwrite each other")
    if text.startswith("/") or ".." in text.split("/"):
        raise ConfigError(f"{key}: must be relative to transport.path, without '..': {text!r}")
    return text


def _fraction(value: Any, key: str) -> float:
    return float(o.number(0.05, 1.0)(value, key))


TOP = {
    "node": Option(o.string, None, "the node's name; default: hostname"),
    "site": Option(o.string, "default"),
    "segment_seconds": Option(o.positive_duration, 30),
    "cameras": Option(lambda v, k: v, None),  # checked below, per backend
    "buffer": Option(lambda v, k: v, None),
    "spool": Option(lambda v, k: v, None),
    "spill_after": Option(o.duration, None, "default: one segment length"),
    "transport": Option(lambda v, k: v, None),
    "remote_path": Option(_remote_template, "{site}/{node}/{camera}/{date}/{name}"),
    "retry": Option(lambda v, k: v, None),
    "plugin_dirs": Option(o.string_list, ["/etc/livecam/plugins"]),
    "log_level": Option(o.choice("debug", "info", "warning", "error"), "info"),
}
BUFFER = {
    "kind": Option(o.string, "buffer"),
    "path": Option(o.path, "/run/livecam/buffer"),
    "max_bytes": Option(o.size, "200M"),
    "min_free_bytes": Option(o.size, 0),
    "high_water": Option(_fraction, 0.75, "fraction of max_bytes where spilling starts"),
}
SPOOL = {
    "kind": Option(o.string, "spool"),
    "path": Option(o.path, "/var/lib/livecam/spool"),
    "max_bytes": Option(o.size, "10G"),
    "min_free_bytes": Option(o.size, "1G"),
    "high_water": Option(_fraction, 1.0),
}
RETRY = {
    "initial": Option(o.positive_duration, "1s"),
    "max": Option(o.positive_duration, "60s"),
    "permanent": Option(o.positive_duration, None, "wait after a permanent error; default: max"),
}
CAMERA_CORE = {"backend": Option(o.string, "ffmpeg")}
TRANSPORT_CORE = {
    "plugin": Option(o.string, help="e.g. rsync, nfs, smb, sftp"),
    "timeout": Option(o.positive_duration, "120s", "hard limit for one publish"),
}


@dataclass(frozen=True)
class CameraConfig:
    name: str
    backend: str
    options: dict[str, Any]


@dataclass(frozen=True)
class TierConfig:
    kind: str
    path: Path
    max_bytes: int
    min_free_bytes: int
    high_water: float


@dataclass(frozen=True)
class Config:
    """A validated config. Paths are absolute."""

    source: str
    node: str
    site: str
    segment_seconds: float
    cameras: dict[str, CameraConfig]
    buffer: TierConfig
    spool: TierConfig
    spill_after: float
    transport_plugin: str
    transport_timeout: float
    transport: dict[str, Any]
    remote_path: str
    retry_initial: float
    retry_max: float
    retry_permanent: float
    plugin_dirs: list[Path]
    log_level: str
    raw: dict[str, Any] = field(repr=False, default_factory=dict)


def default_plugin_dirs() -> list[Path]:
    """Where site plugins are looked for when the config does not say."""
    return [Path(d) for d in TOP["plugin_dirs"].default]


def find(explicit: str | None) -> Path:
    """The config path: ``-c``, else ``$LIVECAM_CONFIG``, else /etc/livecam/livecam.yaml."""
    if explicit:
        return Path(explicit)
    if os.environ.get("LIVECAM_CONFIG"):
        return Path(os.environ["LIVECAM_CONFIG"])
    return DEFAULT_PATH


def load(path: Path, *, plugins: Plugins | None = None) -> tuple[Config, Plugins]:
    """Read, validate and resolve ``path``; load plugins from entry points and plugin_dirs."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found (use -c FILE, $LIVECAM_CONFIG, or --demo)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None
    try:
        return parse(raw, source=str(path), plugins=plugins)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def parse(
    raw: Any, *, source: str = "<config>", plugins: Plugins | None = None
) -> tuple[Config, Plugins]:
    """Validate an already-parsed YAML document (see ``load``).

    Relative paths resolve against the current directory (the demo relies on it);
    deployed configs use absolute paths.
    """
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a YAML mapping of keys such as cameras, transport")
    top = o.check_options("", raw, TOP)
    base = Path.cwd()

    def absolute(p: Path) -> Path:
        return p if p.is_absolute() else (base / p)

    plugin_dirs = [absolute(Path(d)) for d in top["plugin_dirs"]]
    if plugins is None:
        plugins = Plugins(plugin_dirs)

    segment_seconds = top["segment_seconds"]
    buffer = o.check_options("buffer", raw.get("buffer"), BUFFER)
    spool = o.check_options("spool", raw.get("spool"), SPOOL)
    for key, tier in (("buffer", buffer), ("spool", spool)):
        plugins.tiers.get(tier["kind"], f"{key}.kind")
        tier["path"] = absolute(tier["path"])
    if buffer["path"] == spool["path"]:
        raise ConfigError("spool.path: must differ from buffer.path (RAM and disk tiers)")

    cameras = raw.get("cameras")
    if not cameras or not isinstance(cameras, dict):
        raise ConfigError("cameras: at least one camera is required, e.g. cameras: {cam0: {}}")
    camera_configs = {}
    for name, cam_raw in cameras.items():
        key = f"cameras.{name}"
        if not isinstance(name, str) or not CAMERA_NAME_RE.match(name):
            raise ConfigError(
                f"{key}: camera names must be 1-32 letters, digits, '_' or '-' "
                "(they become file and directory names)"
            )
        cam_raw = dict(cam_raw or {})
        core = o.check_options(key, {"backend": cam_raw.pop("backend", None)}, CAMERA_CORE)
        cls = plugins.cameras.get(core["backend"], f"{key}.backend")
        opts = o.check_options(key, cam_raw, cls.options)
        cls.check(opts, key)
        camera_configs[name] = CameraConfig(name, core["backend"], opts)

    transport_raw = raw.get("transport")
    if not isinstance(transport_raw, dict):
        raise ConfigError(
            "transport: required mapping, e.g. transport: {plugin: rsync, host: nas, path: /srv}"
        )
    transport_raw = dict(transport_raw)
    core_t = o.check_options(
        "transport",
        {
            "plugin": transport_raw.pop("plugin", None),
            "timeout": transport_raw.pop("timeout", None),
        },
        TRANSPORT_CORE,
    )
    tcls = plugins.transports.get(core_t["plugin"], "transport.plugin")
    topts = o.check_options("transport", transport_raw, tcls.options)
    tcls.check(topts, "transport")

    retry = o.check_options("retry", raw.get("retry"), RETRY)
    if retry["initial"] > retry["max"]:
        raise ConfigError("retry.initial: must not be longer than retry.max")

    spill_after = top["spill_after"]
    config = Config(
        source=source,
        node=top["node"] or socket.gethostname().split(".")[0],
        site=top["site"],
        segment_seconds=segment_seconds,
        cameras=camera_configs,
        buffer=TierConfig(**buffer),
        spool=TierConfig(**spool),
        spill_after=segment_seconds if spill_after is None else spill_after,
        transport_plugin=core_t["plugin"],
        transport_timeout=core_t["timeout"],
        transport=topts,
        remote_path=top["remote_path"],
        retry_initial=retry["initial"],
        retry_max=retry["max"],
        retry_permanent=retry["permanent"] or retry["max"],
        plugin_dirs=plugin_dirs,
        log_level=top["log_level"],
        raw=raw,
    )
    return config, plugins
