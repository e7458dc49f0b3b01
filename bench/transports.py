"""Benchmark the network transports against the link and their plain tools.

    .venv/bin/python bench/transports.py [--quick] [--plan MBIT:COUNT:MB ...]
                                         [--latency-count N] [--overhead-count N]
                                         [--report FILE]

Real sshd (rrsync -wo account, chrooted SFTP account) and smbd run in a network
namespace behind a veth pair shaped with tc tbf. For each link, each transport
drains a backlog of segment-sized random files the way the shipper does (in
batches of the transport's ``batch_size`` and ``batch_limit``, digests read only when needed,
through ``publish_batch``), and its plain tool sends the same files in one go
over the same link: ``rsync -a``, OpenSSH ``sftp`` with ``put``, ``smbclient``
with ``mput`` (SMB3 encrypted, as livecam). The link's own figure comes first:
the same bytes pushed over one plain TCP connection through the same path to a
sink in the namespace (``bench/netpath.py``), the most the path carries. Each
row gives livecam against its plain tool and both against the link. It also
reports publish latency (p50/p95) of single 19 MB segments on a healthy link (a
RAM segment is always published alone), the per-file cost with and without
connection reuse (goal: under 0.5 s a file when reused), and one batch of 30
small files on a new connection (goal: under 2 s). A link with latency goes
through a delaying TCP relay in its own process (no netem on this kernel).
Needs root. Full run (the default): 200 files of 2 MB and of 19 MB at 100 and
20 Mbit/s; ``--plan`` replaces those links/sizes/counts.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import netpath  # noqa: E402  (bench/, beside this file)
from livecam_plugins.rsync import RsyncTransport  # noqa: E402
from livecam_plugins.sftp import SftpTransport  # noqa: E402
from livecam_plugins.smb import SmbTransport  # noqa: E402

from livecam.options import check_options  # noqa: E402
from livecam.storage.files import file_digest  # noqa: E402
from livecam.transport import Item  # noqa: E402
from tests.transports import servers  # noqa: E402

MB = 1_000_000
NETPATH = REPO / "bench" / "netpath.py"
SINK_PORT = 5201  # inside the namespace
P = TypeVar("P", bound="Proc")


class Proc:
    """A part of the network path (``bench/netpath.py``) in its own process."""

    def __init__(self, argv: list[str]):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        if self.proc.stdout is None or self.proc.stdout.readline().strip() != "ready":
            self.stop()
            raise RuntimeError(f"{argv}: did not start")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Relay(Proc):
    """A TCP relay on 127.0.0.1 that delays every chunk by ``delay`` seconds each way."""

    def __init__(self, target: tuple[str, int], delay: float):
        self.port = servers.free_port()
        super().__init__([sys.executable, str(NETPATH), "relay", "--target",
                          f"{target[0]}:{target[1]}", "--port", str(self.port),
                          "--delay", str(delay)])  # fmt: skip


class Bench:
    def __init__(self, quick: bool):
        self.quick = quick
        self.base = servers.make_base()
        self.netns = servers.NetNs("lc-bench", subnet="10.77.2")
        self.sshd = servers.Sshd(self.base, host=self.netns.ns_ip, port=22, netns=self.netns.name)
        self.smbd = servers.Smbd(self.base, host=self.netns.ns_ip, port=445, netns=self.netns.name)
        self.sshd.start()
        self.smbd.start()
        self.src = Path(tempfile.mkdtemp(prefix="livecam-bench-", dir="/dev/shm"))
        self.auth = self.base / "smb-auth"
        self.auth.write_text(f"username={servers.SMB_USER}\npassword={servers.SMB_PASSWORD}\n")
        self.auth.chmod(0o600)
        self.lines: list[str] = []
        self.procs: list[Proc] = []
        sink = ["ip", "netns", "exec", self.netns.name, sys.executable, str(NETPATH), "sink",
                "--host", self.netns.ns_ip, "--port", str(SINK_PORT)]  # fmt: skip
        self.start(Proc(sink))

    def start(self, proc: P) -> P:
        self.procs.append(proc)
        return proc

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.sshd.stop()
        self.smbd.stop()
        self.netns.remove()
        shutil.rmtree(self.src, ignore_errors=True)
        servers.cleanup(self.base)

    def say(self, line: str) -> None:
        print(line, flush=True)
        self.lines.append(line)

    # --- files and targets ------------------------------------------------------------------

    def files(self, count: int, size: int) -> list[Path]:
        shutil.rmtree(self.src, ignore_errors=True)
        self.src.mkdir()
        block = os.urandom(size)
        out = []
        for i in range(count):
            p = (
                self.src
                / f"cam0-20261126T{i // 3600:02d}{i // 60 % 60:02d}{i % 60:02d}Z-{i:06d}.mp4"
            )
            p.write_bytes(block[:8] + os.urandom(64) + block[72:])  # unique, no rsync matches
            out.append(p)
        return out

    def wipe(self) -> None:
        for root in (self.sshd.rsync_root, self.sshd.sftp_root, self.smbd.share_root):
            for child in root.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()

    def transport(self, kind: str, host: str, port: int):
        if kind == "rsync":
            raw, cls = self.sshd.rsync_options("run"), RsyncTransport
        elif kind == "sftp":
            raw, cls = self.sshd.sftp_options("/upload/run"), SftpTransport
        else:
            raw, cls = self.smbd.smb_options("run"), SmbTransport
        raw = {k: v for k, v in raw.items() if k != "plugin"}
        raw["server" if kind == "smb" else "host"], raw["port"] = host, port
        opts = check_options("transport", raw, cls.options)
        return cls(opts, timeout=600)

    def ssh_e(self, port: int) -> list[str]:
        return ["ssh", "-F", "none", "-p", str(port), "-i", str(self.sshd.client_key),
                "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", f"UserKnownHostsFile={self.sshd.known_hosts}"]  # fmt: skip

    def plain(self, kind: str, host: str, port: int) -> None:
        """Send every file in self.src with the protocol's own tool, in one go."""
        if kind == "rsync":
            argv = [
                "rsync",
                "-a",
                "-e",
                " ".join(self.ssh_e(port)),
                f"{self.src}/",
                f"{servers.RSYNC_USER}@{host}:plain/",
            ]
            subprocess.run(argv, check=True, capture_output=True)
        elif kind == "sftp":
            batch = self.base / "batch"
            batch.write_text(f"-mkdir /upload/plain\nput {self.src}/* /upload/plain/\n")
            argv = [
                "sftp",
                "-q",
                "-b",
                str(batch),
                *self.ssh_e(port)[5:],
                "-P",
                str(port),
                f"{servers.SFTP_USER}@{host}",
            ]
            subprocess.run(argv, check=True, capture_output=True)
        else:
            argv = [
                "smbclient",
                f"//{host}/nas",
                "-p",
                str(port),
                "-A",
                str(self.auth),
                "--client-protection=encrypt",
                "-c",
                f"mkdir plain; cd plain; lcd {self.src}; prompt; mput *",
            ]
            subprocess.run(argv, check=True, capture_output=True)

    def pin_relay(self, port: int) -> None:
        """Pin the relay's address too: the node talks to 127.0.0.1:port."""
        first = self.sshd.known_hosts.read_text().split("\n")[0].split(" ", 1)[1]
        self.sshd.pin_host_key()
        with open(self.sshd.known_hosts, "a") as f:
            f.write(f"[127.0.0.1]:{port} {first}\n")

    # --- measurements ------------------------------------------------------------------------

    def drain(self, kind: str, host: str, port: int, files: list[Path]) -> tuple[float, int]:
        """Publish ``files`` as the shipper drains a spool; (seconds, publish_batch calls)."""
        t = self.transport(kind, host, port)
        calls = 0
        t0 = time.monotonic()
        i = 0
        while i < len(files):
            # As the publisher batches: batch_size segments, batch_limit bytes, at least one.
            limit = t.batch_limit()
            batch: list[Item] = []
            for f in files[i : i + t.batch_size]:
                size = f.stat().st_size
                if batch and limit is not None and sum(b.size for b in batch) + size > limit:
                    break
                # The digest is read only when needed, as the shipper does.
                batch.append(Item(f, f"lab/node01/cam0/{f.name}", size))
            done = list(t.publish_batch(batch))
            assert len(done) == len(batch), (kind, len(done), len(batch))
            calls += 1
            i += len(batch)
        total = time.monotonic() - t0
        t.close()
        return total, calls

    def compare(
        self, label: str, files: list[Path], host: str, ports: dict[str, int], sink: int
    ) -> None:
        """Each transport's drain of ``files`` against its plain tool and against the
        link: the same bytes pushed through the same path (``sink`` port, via ``host``)
        over one plain TCP connection, the most the path carries."""
        nbytes = sum(f.stat().st_size for f in files)
        link_rate = nbytes * 8 / netpath.push(host, sink, files) / 1e6
        files_text = f"{len(files)} x {files[0].stat().st_size / MB:g} MB"
        self.say(
            f"| {label} | link (one TCP stream) | {files_text} | 1 | {link_rate:.1f} | | | | 1 |"
        )
        for kind in ("rsync", "sftp", "smb"):
            self.wipe()
            t_plain = timed(lambda kind=kind: self.plain(kind, host, ports[kind]))
            self.wipe()
            t_ours, calls = self.drain(kind, host, ports[kind], files)
            rate = nbytes * 8 / t_ours / 1e6
            plain_rate = nbytes * 8 / t_plain / 1e6
            self.say(
                f"| {label} | {kind} | {len(files)} x {files[0].stat().st_size / MB:g} MB "
                f"| {calls} | {rate:.1f} | {plain_rate:.1f} | {rate / plain_rate:.2f} "
                f"| {plain_rate / link_rate:.2f} | **{rate / link_rate:.2f}** |"
            )

    def latency(self, count: int, host: str, ports: dict[str, int]) -> None:
        """One 19 MB segment per publish, as a RAM segment on a healthy link goes."""
        files = self.files(count, 19 * MB)
        for kind in ("rsync", "sftp", "smb"):
            self.wipe()
            t = self.transport(kind, host, ports[kind])
            each = []
            for f in files:
                t0 = time.monotonic()
                t.publish(
                    f, f"lab/node01/cam0/{f.name}", size=f.stat().st_size, digest=file_digest(f)
                )
                each.append(time.monotonic() - t0)
            t.close()
            self.say(
                f"| {kind} | {count} x 19 MB | {pct(each, 50) * 1000:.0f} "
                f"| {pct(each, 95) * 1000:.0f} |"
            )

    def overhead(self, count: int) -> None:
        files = self.files(count, 64_000)
        host = self.netns.ns_ip
        for kind in ("rsync", "sftp", "smb"):
            port = 22 if kind != "smb" else 445
            self.wipe()
            t0 = time.monotonic()
            t = self.transport(kind, host, port)
            for f in files:  # one publish per file over one connection (no batching)
                t.publish(f, f"x/{f.name}", size=f.stat().st_size, digest=file_digest(f))
            t.close()
            reuse = time.monotonic() - t0
            self.wipe()
            t0 = time.monotonic()
            for f in files:  # a new connection per file: what reuse saves
                t = self.transport(kind, host, port)
                t.publish(f, f"x/{f.name}", size=f.stat().st_size, digest=file_digest(f))
                t.close()
            fresh = time.monotonic() - t0
            self.wipe()
            batched, _ = self.drain(kind, host, port, files)
            self.say(
                f"| {kind} | {batched / count * 1000:.0f} | {reuse / count * 1000:.0f} "
                f"| {fresh / count * 1000:.0f} |"
            )

    def first_batch(self) -> None:
        """30 files of 50 KB in one publish_batch of a new transport (its connection,
        or rsync's master, started inside): what a backlog's first batch costs."""
        files = self.files(30, 50_000)
        host = self.netns.ns_ip
        for kind in ("rsync", "sftp", "smb"):
            self.wipe()
            seconds, calls = self.drain(kind, host, 22 if kind != "smb" else 445, files)
            ok = "yes" if seconds < 2 else "**NO**"
            self.say(f"| {kind} | {seconds:.2f} | {calls} | {ok} |")


def timed(fn) -> float:
    t0 = time.monotonic()
    fn()
    return time.monotonic() - t0


def pct(values: list[float], p: int) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[p - 1]
        if len(values) > 1
        else values[0]
    )


def plan(text: str) -> tuple[float, int, float]:
    mbit, count, size = text.split(":")
    return float(mbit), int(count), float(size)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, smaller files (minutes)")
    ap.add_argument(
        "--plan",
        type=plan,
        action="append",
        metavar="MBIT:COUNT:MB",
        help="a shaped link, how many files, their size (repeatable)",
    )
    ap.add_argument("--latency-count", type=int, help="2 MB files through the 40 ms relay")
    ap.add_argument("--single-count", type=int, help="single 19 MB publishes for p50/p95")
    ap.add_argument("--overhead-count", type=int, help="64 KB files for the per-file cost")
    ap.add_argument("--report", type=Path, help="write the tables as markdown here")
    ap.add_argument(
        "--only",
        choices=["links", "latency"],
        help="only the shaped links (--plan), or only the 40 ms RTT link",
    )
    args = ap.parse_args()
    b = Bench(args.quick)
    try:
        b.say(
            "| link | transport | files | publish calls | livecam Mbit/s "
            "| plain tool Mbit/s | livecam / plain tool | plain tool / link "
            "| livecam / link |"
        )
        b.say("|---|---|---|---|---|---|---|---|---|")
        host, ports = b.netns.ns_ip, {"rsync": 22, "sftp": 22, "smb": 445}
        full = [(100, 200, 2), (100, 200, 19), (20, 200, 2), (20, 200, 19)]
        plans = args.plan or ([(100, 50, 2), (20, 20, 2)] if args.quick else full)
        for mbit, count, size in plans if args.only != "latency" else []:
            b.netns.shape(mbit, burst="256kb")
            b.compare(f"{mbit:g} Mbit/s", b.files(count, int(size * MB)), host, ports, SINK_PORT)
        if args.only == "links":
            return 0
        b.netns.shape(100, burst="256kb")
        relays = {
            k: b.start(Relay((host, p), delay=0.02))
            for k, p in (("ssh", 22), ("smb", 445), ("sink", SINK_PORT))
        }
        b.pin_relay(relays["ssh"].port)
        rports = {
            "rsync": relays["ssh"].port,
            "sftp": relays["ssh"].port,
            "smb": relays["smb"].port,
        }
        count = args.latency_count or (50 if args.quick else 200)
        b.compare(
            "100 Mbit/s + 40 ms RTT",
            b.files(count, 2 * MB),
            "127.0.0.1",
            rports,
            relays["sink"].port,
        )
        if args.only == "latency":
            return 0
        b.say("")
        b.say(
            "| transport (100 Mbit/s, one segment per publish) | files "
            "| publish p50 ms | publish p95 ms |"
        )
        b.say("|---|---|---|---|")
        b.latency(args.single_count or (10 if args.quick else 30), host, ports)
        b.say("")
        b.say(
            "| transport | per file, batched (ms) | per file, one per publish, connection "
            "reused (ms; goal < 500) | per file, new connection (ms) |"
        )
        b.say("|---|---|---|---|")
        b.netns.shape(1000, burst="1mb")
        b.overhead(args.overhead_count or (50 if args.quick else 200))
        b.say("")
        b.say("| transport | 30 x 50 KB, one batch, new connection (s) | calls | < 2 s |")
        b.say("|---|---|---|---|")
        b.first_batch()
    finally:
        b.close()
        if args.report:
            args.report.write_text("\n".join(b.lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
