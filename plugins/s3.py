"""The ``s3`` transport: segments as objects in an S3 bucket (boto3), never overwritten.

It fills in the one publish protocol (``livecam.publish``) with S3 requests:
``put`` is one single PUT per segment, conditional (``If-None-Match: *``: the
server refuses with 412 when the key exists, which ``put`` turns into
FileExistsError, so the protocol compares what is there); ``size`` is a HEAD, but
not before a conditional PUT (the 412 is the check: no round trip before the
body), only after a 412 or where the server ignores the condition. The PUT
carries the segment's Content-MD5 and SHA-256 (``x-amz-checksum-sha256``, both
from one read of the file, and signed, so the payload itself goes unsigned):
the server refuses a body that does not match them, and the answer's checksum
(or, where the server keeps no SHA-256, the ETag of the single PUT, its MD5)
must equal the local file's before the shipper deletes it. "Already there" is
the same key with the same SHA-256 (the server's stored checksum, else read back).

Not every server honours ``If-None-Match`` on PUT. The first connection probes
it on one fixed key (``<prefix>/.livecam-probe``); ``describe`` (check-config,
status) says what it found. Where it is not honoured, ``put`` falls back to the
protocol's HEAD then a plain PUT: two nodes writing the same key between the two
requests would race, the later one replacing the earlier (segment names carry
the node and camera, so only a misconfiguration can make two writers share a key).

No multipart: segments are small (about 19 MB), a single PUT takes up to 5 GiB,
and some servers (RGW 16) ignore ``If-None-Match`` on CompleteMultipartUpload.

boto3 is the client: the standard one, with SigV4, the standard credential
chain, connection pooling and ``IfNoneMatch``/``ChecksumSHA256`` on put_object.
Its own retries are off (the shipper retries with backoff) and every request has
connect and read timeouts. The secret comes from ``secret_access_key_file`` (mode
0600, read when connecting) or the standard chain; it is never logged or shown.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import importlib
import posixpath
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any, BinaryIO, ClassVar

from livecam import hookimpl
from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.publish import BLOCK, Publishable, Store
from livecam.store_transport import StoreTransport
from livecam.transport import Item, PermanentError, PublishError, TransientError

CONNECT_TIMEOUT = 10
MAX_PUT = 5 << 30  # the largest single PUT S3 allows
PROBE = ".livecam-probe"

# Error codes a person must act on, with the line that says what to do.
PERMANENT_CODES = {
    "InvalidAccessKeyId": "access key refused (wrong access_key_id?)",
    "SignatureDoesNotMatch": "signature refused (wrong secret_access_key_file?)",
    "AccessDenied": "access denied (check the bucket policy for this node's key)",
    "NoSuchBucket": "no such bucket",
    "QuotaExceeded": "quota exceeded",
    "InsufficientCapacity": "the object store is full",
    "EntityTooLarge": "object too large",
    "InvalidStorageClass": "storage_class refused by the server",
    "InvalidBucketName": "invalid bucket name",
    "AllAccessDisabled": "all access to the bucket is disabled",
    "AccountProblem": "account problem on the object store",
    "InvalidRequest": "request refused (object_lock on a bucket without Object Lock?)",
}
TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "ServiceUnavailable", "InternalError",
                   "OperationAborted", "ConditionalRequestConflict", "BadDigest",
                   "XAmzContentChecksumMismatch", "InvalidDigest"}  # fmt: skip

INTERNAL = "the server failed (SeaweedFS answers this also when full or over its bucket quota)"


def _boto() -> Any:
    try:
        return importlib.import_module("boto3"), importlib.import_module("botocore")
    except ImportError:
        return None


def _error_code(exc: Exception) -> tuple[str, int]:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


def checksums(item: Publishable, f: BinaryIO) -> tuple[Any, str]:
    """(MD5 hash object, SHA-256 hex) of ``f``, the item's file, in one read. The
    SHA-256 is the item's own where it is known; one computed here is kept as the
    item's (``Item.digest`` is a cached property: the same value, read once)."""
    known = (
        (item.known_digest or vars(item).get("digest")) if isinstance(item, Item) else item.digest
    )
    md5 = hashlib.md5(usedforsecurity=False)
    sha = None if known else hashlib.sha256()
    while block := f.read(BLOCK):
        md5.update(block)
        if sha is not None:
            sha.update(block)
    if sha is None:
        return md5, str(known)
    digest = sha.hexdigest()
    if isinstance(item, Item):
        vars(item)["digest"] = digest
    return md5, digest


class S3Store(Store):
    """The protocol's operations as S3 requests; one per worker, one shared client."""

    def __init__(self, transport: S3Transport, client: Any):
        self.t, self.client = transport, client
        self.bucket = transport.opts["bucket"]
        self._asked: str | None = None

    def key(self, remote: str) -> str:
        return posixpath.join(self.t.prefix, remote) if self.t.prefix else remote

    def where(self, remote: str) -> str:
        return f"s3 {self.bucket}/{self.key(remote)}"

    def size(self, remote: str) -> int | None:
        if self.t.conditional and remote != self._asked:
            # The conditional PUT is the existence check (412 when taken): no HEAD
            # before it. After a 412 the protocol asks again, and then it is a HEAD.
            self._asked = remote
            return None
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(remote))
        except Exception as exc:
            if _error_code(exc)[1] == 404:
                return None
            raise
        return int(head["ContentLength"])

    def digest(self, remote: str) -> str:
        key = self.key(remote)
        head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        stored = head.get("ChecksumSHA256")
        if stored and "-" not in stored:  # a full-object checksum, not a composite one
            return base64.b64decode(stored).hex()
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        h = hashlib.sha256()
        try:
            while block := body.read(BLOCK):
                h.update(block)
        finally:
            body.close()
        return h.hexdigest()

    def put(self, item: Publishable, remote: str) -> None:
        if item.size > MAX_PUT:
            raise PermanentError(f"{self.where(remote)}: over 5 GiB, too large for one PUT")
        with open(item.local, "rb") as f:
            md5, sha256 = checksums(item, f)
            f.seek(0)
            kw: dict[str, Any] = {
                "Bucket": self.bucket,
                "Key": self.key(remote),
                "Body": f,
                "ContentLength": item.size,
                "ContentMD5": base64.b64encode(md5.digest()).decode(),
                "ChecksumSHA256": base64.b64encode(bytes.fromhex(sha256)).decode(),
            }
            kw.update(self.t.put_extra())
            if self.t.conditional:
                kw["IfNoneMatch"] = "*"
            try:
                answer = self.client.put_object(**kw)
            except Exception as exc:
                if _error_code(exc)[1] == 412:
                    raise FileExistsError(remote) from None
                raise
        stored = answer.get("ChecksumSHA256")
        if stored:
            ok = base64.b64decode(stored).hex() == sha256
        else:
            ok = answer.get("ETag", "").strip('"') == md5.hexdigest()
        if not ok:
            raise TransientError(f"{self.where(remote)}: the server's checksum does not match")


class S3Transport(StoreTransport):
    """Publish segments as objects under ``prefix`` in one bucket."""

    description: ClassVar[str] = "S3 object store (boto3): conditional PUT, verified checksum"
    batch_size: ClassVar[int] = 32
    workers: ClassVar[int] = 6
    options: ClassVar[Mapping[str, Option]] = {
        "endpoint": Option(o.string, "", "https://host:port of the object store (empty: AWS)"),
        "bucket": Option(o.string, help="the bucket"),
        "prefix": Option(o.string, "", "key prefix below which remote paths go"),
        "region": Option(o.string, "us-east-1", "the region SigV4 signs for"),
        "access_key_id": Option(o.string, "", "the node's access key (empty: standard chain)"),
        "secret_access_key_file": Option(o.path, "", "file (mode 0600) holding the secret key"),
        "addressing_style": Option(o.choice("auto", "path", "virtual"), "auto"),
        "ca_file": Option(o.path, "", "CA bundle for a private CA"),
        "storage_class": Option(o.string, "", "StorageClass of each object"),
        "object_lock": Option(o.integer(0), 0, "retention days (COMPLIANCE) per object; 0: off"),
    }

    def __init__(self, options: Mapping[str, Any], *, timeout: float):
        super().__init__(options, timeout=timeout)
        self.prefix = str(self.opts["prefix"]).strip("/")
        self._client: Any = None
        self._lock = threading.Lock()
        #: Whether the server refuses a PUT with If-None-Match on an existing key;
        #: None until the first connection probed it.
        self.conditional: bool | None = None

    @classmethod
    def check(cls, opts: Any, key: str) -> None:
        if _boto() is None:
            raise ConfigError(f"{key}.plugin: s3 needs boto3 (pip install 'livecam[s3]')")
        secret, ident = str(opts["secret_access_key_file"]), opts["access_key_id"]
        if bool(ident) != (secret not in ("", ".")):
            raise ConfigError(
                f"{key}.secret_access_key_file: give it with access_key_id, or neither "
                "(the standard credential chain)"
            )
        if ident:
            path = o.readable_file(secret, f"{key}.secret_access_key_file")
            if path.stat().st_mode & 0o077:
                raise ConfigError(
                    f"{key}.secret_access_key_file: {path} is readable by others; chmod 600 it"
                )
        if str(opts["ca_file"]) not in ("", "."):
            o.readable_file(str(opts["ca_file"]), f"{key}.ca_file")

    def endpoint(self) -> tuple[str, int] | None:
        """The object store's host and port from ``endpoint`` (None for AWS: always up)."""
        url = urllib.parse.urlsplit(self.opts["endpoint"])
        if not url.hostname:
            return None
        return url.hostname, url.port or (443 if url.scheme == "https" else 80)

    def describe(self) -> str:
        where = f"s3 {self.opts['endpoint'] or 'aws'} bucket {self.opts['bucket']}/{self.prefix}"
        if self.conditional is None:
            try:
                self.stores(1)
            except PublishError as exc:
                return f"{where} (not reached: {exc})"
        if self.conditional:
            return f"{where}, conditional writes honoured"
        return f"{where}, If-None-Match NOT honoured: HEAD-then-PUT, racy between writers"

    def put_extra(self) -> dict[str, Any]:
        """The PUT's options from the config: storage class, object lock."""
        kw: dict[str, Any] = {}
        if self.opts["storage_class"]:
            kw["StorageClass"] = self.opts["storage_class"]
        if self.opts["object_lock"]:
            until = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
                days=self.opts["object_lock"]
            )
            kw["ObjectLockMode"], kw["ObjectLockRetainUntilDate"] = "COMPLIANCE", until
        return kw

    def stores(self, count: int) -> list[S3Store]:
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            client = self._client
        if self.conditional is None:
            self._probe(S3Store(self, client))
        return [S3Store(self, client) for _ in range(count)]

    def _connect(self) -> Any:
        boto3, botocore = _boto()
        o_ = self.opts
        config = botocore.config.Config(
            region_name=o_["region"],
            connect_timeout=CONNECT_TIMEOUT,
            read_timeout=max(self.timeout, 1),
            retries={"max_attempts": 1, "mode": "standard"},  # the shipper retries
            max_pool_connections=self.workers + 1,
            # The body is bound by the signed Content-MD5 and x-amz-checksum-sha256
            # headers, which the server checks: no third hash of it for the signature.
            s3={"addressing_style": o_["addressing_style"], "payload_signing_enabled": False},
            # Checksums as headers we give, never aws-chunked trailers old servers refuse.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        kw: dict[str, Any] = {"config": config}
        if o_["endpoint"]:
            kw["endpoint_url"] = o_["endpoint"]
        if str(o_["ca_file"]) not in ("", "."):
            kw["verify"] = str(o_["ca_file"])
        if o_["access_key_id"]:
            try:
                secret = o_["secret_access_key_file"].read_text().strip()
            except OSError as exc:
                raise PermanentError(f"s3 secret_access_key_file: {exc.strerror}") from None
            kw["aws_access_key_id"], kw["aws_secret_access_key"] = o_["access_key_id"], secret
        client = boto3.session.Session().client("s3", **kw)
        # No "Expect: 100-continue" (a round trip before each body): the PUT goes
        # whole, and a 412 or a refusal after the body costs only that body.
        client.meta.events.unregister("before-call.s3", botocore.handlers.add_expect_header)
        return client

    def _probe(self, store: S3Store) -> None:
        """Find whether a conditional PUT on an existing key is refused (412)."""
        key = store.key(PROBE)
        kw = {"Bucket": store.bucket, "Key": key, "Body": b"livecam probe\n"}
        try:
            # A GET first: a HEAD's refusal carries no reason (which key, which bucket).
            store.client.list_objects_v2(Bucket=store.bucket, Prefix=key, MaxKeys=1)
            # Conditional both times: a policy may refuse every PUT without the header.
            if store.size(PROBE) is None:
                store.client.put_object(**kw, **self.put_extra(), IfNoneMatch="*")
            store.client.put_object(**kw, **self.put_extra(), IfNoneMatch="*")
            self.conditional = False
        except Exception as exc:
            code, status = _error_code(exc)
            if status == 412:
                self.conditional = True
                return
            if code == "NotImplemented":  # refuses the header rather than ignore it
                self.conditional = False
                return
            raise self.classify(exc, f"s3 {store.bucket}/{key}") from None

    def failure(self, exc: Exception, store: Store, item: Item) -> PublishError:
        return self.classify(exc, store.where(item.remote))

    def classify(self, exc: Exception, where: str) -> PublishError:
        """``exc`` (from boto3/botocore) as a Permanent or Transient error, one line."""
        code, status = _error_code(exc)
        if code in PERMANENT_CODES:
            return PermanentError(f"{where}: {code}: {PERMANENT_CODES[code]}")
        if code == "InternalError":  # no reason given; SeaweedFS says it when full too
            return TransientError(f"{where}: InternalError: {INTERNAL}")
        if code in TRANSIENT_CODES or status >= 500 or status in (408, 429):
            return TransientError(f"{where}: {code or status}")
        if status == 403:  # a HEAD: no body, so no code
            return PermanentError(f"{where}: access denied (wrong key or secret, or the policy)")
        if status:
            return PermanentError(f"{where}: the server refused: {code or status}")
        name = type(exc).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError", "SSLError"):
            return PermanentError(f"{where}: {name}: {exc}")
        if isinstance(exc, OSError) and not hasattr(exc, "kwargs"):
            return TransientError(f"{where}: {exc.strerror or exc}")
        return TransientError(f"{where}: {name}: {exc}")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None


@hookimpl
def livecam_register_transports(register):  # type: ignore[no-untyped-def]
    register("s3", S3Transport)
