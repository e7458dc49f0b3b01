"""The ``s3`` transport: segments as objects in an S3 bucket (boto3), never overwritten.

It fills in the one publish protocol (``livecam.transport.protocol``) with S3 requests:
``put`` is one single PUT per segment, conditional (``If-None-Match: *``: the
server refuses with 412 when the key exists, which ``put`` turns into
FileExistsError, so the protocol compares what is there); ``size`` is a HEAD,
which the protocol skips before a conditional PUT (the store's
``conditional_put``: the 412 is the check, no round trip before the body) and
asks after a 412, or first where the server ignores the condition. The PUT
carries the segment's Content-MD5 and SHA-256 (``x-amz-checksum-sha256``, both
from one read of the file, and signed, so the payload itself goes unsigned):
the server refuses a body that does not match them, and the answer's checksum
(or, where the server keeps no SHA-256, the ETag of the single PUT, its MD5)
must equal the local file's before the shipper deletes it. "Already there" is
the same key with the same SHA-256 (the server's stored checksum, else read back).

Not every server honours ``If-None-Match`` on PUT. The first connection probes
it on one fixed key (``<prefix>/.livecam-probe``) and logs what it found;
``online`` (``check-config --online``) says it, and ``describe`` once known
(it makes no request itself). Where it is not honoured, ``put`` falls back to the
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

``transport``: the client, the probe and the error classes; ``store``: the
protocol's operations as S3 requests.
"""

from livecam import hookimpl
from livecam_plugins.s3.store import S3Store
from livecam_plugins.s3.transport import S3Transport

__all__ = ["S3Store", "S3Transport"]


@hookimpl
def livecam_register_transports(register):  # type: ignore[no-untyped-def]
    register("s3", S3Transport)
