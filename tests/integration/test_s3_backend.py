"""S3Backend against real servers: what the conformance suite cannot say on its own.

* other S3 clients (minio-py) read what we wrote, bytes and ``x-amz-meta-xxh3-128`` alike;
* large objects really go multipart, and an interrupted upload is aborted;
* vendor failures come out as our errors: wrong keys, a dead endpoint, 5xx, a full disk, a missing
  bucket, and never with a secret in the message;
* the Glacier archive protocol (moto: SeaweedFS does not speak ``RestoreObject``).
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from botocore.exceptions import ClientError
from helpers import read_all

from tiering.config import Credentials, Secret, TierConfig, TransferConfig
from tiering.errors import (
    AccessDenied,
    ArchivedObject,
    BackendError,
    DigestRefused,
    InsufficientStorage,
    ObjectNotFound,
    PermanentBackendError,
    TransientBackendError,
    Unreachable,
)
from tiering.storage import RetryingBackend, open_backend
from tiering.storage.base import DIGEST_METADATA_KEY
from tiering.storage.s3.backend import S3Backend
from tiering.storage.s3.wire import delete_objects_errors as _delete_objects_errors
from tiering.transfer.hashing import xxh3_bytes

pytestmark = pytest.mark.server

MiB = 2**20


def backend_for(server: Any, bucket: str, prefix: str = "", **options: Any) -> S3Backend:
    options.setdefault("retries", 1)
    options.setdefault("connect_timeout", 2)
    options.setdefault("read_timeout", 20)
    return S3Backend(
        bucket, prefix, endpoint_url=server.endpoint,
        credentials=Credentials(server.access_key, Secret(server.secret_key)), **options,
    )


@pytest.fixture
def s3(bucket: Any) -> Iterator[S3Backend]:
    backend = backend_for(bucket.server, bucket.name, "tier")
    try:
        yield backend
    finally:
        backend.close()


# -- other clients see what we wrote ---------------------------------------------------------------


def minio_client(server: Any) -> Any:
    from minio import Minio

    return Minio(
        server.endpoint.removeprefix("http://"), access_key=server.access_key, secret_key=server.secret_key,
        secure=False, region="us-east-1",
    )


@pytest.mark.parametrize("size", [1000, 11 * MiB], ids=["single-put", "multipart"])
def test_minio_client_reads_our_bytes_and_digest_metadata(bucket: Any, size: int) -> None:
    data = os.urandom(size)
    digest = xxh3_bytes(data)
    backend = backend_for(bucket.server, bucket.name, "hot", multipart_threshold=5 * MiB, part_size=5 * MiB)
    backend.put("ds/v1/file.bin", io.BytesIO(data), size=size, metadata={DIGEST_METADATA_KEY: digest})

    client = minio_client(bucket.server)
    resp = client.get_object(bucket.name, "hot/ds/v1/file.bin")
    try:
        assert xxh3_bytes(resp.read()) == digest
    finally:
        resp.close()
        resp.release_conn()
    stat = client.stat_object(bucket.name, "hot/ds/v1/file.bin")
    headers = {k.lower(): v for k, v in stat.metadata.items()}
    assert headers["x-amz-meta-xxh3-128"] == digest
    assert stat.size == size


def test_large_object_is_stored_as_a_multipart_upload_of_the_expected_parts(bucket: Any) -> None:
    backend = backend_for(bucket.server, bucket.name, multipart_threshold=5 * MiB, part_size=5 * MiB)
    data = os.urandom(12 * MiB)
    backend.put("big", io.BytesIO(data), size=len(data))
    etag = bucket.server.client().head_object(Bucket=bucket.name, Key="big")["ETag"]
    # an S3 multipart ETag is "<md5 of part md5s>-<part count>": 5 + 5 + 2 MiB
    assert etag.strip('"').endswith("-3")


def test_interrupted_multipart_upload_is_aborted_on_the_server(bucket: Any) -> None:
    backend = backend_for(bucket.server, bucket.name, "tier", multipart_threshold=1, part_size=5 * MiB)

    class InterruptingBody:
        def __init__(self) -> None:
            self.sent = 0

        def read(self, size: int = -1, /) -> bytes:
            if self.sent >= 11 * MiB:
                raise KeyboardInterrupt
            n = min(size if size >= 0 else MiB, 11 * MiB - self.sent)
            self.sent += n
            return b"k" * n

        def close(self) -> None:
            pass

    with pytest.raises(KeyboardInterrupt):
        backend.put("interrupted", InterruptingBody(), size=20 * MiB)
    uploads = bucket.server.client().list_multipart_uploads(Bucket=bucket.name).get("Uploads") or []
    assert uploads == []
    with pytest.raises(ObjectNotFound):
        backend.head("interrupted")


def test_abort_incomplete_aborts_only_uploads_under_the_backend_prefix(bucket: Any) -> None:
    client = bucket.server.client()
    client.create_multipart_upload(Bucket=bucket.name, Key="tier/a/left-behind")
    client.create_multipart_upload(Bucket=bucket.name, Key="tier/b/left-behind")
    client.create_multipart_upload(Bucket=bucket.name, Key="other/left-behind")
    backend = backend_for(bucket.server, bucket.name, "tier")

    assert backend.abort_incomplete("a/") == 1
    assert backend.abort_incomplete() == 1
    assert backend.abort_incomplete() == 0
    remaining = [u["Key"] for u in client.list_multipart_uploads(Bucket=bucket.name).get("Uploads") or []]
    assert remaining == ["other/left-behind"]


def test_head_reports_standard_storage_class_and_not_archived(s3: S3Backend) -> None:
    s3.put("plain", io.BytesIO(b"x"), size=1)
    info = s3.head("plain")
    assert (info.storage_class, info.archived, info.restore_in_progress) == ("STANDARD", False, False)


def test_two_seaweed_servers_are_independent_tiers(seaweed: Any, seaweed2: Any) -> None:
    name = f"t-{uuid.uuid4().hex[:16]}"
    seaweed.make_bucket(name)
    seaweed2.make_bucket(name)
    try:
        one, two = backend_for(seaweed, name), backend_for(seaweed2, name)
        one.put("only-here", io.BytesIO(b"1"), size=1)
        assert one.head("only-here").size == 1
        with pytest.raises(ObjectNotFound):
            two.head("only-here")
        assert seaweed.endpoint != seaweed2.endpoint
    finally:
        seaweed.remove_bucket(name)
        seaweed2.remove_bucket(name)


# -- configuration -------------------------------------------------------------------------------


def test_open_backend_builds_a_retrying_s3_backend_from_tier_config(
    bucket: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOTTEST_ACCESS_KEY_ID", bucket.server.access_key)
    monkeypatch.setenv("HOTTEST_SECRET_ACCESS_KEY", bucket.server.secret_key)
    tier = TierConfig.model_validate({
        "rank": 0, "backend": f"s3://{bucket.name}/nvme/", "endpoint": bucket.endpoint,
        "credentials": {"env": "HOTTEST"},
    })
    backend = open_backend("hot", tier, TransferConfig(retries=2))
    assert isinstance(backend, RetryingBackend)
    assert backend.attempts == 3
    assert backend.url == f"s3://{bucket.name}/nvme"
    backend.put("ds/f", io.BytesIO(b"abc"), size=3)
    loc = backend.locate("ds/f")
    assert (loc.kind, loc.bucket, loc.key, loc.endpoint) == ("s3", bucket.name, "nvme/ds/f", bucket.endpoint)
    assert bucket.server.client().get_object(Bucket=bucket.name, Key="nvme/ds/f")["Body"].read() == b"abc"


def test_glacier_tier_writes_with_glacier_storage_class() -> None:
    tier = TierConfig(rank=2, backend="s3://cold/tape", endpoint="http://127.0.0.1:9", archive="glacier")
    backend = S3Backend.from_config("cold", tier, TransferConfig())
    assert backend.storage_class == "GLACIER"
    assert backend.prefix == "tape/"


def test_ensure_bucket_creates_a_missing_bucket_once(seaweed: Any) -> None:
    name = f"t-{uuid.uuid4().hex[:16]}"
    backend = backend_for(seaweed, name)
    try:
        with pytest.raises(PermanentBackendError, match=name):
            list(backend.list())
        assert backend.ensure_bucket() is True
        assert backend.ensure_bucket() is False
        backend.put("k", io.BytesIO(b"v"), size=1)
        assert [o.key for o in backend.list()] == ["k"]
    finally:
        seaweed.remove_bucket(name)


def test_reading_from_a_missing_bucket_names_the_bucket(seaweed: Any) -> None:
    backend = backend_for(seaweed, "no-such-bucket-here")
    with pytest.raises(PermanentBackendError, match="no-such-bucket-here") as caught:
        backend.open_read("k")
    assert not isinstance(caught.value, ObjectNotFound)


# -- errors --------------------------------------------------------------------------------------


def test_wrong_credentials_raise_access_denied_without_leaking_the_secret(
    seaweed_auth: Any, caplog: pytest.LogCaptureFixture
) -> None:
    good = backend_for(seaweed_auth, "auth-bucket")
    good.ensure_bucket()
    good.put("k", io.BytesIO(b"v"), size=1)  # the right key works: the server is up and enforcing

    wrong_secret = "wrong-secret-0123456789"
    bad = S3Backend(
        "auth-bucket", endpoint_url=seaweed_auth.endpoint, retries=0,
        credentials=Credentials(seaweed_auth.access_key, Secret(wrong_secret)),
    )
    unknown = S3Backend(
        "auth-bucket", endpoint_url=seaweed_auth.endpoint, retries=0,
        credentials=Credentials("no-such-key", Secret(wrong_secret)),
    )
    with caplog.at_level(logging.DEBUG, logger="tiering"):
        for backend in (bad, unknown):
            for call in (lambda b=backend: b.head("k"), lambda b=backend: list(b.list()),
                         lambda b=backend: b.put("x", io.BytesIO(b"1"), size=1)):
                with pytest.raises(AccessDenied) as caught:
                    call()
                assert wrong_secret not in str(caught.value)
                assert seaweed_auth.secret_key not in str(caught.value)
    for text in (repr(bad), repr(unknown), caplog.text):
        assert wrong_secret not in text
        assert seaweed_auth.access_key not in text
    assert repr(bad) == f"S3Backend('s3://auth-bucket', endpoint={seaweed_auth.endpoint!r})"


def test_unreachable_endpoint_raises_unreachable_quickly_and_is_not_retried() -> None:
    backend = S3Backend(
        "bucket", endpoint_url="http://127.0.0.1:1", retries=1, connect_timeout=0.5,
        credentials=Credentials("key", Secret("secret")),
    )
    sleeps: list[float] = []
    retrying = RetryingBackend(backend, attempts=5, sleep=sleeps.append)
    started = time.monotonic()
    with pytest.raises(Unreachable, match=r"cannot reach S3 endpoint http://127\.0\.0\.1:1"):
        retrying.head("k")
    with pytest.raises(Unreachable):
        retrying.put("k", io.BytesIO(b"x"), size=1)
    assert time.monotonic() - started < 10
    assert sleeps == []  # permanent: our wrapper does not retry it


class FaultServer:
    """A loopback HTTP server answering every request with one canned S3 error (or a reset)."""

    def __init__(self, status: int, code: str, *, reset: bool = False) -> None:
        outer = self
        self.requests = 0

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.1 so "Expect: 100-continue" is answered; HTTP/1.0 leaves botocore waiting 1 s per PUT
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                outer.requests += 1
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if reset:
                    # SO_LINGER 0: close() sends RST, as a crashing proxy would
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    # the file objects hold the socket open: close them first so close() really closes
                    self.rfile.close()
                    self.wfile.close()
                    self.connection.close()
                    self.wfile = io.BytesIO()  # http.server flushes it after we return
                    return
                body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(0 if self.command == "HEAD" else len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        # a short poll interval: shutdown() waits for one poll (0.5 s by default)
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(
    ("status", "code", "reset", "expected"),
    [
        (503, "SlowDown", False, TransientBackendError),
        (500, "InternalError", False, TransientBackendError),
        (507, "InsufficientStorage", False, InsufficientStorage),
        (400, "EntityTooLarge", False, InsufficientStorage),
        (400, "InvalidArgument", False, PermanentBackendError),
        (0, "", True, TransientBackendError),
    ],
    ids=["503", "500", "507", "entity-too-large", "400", "connection-reset"],
)
def test_server_failures_map_to_our_errors(
    status: int, code: str, reset: bool, expected: type[BackendError]
) -> None:
    server = FaultServer(status, code, reset=reset)
    try:
        backend = S3Backend(
            "bucket", endpoint_url=server.endpoint, retries=1, connect_timeout=1, read_timeout=2,
            credentials=Credentials("key", Secret("secret")),
        )
        with pytest.raises(expected) as caught:
            backend.put("k", io.BytesIO(b"payload"), size=7)
        assert type(caught.value) is expected
        assert caught.value.backend == "s3://bucket"
        assert caught.value.__cause__ is not None  # the botocore error stays in the chain
        # retries=1: botocore tried twice for retryable failures, once for the others
        assert server.requests == (2 if expected is TransientBackendError else 1)
    finally:
        server.close()


def test_seaweedfs_answers_restore_with_a_clear_error(s3: S3Backend) -> None:
    s3.put("obj", io.BytesIO(b"x"), size=1)
    with pytest.raises(PermanentBackendError, match="does not support RestoreObject"):
        s3.request_restore("obj", days=1)


# -- the Glacier protocol (moto) -----------------------------------------------------------------


@pytest.fixture
def glacier(moto_server: Any) -> Iterator[S3Backend]:
    name = moto_server.make_bucket(f"archive-{uuid.uuid4().hex[:12]}")
    backend = backend_for(moto_server, name, "cold", storage_class="GLACIER")
    try:
        yield backend
    finally:
        backend.close()


def test_archived_object_needs_a_restore_before_it_can_be_read(glacier: S3Backend) -> None:
    glacier.put("ds/v1/f", io.BytesIO(b"frozen bytes"), size=12, metadata={DIGEST_METADATA_KEY: "abc"})

    info = glacier.head("ds/v1/f")
    assert (info.storage_class, info.archived, info.restore_in_progress) == ("GLACIER", True, False)
    assert info.metadata[DIGEST_METADATA_KEY] == "abc"
    with pytest.raises(ArchivedObject, match="restore") as caught:
        glacier.open_read("ds/v1/f")
    assert caught.value.key == "ds/v1/f"
    with pytest.raises(ArchivedObject):
        glacier.open_read("ds/v1/f", offset=2, length=3)
    assert [o.archived for o in glacier.list("ds/")] == [True]

    glacier.request_restore("ds/v1/f", days=2, retrieval_tier="Bulk")
    glacier.request_restore("ds/v1/f", days=2)  # asking again is fine

    restored = glacier.head("ds/v1/f")
    assert (restored.storage_class, restored.archived) == ("GLACIER", False)
    assert restored.restore_in_progress is False
    stream = glacier.open_read("ds/v1/f", offset=7)
    try:
        assert stream.read() == b"bytes"
    finally:
        stream.close()


def test_restore_of_an_object_that_is_not_archived_is_refused(moto_server: Any) -> None:
    name = moto_server.make_bucket(f"archive-{uuid.uuid4().hex[:12]}")
    backend = backend_for(moto_server, name)
    backend.put("hot-object", io.BytesIO(b"x"), size=1)
    with pytest.raises(PermanentBackendError, match="not in an archive storage class") as caught:
        backend.request_restore("hot-object", days=1)
    assert not isinstance(caught.value, AccessDenied)
    with pytest.raises(ObjectNotFound):
        backend.request_restore("missing", days=1)


# -- the endpoint checks what it received ----------------------------------------------------------


class FlippingProxy:
    """A TCP proxy to an S3 endpoint that inverts the first body byte of the next ``flips`` PUT requests:
    bytes damaged on the wire, after the client computed their checksum."""

    def __init__(self, upstream: str, flips: int) -> None:
        host, port = upstream.removeprefix("http://").split(":")
        self.upstream = (host, int(port))
        self.flips = flips
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(self.upstream)
            threading.Thread(target=self._pipe, args=(server, client), daemon=True).start()
            threading.Thread(target=self._requests, args=(client, server), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.close()

    def _requests(self, client: socket.socket, server: socket.socket) -> None:
        buf = b""
        with contextlib.suppress(OSError):
            while True:
                while b"\r\n\r\n" not in buf:
                    data = client.recv(65536)
                    if not data:
                        server.close()
                        return
                    buf += data
                head, buf = buf.split(b"\r\n\r\n", 1)
                lines = head.split(b"\r\n")
                length = next((int(v) for k, _, v in (ln.partition(b":") for ln in lines[1:])
                               if k.strip().lower() == b"content-length"), 0)
                while len(buf) < length:
                    data = client.recv(65536)
                    if not data:
                        break
                    buf += data
                body, buf = buf[:length], buf[length:]
                if lines[0].startswith(b"PUT ") and body and self.flips > 0:
                    self.flips -= 1
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                server.sendall(head + b"\r\n\r\n" + body)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("checksums", [("crc32", "md5"), ("md5",)], ids=["crc32", "content-md5"])
@pytest.mark.parametrize("size", [300_000, 11 * MiB], ids=["single-put", "multipart"])
def test_bytes_damaged_on_the_wire_are_refused_by_the_endpoint_and_nothing_is_stored(
    bucket: Any, size: int, checksums: tuple[str, ...],
) -> None:
    data = os.urandom(size)
    proxy = FlippingProxy(bucket.server.endpoint, flips=0)
    via_proxy = S3Backend(bucket.name, "wire", endpoint_url=proxy.endpoint, retries=0, multipart_threshold=8 * MiB,
                          part_size=5 * MiB, request_checksums=checksums,
                          credentials=Credentials(bucket.server.access_key, Secret(bucket.server.secret_key)))
    try:
        # the probe (a write with a wrong checksum) finds that SeaweedFS checks the first one; then a damaged body
        assert via_proxy.request_checksum is None
        assert via_proxy.put("first", io.BytesIO(b"ok"), size=2, content_xxh3=xxh3_bytes(b"ok")) is True
        assert via_proxy.request_checksum == checksums[0]
        proxy.flips = 1
        with pytest.raises(DigestRefused):
            via_proxy.put("damaged", io.BytesIO(data), size=size, content_xxh3=xxh3_bytes(data))
        assert proxy.flips == 0
        with pytest.raises(ObjectNotFound):
            via_proxy.head("damaged")
        assert via_proxy.abort_incomplete("") == 0  # a refused part aborted its multipart upload
        assert via_proxy.put("damaged", io.BytesIO(data), size=size, content_xxh3=xxh3_bytes(data)) is True
        stream = via_proxy.open_read("damaged")
        assert stream.read() == data
        stream.close()
    finally:
        via_proxy.close()
        proxy.close()


# -- the lean path carries the hot operations without botocore -------------------------------------


def test_delete_many_is_signed_on_the_lean_path_and_escapes_keys_in_its_xml(seaweed_auth: Any) -> None:
    """DeleteObjects goes out on the lean path (no botocore client is ever made), signed so that an endpoint
    checking signatures accepts it, with keys that need XML escaping deleted and the others kept."""
    backend = backend_for(seaweed_auth, f"lean-del-{uuid.uuid4().hex[:8]}", "tier")
    backend.ensure_bucket()
    backend.close()  # ensure_bucket made a botocore client; a fresh backend starts without one
    backend = backend_for(seaweed_auth, backend.bucket, "tier")
    odd = ["a&b.bin", "x<y>z.bin", "quote\"'.bin", "sp ace/ü.bin"]
    plain = [f"many/{i:03d}" for i in range(250)]
    kept = ["kept/one", "kept/a&b"]
    for key in [*odd, *plain, *kept]:
        backend.put(key, io.BytesIO(key.encode()), size=len(key.encode()))
    assert backend.delete_many([*odd, *plain, "never-written"]) == {}
    assert backend._client_obj is None  # nothing fell back to botocore (listing, below, does use it)
    assert [o.key for o in backend.list()] == sorted(kept)
    assert read_all(backend, "kept/a&b") == b"kept/a&b"


def test_a_multipart_upload_is_signed_on_the_lean_path(seaweed_auth: Any) -> None:
    """CreateMultipartUpload, the parts and CompleteMultipartUpload go out on the lean path, signed so that an
    endpoint checking signatures accepts them (a refusal would have made a botocore client)."""
    name = f"lean-mpu-{uuid.uuid4().hex[:8]}"
    backend_for(seaweed_auth, name, "tier").ensure_bucket()
    backend = backend_for(seaweed_auth, name, "tier", multipart_threshold=5 * MiB, part_size=5 * MiB)
    data = os.urandom(11 * MiB)
    assert backend.put("big/a b&c.bin", io.BytesIO(data), size=len(data), metadata={"xxh3": xxh3_bytes(data)},
                       content_xxh3=xxh3_bytes(data))
    assert backend._client_obj is None
    assert read_all(backend, "big/a b&c.bin") == data
    assert backend.head("big/a b&c.bin").metadata == {"xxh3": xxh3_bytes(data)}


def test_delete_objects_answers_are_read_per_key_and_an_error_document_is_an_error() -> None:
    ns = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'
    answer = (f'<?xml version="1.0" encoding="UTF-8"?><DeleteResult {ns}><Deleted><Key>p/ok</Key></Deleted>'
              "<Error><Key>p/a&amp;b</Key><Code>AccessDenied</Code><Message>no</Message></Error>"
              "<Error><Key>p/gone</Key><Code>NoSuchKey</Code><Message></Message></Error></DeleteResult>").encode()
    assert _delete_objects_errors(answer) == [("p/a&b", "AccessDenied", "no"), ("p/gone", "NoSuchKey", "")]
    assert _delete_objects_errors(b"<DeleteResult/>") == []
    with pytest.raises(ClientError) as caught:
        _delete_objects_errors(b"<Error><Code>SlowDown</Code><Message>later</Message></Error>")
    assert caught.value.response["Error"] == {"Code": "SlowDown", "Message": "later"}
    with pytest.raises(ClientError) as caught:
        _delete_objects_errors(b"<html>not xml")
    assert caught.value.response["Error"]["Code"] == "InternalError"


def test_reads_writes_and_deletes_with_static_keys_never_load_boto3(bucket: Any) -> None:
    """boto3 and botocore's client machinery cost ~0.2 s of imports per command: the operations a copy,
    a restore and a source delete make, multipart uploads included, never load them when the tier has
    static keys."""
    script = f"""
import io, sys
import xxhash
from tiering.storage.s3.backend import S3Backend
from tiering.config import Credentials, Secret
from tiering.errors import DigestRefused
b = S3Backend({bucket.name!r}, "noboto", endpoint_url={bucket.endpoint!r},
              credentials=Credentials({bucket.server.access_key!r}, Secret({bucket.server.secret_key!r})))
b.put("k/1", io.BytesIO(b"hello"), size=5, content_xxh3=None)
s = b.open_read("k/1"); assert s.read() == b"hello"; s.close()
assert b.head("k/1").size == 5
assert b.delete_many(["k/1", "k/2"]) == dict()
b.delete("k/3")
big = S3Backend({bucket.name!r}, "noboto", endpoint_url={bucket.endpoint!r}, multipart_threshold=5 * 2**20,
                part_size=5 * 2**20, credentials=b._credentials)
data = bytes(range(256)) * (11 * 4096)
assert big.put("big/ok", io.BytesIO(data), size=len(data), content_xxh3=xxhash.xxh3_128_hexdigest(data))
s = big.open_read("big/ok"); assert s.read() == data; s.close()
try:
    big.put("big/refused", io.BytesIO(data), size=len(data), content_xxh3="0" * 32)
except DigestRefused:
    pass
else:
    raise SystemExit("a body that does not hash to its digest was stored")
print("boto3" in sys.modules, "botocore.client" in sys.modules)
print(big.abort_incomplete("big/"), [o.key for o in big.list("big/")])
"""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    # the refused multipart upload was aborted on the lean path: nothing left for the sweep to abort
    assert out.stdout.splitlines() == ["False False", "0 ['big/ok']"]
