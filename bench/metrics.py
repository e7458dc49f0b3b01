#!/usr/bin/env python3
"""What producing livecam's metrics costs a node, at the reference load.

    bench/metrics.py [--seconds 60] [--backlog 240] [--report FILE]

The reference node: 2 cameras, 30 s segments. The metrics writer's cost depends
on what it reads (the tiers' directories and the state files), not on video, so
the node's state is laid out as a running node has it: per camera a recorder
state file and the segment being shipped in the RAM buffer, the shipper's
state, the eviction ledger, and in the "backlog" case a 2-hour outage's worth
of segments in the disk spool (240 files: the worst a 10G spool holds).

Measured, for each case:
- ``livecam metrics --textfile`` (the deployed writer, one process): it runs
  with a short interval for ``--seconds``; its CPU (utime + stime from
  /proc/PID/stat) per refresh, scaled to the deployed 15 s interval, gives CPU
  per hour and the share of one core; /proc/PID/io's ``write_bytes`` (what
  reached a block device, i.e. the SD card) must stay 0, and ``wchar`` is what
  it wrote to the tmpfs.
- ``livecam status --prometheus`` as a new process per refresh (what a systemd
  timer would run), for comparison: why the writer is a long-running process.

Prints JSON; ``--report FILE`` writes it as markdown too. Run as any user.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

DEPLOYED_INTERVAL = 15.0  # seconds: livecam_node_metrics_interval
CLK_TCK = os.sysconf("SC_CLK_TCK")
LIVECAM = [sys.executable, "-m", "livecam"]


def lay_out_node(root: Path, backlog: int) -> Path:
    """A reference node's tiers and state files under ``root``; returns its config."""
    buffer, spool = root / "buffer", root / "spool"
    now = time.time()
    config = {
        "node": "node01", "site": "lab", "segment_seconds": 30,
        "cameras": {c: {"backend": "ffmpeg", "pattern": "testsrc2"} for c in ("cam0", "cam1")},
        "buffer": {"path": str(buffer), "max_bytes": "200M"},
        "spool": {"path": str(spool), "max_bytes": "10G", "min_free_bytes": 0},
        "transport": {"plugin": "local", "path": str(root / "nas")},
        "plugin_dirs": [],
    }  # fmt: skip
    state = buffer / ".livecam"
    state.mkdir(parents=True)
    (spool / ".livecam").mkdir(parents=True)
    for i, cam in enumerate(("cam0", "cam1")):
        (buffer / cam / ".open").mkdir(parents=True)
        (spool / cam).mkdir(parents=True)
        # the segment being recorded, and the one just closed (19 MB each, sparse)
        with open(buffer / cam / ".open" / "000000100.mp4", "wb") as f:
            f.truncate(9_000_000)
        name = f"{cam}-20261127T050000Z-{100:06d}.mp4"
        with open(buffer / cam / name, "wb") as f:
            f.truncate(19_000_000)
        for n in range(backlog // 2):
            seg = spool / cam / f"{cam}-20261127T03{n // 2 % 60:02d}{n % 2 * 30:02d}Z-{n:06d}.mp4"
            with open(seg, "wb") as f:
                f.truncate(19_000_000)
        (state / f"recorder-{cam}.json").write_text(json.dumps({
            "camera": cam, "backend": "ffmpeg", "pid": os.getpid(), "started": now - 3600,
            "state": "recording", "segments": 120 + i, "restarts": 0, "dropped_frames": 0,
            "bad_segments": 0, "salvaged": 0, "last_segment": name, "last_closed_at": now,
            "last_error": None,
        }))  # fmt: skip
    (state / "shipper.json").write_text(json.dumps({
        "pid": os.getpid(), "started": now - 3600, "transport": "rsync to nas", "state": "shipping",
        "published": 240, "published_bytes": 240 * 19_000_000, "failures_by_kind": {"transient": 3},
        "last_success": {"time": now, "segment": "x", "remote": "y"}, "last_error": None,
    }))  # fmt: skip
    (spool / ".livecam" / "evictions.json").write_text(json.dumps({
        "count": 2, "bytes": 38_000_000, "by_camera_tier": {"cam0/spool": 2},
    }))  # fmt: skip
    path = root / "livecam.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def proc_cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_io(pid: int) -> dict[str, int]:
    lines = Path(f"/proc/{pid}/io").read_text().splitlines()
    return {k: int(v) for k, v in (line.split(": ") for line in lines)}


def bench_writer(config: Path, textfile: Path, seconds: float, interval: float) -> dict:
    """The deployed writer, refreshing every ``interval`` s for ``seconds``."""
    proc = subprocess.Popen(
        [*LIVECAM, "-c", str(config), "metrics", "--textfile", str(textfile),
         "--interval", str(interval)],
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not textfile.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(
                f"the writer did not start: {proc.stderr.read() if proc.stderr else ''}"
            )
        time.sleep(0.05)
    cpu0, io0, t0 = proc_cpu(proc.pid), proc_io(proc.pid), time.monotonic()
    time.sleep(seconds)
    cpu1, io1, t1 = proc_cpu(proc.pid), proc_io(proc.pid), time.monotonic()
    proc.terminate()
    proc.wait(timeout=30)
    refreshes = (t1 - t0) / interval
    per_refresh = (cpu1 - cpu0) / refreshes
    per_hour = per_refresh * 3600 / DEPLOYED_INTERVAL
    return {
        "refreshes": round(refreshes),
        "cpu_ms_per_refresh": round(per_refresh * 1000, 2),
        "cpu_seconds_per_hour": round(per_hour, 2),
        "core_percent": round(per_hour / 3600 * 100, 4),
        "sd_card_bytes_per_hour": round(
            (io1["write_bytes"] - io0["write_bytes"]) / refreshes * 3600 / DEPLOYED_INTERVAL
        ),
        "tmpfs_bytes_per_hour": round(
            (io1["wchar"] - io0["wchar"]) / refreshes * 3600 / DEPLOYED_INTERVAL
        ),
        "textfile_bytes": textfile.stat().st_size,
    }


def bench_timer(config: Path, runs: int) -> dict:
    """`livecam status --prometheus` as a fresh process per refresh (a systemd timer)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    for _ in range(runs):
        subprocess.run([*LIVECAM, "-c", str(config), "status", "--prometheus"], check=True,
                       capture_output=True)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime) / runs
    per_hour = cpu * 3600 / DEPLOYED_INTERVAL
    return {
        "cpu_ms_per_refresh": round(cpu * 1000, 1),
        "cpu_seconds_per_hour": round(per_hour, 1),
        "core_percent": round(per_hour / 3600 * 100, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=60, help="how long each writer run lasts")
    p.add_argument("--interval", type=float, default=1.0, help="refresh interval while measuring")
    p.add_argument("--backlog", type=int, default=240, help="spool segments in the backlog case")
    p.add_argument("--timer-runs", type=int, default=10)
    p.add_argument("--report", type=Path, help="also write the figures as markdown here")
    args = p.parse_args()
    results: dict = {"deployed_interval_seconds": DEPLOYED_INTERVAL, "cases": {}}
    for case, backlog in (("steady", 0), ("backlog", args.backlog)):
        with tempfile.TemporaryDirectory(prefix="lcmon-bench-", dir="/dev/shm") as tmp:
            config = lay_out_node(Path(tmp), backlog)
            (Path(tmp) / "metrics").mkdir()
            textfile = Path(tmp) / "metrics" / "livecam.prom"
            results["cases"][case] = {
                "spool_segments": backlog,
                "writer": bench_writer(config, textfile, args.seconds, args.interval),
                "timer_alternative": bench_timer(config, args.timer_runs),
            }
    results["goal"] = "writer <= 0.1 % of a core and 0 bytes to the SD card"
    results["met"] = all(
        c["writer"]["core_percent"] <= 0.1 and c["writer"]["sd_card_bytes_per_hour"] == 0
        for c in results["cases"].values()
    )
    print(json.dumps(results, indent=2))
    if args.report:
        args.report.write_text(markdown(results))


def markdown(results: dict) -> str:
    lines = [
        "# Metrics cost (bench/metrics.py)",
        "",
        f"Reference node: 2 cameras, 30 s segments; refresh every "
        f"{results['deployed_interval_seconds']:g} s. Goal: {results['goal']} — "
        f"{'met' if results['met'] else 'NOT met'}.",
        "",
        "| case | spool segments | writer CPU/refresh | CPU s/hour | % of a core "
        "| SD-card bytes/hour | tmpfs bytes/hour | timer alternative: CPU/refresh, % of a core |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case, c in results["cases"].items():
        w, t = c["writer"], c["timer_alternative"]
        lines.append(
            f"| {case} | {c['spool_segments']} | {w['cpu_ms_per_refresh']} ms "
            f"| {w['cpu_seconds_per_hour']} | {w['core_percent']} % "
            f"| {w['sd_card_bytes_per_hour']} "
            f"| {w['tmpfs_bytes_per_hour']} | {t['cpu_ms_per_refresh']} ms, {t['core_percent']} % |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
