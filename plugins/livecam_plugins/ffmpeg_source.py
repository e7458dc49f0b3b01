"""What an ``ffmpeg`` camera reads: its ``input`` (a device, a stream, a file, a pipe)
or, only when the config asks for one by name, a ``pattern``: ffmpeg's test picture."""

from __future__ import annotations

import os
import shlex
import stat
from typing import Any

from livecam import options as o
from livecam.options import ConfigError

PATTERNS = ("testsrc2", "testsrc", "smptebars", "smptehdbars", "rgbtestsrc", "mandelbrot")


def input_args(value: Any, key: str) -> list[str]:
    """The ``input`` option: ffmpeg input arguments, as a string or a list."""
    if isinstance(value, list):
        return o.string_list(value, key)
    try:
        args = shlex.split(o.string(value, key))
    except ValueError as exc:
        raise ConfigError(f"{key}: cannot split into arguments: {exc}") from None
    if "-i" not in args:
        raise ConfigError(f"{key}: must contain '-i SOURCE', e.g. '-f v4l2 -i /dev/video0'")
    return args


def check(opts: Any, key: str) -> None:
    """A camera records what it is told to: its input, or a test pattern it names;
    never a test picture by default (one would pass for footage)."""
    if opts["input"] is None and opts["pattern"] is None:
        raise ConfigError(
            f"{key}.input: missing: give the camera's input, e.g. input: "
            "'-f v4l2 -i /dev/video0' (for a test picture instead: pattern: testsrc2)"
        )
    if opts["input"] is not None and opts["pattern"] is not None:
        raise ConfigError(
            f"{key}.pattern: a camera records its input or a test pattern, not both: "
            "remove pattern or input"
        )


def source_name(opts: Any) -> str:
    """The input's source (after ``-i``), or the pattern's name: for messages."""
    inp = opts["input"] or []
    return inp[inp.index("-i") + 1] if "-i" in inp[:-1] else opts["pattern"]


def is_live(argv: list[str]) -> bool:
    """Whether input arguments read a live source (a device, a stream, a pipe a feeder
    writes), which may come back when it ends, rather than a file read to its end."""
    source = argv[argv.index("-i") + 1] if "-i" in argv[:-1] else ""
    live_formats = {"v4l2", "video4linux2", "alsa", "pulse", "x11grab", "kmsgrab"}
    fmt = argv[argv.index("-f") + 1] if "-f" in argv[:-1] else ""
    if fmt in live_formats or "://" in source or source.startswith("/dev/"):
        return True
    try:  # a pipe or socket a feeder writes may get a new writer: not a file's end
        mode = os.stat(source).st_mode
    except OSError:
        return False
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)
