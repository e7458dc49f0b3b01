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
import threading
import time
from pathlib import Path

from livecam import __version__
from livecam.config import Config
from livecam.ops import prometheus, sdnotify
from livecam.ops import status as statusmod
from livecam.ops.lifecycle import stop_on_signals
from livecam.options import ConfigError
from livecam.storage.files import atomic_write, mount_of
from livecam.storage.layout import NodeDisk

log = logging.getLogger("livecam.metrics")

RAM_FILESYSTEMS = ("tmpfs", "ramfs")


def node_metrics(config: Config, disk: NodeDisk, *, interval: float | None = None) -> str:
    """The node's metrics now, in the text exposition format.

    With ``interval`` (the writer's refresh period) it adds
    ``livecam_metrics_interval_seconds``, which the staleness alert scales with."""
    fams = prometheus.families(
        statusmod.gather(config, disk),
        segment_seconds=config.segment_seconds,
        version=__version__,
    )
    if interval is not None:
        period = prometheus.Family(
            "livecam_metrics_interval_seconds", "gauge", "How often livecam-metrics rewrites this"
        )
        period.add(interval)
        fams.append(period)
    return prometheus.exposition(fams)


def write_textfile(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` atomically, readable by node_exporter (which
    runs as another user)."""
    atomic_write(path, text, mode=0o644)


def check_textfile(path: Path) -> None:
    """Raise ConfigError unless ``path`` is a .prom file in a RAM directory."""
    if path.suffix != ".prom":
        raise ConfigError(f"--textfile {path}: node_exporter reads only files named *.prom")
    if not path.parent.is_dir():
        raise ConfigError(f"--textfile {path}: directory {path.parent} does not exist")
    mount = mount_of(os.path.realpath(path.parent))
    kind = mount[2] if mount else "unknown"
    if kind not in RAM_FILESYSTEMS:
        raise ConfigError(
            f"--textfile {path}: {path.parent} is on {kind}, not a RAM filesystem (tmpfs); "
            "metrics are rewritten every few seconds and must not wear the SD card"
        )


def run(config: Config, disk: NodeDisk, path: Path, interval: float) -> int:
    """Refresh ``path`` every ``interval`` seconds until SIGTERM/SIGINT."""
    stopping = threading.Event()
    stop_on_signals(stopping.set)
    watchdog = sdnotify.Watchdog()
    log.info("writing metrics to %s every %gs", path, interval)
    first = True
    while not stopping.is_set():
        started = time.monotonic()
        try:
            write_textfile(path, node_metrics(config, disk, interval=interval))
        except OSError as exc:
            log.error("cannot write metrics to %s: %s", path, exc)
        else:
            if first:
                sdnotify.ready(f"writing {path} every {interval:g}s")
                first = False
            watchdog.progress()
        stopping.wait(max(0.0, interval - (time.monotonic() - started)))
    return 0
