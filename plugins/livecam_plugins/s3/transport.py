"""The s3 transport: the boto3 client, the probe of conditional writes, and S3's
failures classed."""

from __future__ import annotations

import datetime
import importlib
import logging
import threading
import urllib.parse
from collections.abc import Mapping
from typing import Any, ClassVar

from livecam import options as o
from livecam.options import ConfigError, Option
from livecam.transport import PermanentError, PublishError, TransientError
from livecam.transport.stores import StoreTransport
from livecam_plugins.s3.store import S3Store, error_code

log = logging.getLogger("livecam.s3")

CONNECT_TIMEOUT = 10
PROBE = ".livecam-probe"
#: What the probe found, as ``describe`` and ``online`` say it.
FOUND = {
    True: "conditional writes honoured",
    False: "If-None-Match NOT honoured: HEAD-then-PUT, racy between writers",
}

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


def load_boto() -> Any:
    """(boto3, botocore), or None when boto3 is not installed."""
    try:
        return importlib.import_module("boto3"), importlib.import_module("botocore")
    except ImportError:
        return None


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
        if load_boto() is None:
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
        """The endpoint, bucket and prefix, and what the first connection's probe
        found once it ran (no request of its own: ``online`` connects)."""
        where = f"s3 {self.opts['endpoint'] or 'aws'} bucket {self.opts['bucket']}/{self.prefix}"
        return where if self.conditional is None else f"{where}, {FOUND[self.conditional]}"

    def online(self) -> str:
        """Connect (the first connection lists the bucket and probes conditional
        writes) and say whether they are honoured. Raises PublishError."""
        self.stores(1)
        return self.describe()

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
        """``count`` stores on the one client, connecting (and probing) first if
        needed. Raises PublishError."""
        with self._lock:
            if self._client is None:
                self._client = self._connect()
            client = self._client
        if self.conditional is None:
            self._probe(S3Store(self, client))
        return [S3Store(self, client) for _ in range(count)]

    def _connect(self) -> Any:
        boto3, botocore = load_boto()
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
        """Find whether a conditional PUT on an existing key is refused (412), and
        log what was found (``describe`` says it from then on)."""
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
            code, status = error_code(exc)
            if status == 412:
                self.conditional = True
            elif code == "NotImplemented":  # refuses the header rather than ignore it
                self.conditional = False
            else:
                raise self.classify(exc, f"s3 {store.bucket}/{key}") from None
        (log.info if self.conditional else log.warning)("%s", self.describe())

    def classify(self, error: BaseException, where: str) -> PublishError:
        """``error`` (from boto3/botocore) as a Permanent or Transient error, one line."""
        code, status = error_code(error)
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
        name = type(error).__name__
        if name in ("NoCredentialsError", "PartialCredentialsError", "SSLError"):
            return PermanentError(f"{where}: {name}: {error}")
        if isinstance(error, OSError) and not hasattr(error, "kwargs"):
            return TransientError(f"{where}: {error.strerror or error}")
        return TransientError(f"{where}: {name}: {error}")

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None
