"""Option schemas: how the core and every plugin declare and validate their YAML keys.

A schema is a dict ``{key: Option(convert, default)}``. ``check_options`` turns a
raw mapping from YAML into a dict of converted values, or raises ``ConfigError``
naming the full key (``cameras.cam0.bitrate``) and what would be right. Converters
take ``(value, key)`` and return the converted value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem the user can fix. ``str()`` is one line naming the key."""


_REQUIRED = object()

Convert = Callable[[Any, str], Any]


@dataclass(frozen=True)
class Option:
    """One key of a schema: a converter, a default (omit it for a required key), help."""

    convert: Convert
    default: Any = _REQUIRED
    help: str = ""

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def check_options(prefix: str, raw: Any, schema: Mapping[str, Option]) -> dict[str, Any]:
    """Validate ``raw`` against ``schema``; return converted values with defaults filled.

    Raises ConfigError for a non-mapping, an unknown key (listing the known ones),
    a missing required key, or a value its converter refuses.
    """
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{prefix}: expected a mapping of options, got {_kind(raw)}")
    unknown = sorted(str(k) for k in raw if k not in schema)
    if unknown:
        known = ", ".join(sorted(schema)) or "none"
        raise ConfigError(f"{_join(prefix, unknown[0])}: unknown key (known keys: {known})")
    out: dict[str, Any] = {}
    for key, option in schema.items():
        full = _join(prefix, key)
        if key in raw and raw[key] is not None:
            out[key] = option.convert(raw[key], full)
        elif option.required:
            hint = f" ({option.help})" if option.help else ""
            raise ConfigError(f"{full}: required key is missing{hint}")
        else:
            default = option.default
            out[key] = option.convert(default, full) if default is not None else None
    return out


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"


# --- sizes and durations ----------------------------------------------------------

_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_RATE_UNITS = {"": 1, "K": 1000, "M": 1000**2, "G": 1000**3}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


def parse_size(value: Any, key: str = "size") -> int:
    """'200M', '10G', '512K', 1048576 -> bytes (binary units)."""
    return _parse_scaled(value, key, _SIZE_UNITS, "a size such as 200M, 10G or 1048576")


def parse_bitrate(value: Any, key: str = "bitrate") -> int:
    """'5M', '800k', 5000000 -> bits per second (decimal units, as encoders use)."""
    return _parse_scaled(value, key, _RATE_UNITS, "a bit rate such as 5M or 800K")


def _parse_scaled(value: Any, key: str, units: dict[str, int], what: str) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected {what}, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{key}: must not be negative, got {value!r}")
        return int(value)
    match = _SIZE_RE.match(str(value))
    if not match or match.group(2).upper() not in units:
        raise ConfigError(f"{key}: expected {what}, got {value!r}")
    return int(float(match.group(1)) * units[match.group(2).upper()])


def parse_duration(value: Any, key: str = "duration") -> float:
    """'30s', '5m', '1h', '500ms', 30 -> seconds."""
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a duration such as 30s, 5m or 1h, got {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ConfigError(f"{key}: must not be negative, got {value!r}")
        return float(value)
    match = _DURATION_RE.match(str(value))
    if not match:
        raise ConfigError(f"{key}: expected a duration such as 30s, 5m or 1h, got {value!r}")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2) or "s"]


# --- converters ---------------------------------------------------------------------


def string(value: Any, key: str) -> str:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        raise ConfigError(f"{key}: expected a string, got {_kind(value)}")
    return str(value)


def boolean(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    return value


def integer(low: int | None = None, high: int | None = None) -> Convert:
    def convert(value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected a whole number, got {_kind(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"{key}: must be between {low} and {high}, got {value}")
        return value

    return convert


def number(low: float | None = None, high: float | None = None) -> Convert:
    def convert(value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {_kind(value)}")
        if (low is not None and value < low) or (high is not None and value > high):
            raise ConfigError(f"{key}: must be between {low} and {high}, got {value}")
        return float(value)

    return convert


def choice(*choices: str) -> Convert:
    def convert(value: Any, key: str) -> str:
        if value not in choices:
            raise ConfigError(f"{key}: must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return convert


def string_list(value: Any, key: str) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ConfigError(f"{key}: expected a list of strings, got {_kind(value)}")
    return [string(v, f"{key}[{i}]") for i, v in enumerate(value)]


def size(value: Any, key: str) -> int:
    return parse_size(value, key)


def bitrate(value: Any, key: str) -> int:
    return parse_bitrate(value, key)


def duration(value: Any, key: str) -> float:
    return parse_duration(value, key)


def positive_duration(value: Any, key: str) -> float:
    seconds = parse_duration(value, key)
    if seconds <= 0:
        raise ConfigError(f"{key}: must be longer than zero, got {value!r}")
    return seconds


def path(value: Any, key: str) -> Path:
    return Path(os.path.expanduser(string(value, key)))


def readable_file(value: Any, key: str) -> Path:
    """A path that must name a readable regular file now (keys, password files)."""
    p = path(value, key)
    if not p.is_file():
        raise ConfigError(f"{key}: {p} does not exist or is not a file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{key}: {p} is not readable by this user")
    return p


def secret_file(value: Any, key: str) -> Path:
    """A readable regular file that only its owner may access (a key, a password),
    refused as ssh refuses a private key that group or others can read or write."""
    p = readable_file(value, key)
    mode = p.stat().st_mode & 0o777
    if mode & 0o077:
        raise ConfigError(
            f"{key}: permissions {mode:04o} for {p} are too open "
            f"(group or others can access it); run chmod 600 {p}"
        )
    return p


def frame_size(value: Any, key: str) -> tuple[int, int]:
    """[1280, 720] or '1280x720' -> (1280, 720)."""
    if isinstance(value, str) and re.fullmatch(r"\d+x\d+", value):
        value = [int(v) for v in value.split("x")]
    if (
        not isinstance(value, list | tuple)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise ConfigError(f"{key}: expected [width, height] such as [1280, 720], got {value!r}")
    if value[0] % 2 or value[1] % 2:
        raise ConfigError(f"{key}: width and height must be even for H.264, got {value!r}")
    return (value[0], value[1])
