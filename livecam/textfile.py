"""``livecam metrics --textfile FILE``: keep node_exporter's textfile collector fed.

A small process of its own (``livecam-metrics.service``) that gathers
``livecam status`` every ``interval`` seconds and replaces FILE atomically
(temp name in the same directory, then rename), so node_exporter never reads
half a file. Being separate from the recorders and the shipper, it keeps
reporting them as down when they die (``livecam_camera_up 0``); if it dies
itself, the file's timestamps stop moving and the staleness alert fires.

FILE must be on a RAM filesystem: it is rewritten a few times a minute and
would otherwise wear the SD card, which a healthy node never writes to.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from pathlib import Path

from livecam import __version__, sdnotify
from livecam import metrics as metricsmod
from livecam import status as statusmod
from livecam.config import Config
from livecam.options import ConfigError
from livecam.plugins import Plugins

log = logging.getLogger("livecam.metrics")

RAM_FILESYSTEMS = ("tmpfs", "ramfs")


def prometheus(config: Config, plugins: Plugins, *, interval: float | None = None) -> str:
    """The node's metrics now, in the text exposition format.

    With ``interval`` (the writer's refresh period) it adds
    ``livecam_metrics_interval_seconds``, which the staleness alert scales with."""
    fams = metricsmod.families(
        statusmod.gather(config, plugins),
        segment_seconds=config.segment_seconds,
        version=__version__,
    )
    if interval is not None:
        period = metricsmod.Family(
            "livecam_metrics_interval_seconds", "gauge", "How often livecam-metrics rewrites this"
        )
        period.add(interval)
        fams.append(period)
    return metricsmod.exposition(fams)


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``; a reader sees the old file or the new, whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.chmod(tmp, 0o644)  # node_exporter runs as another user
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def filesystem_type(path: Path) -> str:
    """The type of the filesystem ``path`` lives on, from /proc/self/mountinfo."""
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return kind
    for line in lines:
        left, _, right = line.partition(" - ")
        mount = left.split()[4].replace("\\040", " ")
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, kind = mount, right.split()[0]
    return kind


def check_textfile(path: Path) -> None:
    """Raise ConfigError unless ``path`` is a .prom file in a RAM directory."""
    if path.suffix != ".prom":
        raise ConfigError(f"--textfile {path}: node_exporter reads only files named *.prom")
    if not path.parent.is_dir():
        raise ConfigError(f"--textfile {path}: directory {path.parent} does not exist")
    kind = filesystem_type(path.parent)
    if kind not in RAM_FILESYSTEMS:
        raise ConfigError(
            f"--textfile {path}: {path.parent} is on {kind}, not a RAM filesystem (tmpfs); "
            "metrics are rewritten every few seconds and must not wear the SD card"
        )


def run(config: Config, plugins: Plugins, path: Path, interval: float) -> int:
    """Refresh ``path`` every ``interval`` seconds until SIGTERM/SIGINT."""
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    watchdog = sdnotify.Watchdog()
    log.info("writing metrics to %s every %gs", path, interval)
    first = True
    while not stopping.is_set():
        started = time.monotonic()
        try:
            write_atomically(path, prometheus(config, plugins, interval=interval))
        except OSError as exc:
            log.error("cannot write metrics to %s: %s", path, exc)
        else:
            if first:
                sdnotify.ready(f"writing {path} every {interval:g}s")
                first = False
            watchdog.progress()
        stopping.wait(max(0.0, interval - (time.monotonic() - started)))
    return 0
