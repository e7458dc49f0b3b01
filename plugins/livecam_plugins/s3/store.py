"""The s3 transport's store: the publish protocol's operations as S3 requests."""

from __future__ import annotations

import base64
import hashlib
import posixpath
from collections.abc import Mapping
from typing import Any, BinaryIO, Protocol

from livecam.transport import Item, PermanentError, TransientError
from livecam.transport.protocol import BLOCK, Publishable, Store

MAX_PUT = 5 << 30  # the largest single PUT S3 allows


class Bucket(Protocol):
    """What a store reads of its transport (``S3Transport``)."""

    @property
    def opts(self) -> Mapping[str, Any]: ...

    prefix: str
    conditional: bool | None

    def put_extra(self) -> dict[str, Any]: ...


def error_code(exc: BaseException) -> tuple[str, int]:
    """(S3 error code, HTTP status) of a botocore ClientError; ('', 0) for others."""
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
    """The protocol's operations as S3 requests; one per worker, one shared client.

    Made once the transport's first connection probed the server: where it honours
    ``If-None-Match``, ``put`` is conditional and the existence check itself
    (``conditional_put``: no HEAD before it); elsewhere the protocol HEADs first.
    """

    def __init__(self, transport: Bucket, client: Any):
        self.t, self.client = transport, client
        self.bucket = transport.opts["bucket"]
        self.conditional_put = bool(transport.conditional)

    def key(self, remote: str) -> str:
        return posixpath.join(self.t.prefix, remote) if self.t.prefix else remote

    def where(self, remote: str) -> str:
        return f"s3 {self.bucket}/{self.key(remote)}"

    def size(self, remote: str) -> int | None:
        """A HEAD of the key."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self.key(remote))
        except Exception as exc:
            if error_code(exc)[1] == 404:
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
        """One PUT, with ``If-None-Match: *`` where the server honours it (a 412, the
        key taken, is FileExistsError); the server's checksum must match."""
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
                if error_code(exc)[1] == 412:
                    raise FileExistsError(remote) from None
                raise
        stored = answer.get("ChecksumSHA256")
        if stored:
            ok = base64.b64decode(stored).hex() == sha256
        else:
            ok = answer.get("ETag", "").strip('"') == md5.hexdigest()
        if not ok:
            raise TransientError(f"{self.where(remote)}: the server's checksum does not match")
