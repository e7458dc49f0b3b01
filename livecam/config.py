"""The YAML config: found, parsed and validated completely before anything starts.

``read(path)`` gives the YAML document, ``plugin_dirs`` where its site plugins
are, and ``parse(document, plugins)`` the validated ``Config``, or a
``ConfigError`` with one line that names the key and says what is right. It
loads nothing itself: ``livecam.build.load`` loads the plugins between the two.
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
from livecam.pluginhost.manager import Plugins
from livecam.storage.segment import CAMERA_NAME_RE, OLD_LOSSES

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
    "stop_deadline": Option(
        o.positive_duration, "20s", "a clean stop publishes RAM this long, then spills the rest"
    ),
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
    #: The test pattern it records instead of a camera (``CameraBackend.test_pattern``).
    test_pattern: str | None = None


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
    stop_deadline: float = 20.0  # seconds a clean stop may publish before it spills
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


def read(path: Path) -> Any:
    """The YAML document in ``path``; ConfigError (naming the file and line) when it
    is missing, unreadable or not YAML."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found (use -c FILE, $LIVECAM_CONFIG, or --demo)"
        ) from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML: {problem}") from None


def plugin_dirs(raw: Any) -> list[Path]:
    """The site plugin directories a document names (its top-level keys checked
    first, so a bad key is reported before any plugin is loaded)."""
    return [_absolute(Path(d)) for d in _top(raw)["plugin_dirs"]]


def _top(raw: Any) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise ConfigError("the config must be a YAML mapping of keys such as cameras, transport")
    return o.check_options("", raw, TOP)


def _absolute(path: Path) -> Path:
    """Relative paths resolve against the current directory (the demo relies on it);
    deployed configs use absolute paths."""
    return path if path.is_absolute() else Path.cwd() / path


def parse(raw: Any, plugins: Plugins, *, source: str = "<config>") -> Config:
    """Validate an already-parsed YAML document against the loaded ``plugins`` (which
    ``plugin_dirs`` said where to find). Loads nothing: a ConfigError names the key."""
    top = _top(raw)
    segment_seconds = top["segment_seconds"]
    buffer, spool = _tiers(raw, plugins)
    cameras = _cameras(raw, plugins)
    transport_plugin, transport_timeout, transport = _transport(raw, plugins)
    retry = o.check_options("retry", raw.get("retry"), RETRY)
    if retry["initial"] > retry["max"]:
        raise ConfigError("retry.initial: must not be longer than retry.max")
    spill_after = top["spill_after"]
    return Config(
        source=source,
        node=top["node"] or socket.gethostname().split(".")[0],
        site=top["site"],
        segment_seconds=segment_seconds,
        cameras=cameras,
        buffer=buffer,
        spool=spool,
        spill_after=segment_seconds if spill_after is None else spill_after,
        transport_plugin=transport_plugin,
        transport_timeout=transport_timeout,
        transport=transport,
        remote_path=top["remote_path"],
        retry_initial=retry["initial"],
        retry_max=retry["max"],
        retry_permanent=retry["permanent"] or retry["max"],
        plugin_dirs=[_absolute(Path(d)) for d in top["plugin_dirs"]],
        log_level=top["log_level"],
        stop_deadline=top["stop_deadline"],
        raw=raw,
    )


def _tiers(raw: dict[str, Any], plugins: Plugins) -> tuple[TierConfig, TierConfig]:
    buffer = o.check_options("buffer", raw.get("buffer"), BUFFER)
    spool = o.check_options("spool", raw.get("spool"), SPOOL)
    for key, tier in (("buffer", buffer), ("spool", spool)):
        plugins.tiers.get(tier["kind"], f"{key}.kind")
        tier["path"] = _absolute(tier["path"])
    if buffer["path"] == spool["path"]:
        raise ConfigError("spool.path: must differ from buffer.path (RAM and disk tiers)")
    return TierConfig(**buffer), TierConfig(**spool)


def _cameras(raw: dict[str, Any], plugins: Plugins) -> dict[str, CameraConfig]:
    cameras = raw.get("cameras")
    if not cameras or not isinstance(cameras, dict):
        raise ConfigError("cameras: at least one camera is required, e.g. cameras: {cam0: {}}")
    configs = {}
    for name, cam_raw in cameras.items():
        key = f"cameras.{name}"
        if not isinstance(name, str) or not CAMERA_NAME_RE.match(name):
            raise ConfigError(
                f"{key}: camera names must be 1-32 letters, digits, '_' or '-' "
                "(they become file and directory names)"
            )
        if name == OLD_LOSSES:
            raise ConfigError(
                f"{key}: the name {OLD_LOSSES} is reserved (older livecam versions "
                "published loss records under it); choose another"
            )
        cam_raw = dict(cam_raw or {})
        core = o.check_options(key, {"backend": cam_raw.pop("backend", None)}, CAMERA_CORE)
        cls = plugins.cameras.get(core["backend"], f"{key}.backend")
        opts = o.check_options(key, cam_raw, cls.options)
        cls.check(opts, key)
        configs[name] = CameraConfig(name, core["backend"], opts, cls.test_pattern(opts))
    return configs


def _transport(raw: dict[str, Any], plugins: Plugins) -> tuple[str, float, dict[str, Any]]:
    """(plugin, timeout, the plugin's own options) of ``transport:``."""
    transport_raw = raw.get("transport")
    if not isinstance(transport_raw, dict):
        raise ConfigError(
            "transport: required mapping, e.g. transport: {plugin: rsync, host: nas, path: /srv}"
        )
    transport_raw = dict(transport_raw)
    core = {
        "plugin": transport_raw.pop("plugin", None),
        "timeout": transport_raw.pop("timeout", None),
    }
    core = o.check_options("transport", core, TRANSPORT_CORE)
    cls = plugins.transports.get(core["plugin"], "transport.plugin")
    opts = o.check_options("transport", transport_raw, cls.options)
    cls.check(opts, "transport")
    return core["plugin"], core["timeout"], opts
