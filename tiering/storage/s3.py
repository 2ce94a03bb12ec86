"""An S3-compatible bucket as a tier (MinIO, SeaweedFS, Ceph RGW, AWS, tape gateways speaking Glacier).

Keys are relative to the backend's prefix: ``S3Backend("data", "hot")`` stores key ``a/b`` as
``s3://data/hot/a/b``. Our metadata travels as ``x-amz-meta-*`` headers, so other S3 clients see our digest.

Why the low-level client and not boto3's managed transfer: the transfer manager adds a thread and a
future per chunk and re-reads nothing we need; measured here it was the slower path. ``put`` below reads the
body strictly in order (so a hashing wrapper sees bytes in order) and uploads parts from a small bounded pool.

The hot requests (GET, HEAD, single PUT, multipart uploads and their parts, DELETE, DeleteObjects) on a
plain-http path-style endpoint go through :mod:`tiering.storage.s3_lean` (SigV4 by hand, pooled
connections, ``UNSIGNED-PAYLOAD``): botocore costs ~2 ms of GIL-holding CPU per request, which caps a
2-core machine at a few hundred small objects per second, and ~0.2 s to load and build a client. An
endpoint that answers the lean path with 403 gets the same request again from botocore (signed payload);
when that works, the backend stops using the lean path. ``lean_requests=False`` turns it off.

This is the only module that imports botocore exceptions; every vendor error leaves it translated to the
tree in :mod:`tiering.errors`, with the cause chained (``raise ... from exc``):

==============================================  ============================================
botocore                                        ours
==============================================  ============================================
404, ``NoSuchKey``                              ``ObjectNotFound``
``NoSuchBucket``                                ``PermanentBackendError`` naming the bucket
403, ``InvalidAccessKeyId``, ``Signature...``   ``AccessDenied``
``InvalidObjectState`` (GET of an archived)     ``ArchivedObject`` (says a restore is needed)
``EndpointConnectionError``, connect timeout    ``Unreachable`` (names the endpoint)
5xx, throttling, read timeout, reset            ``TransientBackendError``
``EntityTooLarge``, 507, quota / disk full      ``InsufficientStorage``
anything else                                   ``PermanentBackendError``
==============================================  ============================================

Credentials never appear in ``repr``, messages or our logs. botocore logs request headers (and with
them the access key id and signatures) at DEBUG: nothing here lowers its level; keep it at INFO or above.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import io
import logging
import random
import re
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO, Final
from urllib.parse import urlparse
from xml.etree import ElementTree
from xml.sax.saxutils import escape as xml_escape

import xxhash
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ProxyConnectionError,
    ReadTimeoutError,
    SSLError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from tiering.config import Credentials, TierConfig, TransferConfig
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
from tiering.storage.base import (
    IncompleteUpload,
    Location,
    ObjectInfo,
    ReadStream,
    check_key,
    delete_each,
    read_up_to,
)
from tiering.storage.s3_lean import (
    MAX_BACKOFF,
    RETRY_CODES,
    LeanConnectionError,
    LeanHTTPError,
    LeanS3Client,
    StaticKeys,
)

log = logging.getLogger(__name__)

MiB: Final = 2**20
#: S3 limits: at most 10 000 parts; every part but the last at least 5 MiB
MAX_PARTS: Final = 10_000
MIN_PART_SIZE: Final = 5 * MiB
#: the largest object a single PutObject may carry
MAX_SINGLE_PUT: Final = 5 * 2**30

#: storage classes whose objects must be restored before a GET (GLACIER_IR is instant: not listed)
ARCHIVE_CLASSES: Final = frozenset({"GLACIER", "DEEP_ARCHIVE"})

_NOT_FOUND_CODES: Final = frozenset({"NoSuchKey", "404", "NotFound"})
_S3_XMLNS: Final = "http://s3.amazonaws.com/doc/2006-03-01/"
_DENIED_CODES: Final = frozenset({
    "AccessDenied", "403", "Forbidden", "InvalidAccessKeyId", "SignatureDoesNotMatch",
    "ExpiredToken", "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem",
})
_FULL_CODES: Final = frozenset({
    "EntityTooLarge", "InsufficientStorage", "XMinioStorageFull", "QuotaExceeded",
    "XMinioAdminBucketQuotaExceeded", "StorageFull",
})
_TRANSIENT_CODES: Final = frozenset({
    "InternalError", "ServiceUnavailable", "SlowDown", "Throttling", "ThrottlingException",
    "RequestTimeout", "OperationAborted", "XMinioServerNotInitialized",
})
_ONGOING_RE: Final = re.compile(r'ongoing-request\s*=\s*"(true|false)"', re.IGNORECASE)

# Building a client from a new boto3 Session re-parses botocore's S3 model (~0.2 s of CPU here); clients
# made from one Session share the parsed model. Credentials are given per client, never kept on the
# Session, so backends with different keys share nothing but the model. Session.client() is not
# thread-safe: the lock serialises client creation (once per backend). boto3 itself (and botocore's
# client machinery, ~0.2 s of imports) is loaded only then: the lean path with static keys never needs it.
_shared_session: Any = None
_shared_session_lock = threading.Lock()

#: returned by ``_lean`` when botocore must make the request instead
_USE_BOTOCORE: Final = object()


#: request checksums an endpoint may check against the body it receives, in the order they are tried
WIRE_CHECKSUMS: Final = ("crc32", "md5")


def _checksum_headers(algorithm: str, data: bytes) -> dict[str, str]:
    """The header carrying ``data``'s checksum: CRC32 (~7 GB/s here) or MD5 (~0.8 GB/s); none for ""."""
    if algorithm == "crc32":
        return {"x-amz-checksum-crc32": base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()}
    if algorithm == "md5":
        return {"content-md5": base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()}
    return {}


def _checksum_args(headers: Mapping[str, str]) -> dict[str, str]:
    """The same checksum as botocore parameters."""
    names = {"x-amz-checksum-crc32": "ChecksumCRC32", "content-md5": "ContentMD5"}
    return {names[h]: v for h, v in headers.items()}


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _delete_objects_xml(keys: Iterable[str]) -> bytes:
    """The body of a quiet DeleteObjects request for ``keys`` (full object keys)."""
    objects = "".join(f"<Object><Key>{xml_escape(k)}</Key></Object>" for k in keys)
    return (f'<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="{_S3_XMLNS}"><Quiet>true</Quiet>'
            f"{objects}</Delete>").encode()


def _complete_multipart_xml(parts: Iterable[Mapping[str, Any]]) -> bytes:
    """The body of a CompleteMultipartUpload request for ``parts`` (PartNumber, ETag, ChecksumCRC32 if any)."""
    items = "".join(
        f"<Part><PartNumber>{int(p['PartNumber'])}</PartNumber><ETag>{xml_escape(str(p['ETag']))}</ETag>"
        + (f"<ChecksumCRC32>{xml_escape(str(p['ChecksumCRC32']))}</ChecksumCRC32>" if "ChecksumCRC32" in p else "")
        + "</Part>"
        for p in parts
    )
    return (f'<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUpload xmlns="{_S3_XMLNS}">{items}'
            "</CompleteMultipartUpload>").encode()


def _s3_error(code: str, message: str, operation: str = "DeleteObjects") -> ClientError:
    """An S3 error code and message read from an answer's document, as botocore would raise them."""
    return ClientError({"Error": {"Code": code, "Message": message}, "ResponseMetadata": {}}, operation)


def _xml_local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _xml_text(node: ElementTree.Element, name: str) -> str:
    """The text of ``node``'s first child named ``name`` (any namespace), or ""."""
    for child in node:
        if _xml_local(child.tag) == name:
            return child.text or ""
    return ""


def _answer_root(document: bytes, operation: str) -> ElementTree.Element:
    """The root element of an XML answer. An error document (some servers send those with status 200, after
    whitespace sent to keep the connection open) or no XML at all raises ``ClientError``."""
    try:
        root = ElementTree.fromstring(document.lstrip())
    except ElementTree.ParseError as exc:
        raise _s3_error("InternalError", f"unreadable {operation} answer: {exc}", operation) from exc
    if _xml_local(root.tag) == "Error":
        raise _s3_error(_xml_text(root, "Code"), _xml_text(root, "Message"), operation)
    return root


def _delete_objects_errors(document: bytes) -> list[tuple[str, str, str]]:
    """(key, code, message) of each ``Error`` in a DeleteObjects answer. An answer that is an error document
    itself or no XML at all raises ``ClientError``."""
    return _errors_in(_answer_root(document, "DeleteObjects"))


def _errors_in(root: ElementTree.Element) -> list[tuple[str, str, str]]:
    """(key, code, message) of each ``Error`` under a DeleteObjects answer's root."""
    return [(_xml_text(node, "Key"), _xml_text(node, "Code"), _xml_text(node, "Message"))
            for node in root if _xml_local(node.tag) == "Error"]


class _Prefixed:
    """Bytes already read from ``body`` (to choose single vs multipart) followed by the rest of it."""

    def __init__(self, head: bytes, body: BinaryIO | ReadStream) -> None:
        self._head = head
        self._body = body

    def read(self, size: int = -1, /) -> bytes:
        if self._head:
            if size < 0 or size >= len(self._head):
                out, self._head = self._head, b""
                return out
            out, self._head = self._head[:size], self._head[size:]
            return out
        return self._body.read(size)

    def close(self) -> None:
        """The caller owns the body; closing it is theirs to do."""


class S3ReadStream:
    """The body of a GET; read errors (timeouts, resets mid-body) come out as our errors, not urllib3's."""

    def __init__(self, body: Any, backend: S3Backend, key: str) -> None:
        self._body = body
        self._backend = backend
        self._key = key

    def read(self, size: int = -1, /) -> bytes:
        try:
            data: bytes = self._body.read() if size is None or size < 0 else self._body.read(size)
        except (BotoCoreError, OSError, LeanConnectionError) as exc:
            raise TransientBackendError(
                f"reading {self._key} failed mid-stream: {type(exc).__name__}",
                backend=self._backend.url,
                key=self._key,
            ) from exc
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._body.close()

    def __enter__(self) -> S3ReadStream:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


#: keys per DeleteObjects request (the S3 maximum)
DELETE_OBJECTS_MAX = 1000
#: DeleteObjects requests at once
DELETE_REQUESTS = 4
#: the fewest keys a DeleteObjects request is given when a batch is spread over DELETE_REQUESTS requests
DELETE_SPREAD_MIN = 100
#: single deletes at once where DeleteObjects is not supported
SINGLE_DELETE_STREAMS = 8
_DIGEST_CODES: Final = frozenset({"BadDigest", "InvalidDigest", "XAmzContentChecksumMismatch"})
_BATCH_DELETE_UNSUPPORTED: Final = frozenset({"NotImplemented", "MethodNotAllowed", "501"})


class _BatchDeleteUnsupported(Exception):
    """The endpoint does not implement DeleteObjects."""


class S3Backend:
    """Objects in ``bucket`` under ``prefix`` on an S3-compatible endpoint.

    Thread-safe: one botocore client (they are thread-safe) is created lazily and shared by all threads;
    its pool holds ``max_pool_connections`` connections, which should cover ``workers * part_workers``.

    Sizes are bytes, timeouts seconds. ``retries`` counts the retries after the first attempt of a single
    request (connection errors and timeouts, 5xx, throttling); retrying a whole ``put`` is
    :class:`~tiering.storage.wrappers.RetryingBackend`'s job. Both request paths (the lean one and botocore)
    open connections within ``connect_timeout``, wait ``read_timeout`` for an answer, and give each request
    ``request_timeout`` plus ``seconds_per_mib`` per MiB of its body in all, retries included: no retry starts
    after that (on botocore's path an attempt already under way may still take its ``read_timeout``).
    ``storage_class`` (e.g. ``"GLACIER"``) is sent with every write; None leaves the server's default.
    ``request_checksums`` are the checksums a checked ``put`` may have the endpoint verify, in order of
    preference (the first one the endpoint enforces is used).
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        credentials: Credentials | None = None,
        verify_tls: bool | str = True,
        addressing_style: str = "path",
        multipart_threshold: int = 64 * MiB,
        part_size: int = 8 * MiB,
        part_workers: int = 4,
        max_pool_connections: int = 32,
        retries: int = 4,
        storage_class: str | None = None,
        connect_timeout: float = 5,
        read_timeout: float = 20,
        request_timeout: float = 30,
        seconds_per_mib: float = 1.0,
        lean_requests: bool = True,
        request_checksums: Sequence[str] = WIRE_CHECKSUMS,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 backend needs a bucket")
        if part_size < MIN_PART_SIZE:
            raise ValueError(f"part_size must be at least {MIN_PART_SIZE} bytes (the S3 minimum)")
        if not 1 <= multipart_threshold <= MAX_SINGLE_PUT:
            raise ValueError(f"multipart_threshold must be between 1 and {MAX_SINGLE_PUT} bytes")
        if part_workers < 1:
            raise ValueError("part_workers must be at least 1")
        if not set(request_checksums) <= set(WIRE_CHECKSUMS):
            raise ValueError(f"request_checksums: each one of {', '.join(WIRE_CHECKSUMS)}")
        self.bucket = bucket
        stripped = prefix.strip("/")
        if stripped:
            check_key(stripped)
        self.prefix = f"{stripped}/" if stripped else ""
        self.url = f"s3://{bucket}/{stripped}" if stripped else f"s3://{bucket}"
        self.endpoint_url = endpoint_url
        self.region = region
        self.storage_class = storage_class
        self.multipart_threshold = multipart_threshold
        self.part_size = part_size
        self.part_workers = part_workers
        self._credentials = credentials
        self._verify_tls = verify_tls
        #: botocore.config.Config arguments; the Config is built with the client, where botocore is loaded
        self._botocore_options: dict[str, Any] = dict(
            region_name=region,
            signature_version="s3v4",
            s3={"addressing_style": addressing_style},
            # botocore >= 1.36 sends CRC checksums by default; several S3-compatible servers reject them
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # botocore's own retries are off: _botocore_retry decides them, within each request's deadline
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=max_pool_connections,
            tcp_keepalive=True,
        )
        self._client_obj: Any = None
        self._client_lock = threading.Lock()
        self._retries = retries
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._request_timeout = request_timeout
        self._seconds_per_mib = seconds_per_mib
        self._max_pool_connections = max_pool_connections
        # the lean path needs what it can sign for by hand: plain http, path-style, a custom endpoint
        self._lean_wanted = (
            lean_requests and addressing_style == "path"
            and (endpoint_url or "").lower().startswith("http://")
        )
        self._lean_client: LeanS3Client | None = None
        self._chain_credentials: Any = None
        self._lean_refused = threading.local()
        #: set when the endpoint answers DeleteObjects with "not implemented": single deletes from then on
        self._no_batch_delete = False
        #: the request checksum the endpoint enforces ("crc32", "md5" or "" for none); None until probed
        self._wire_check: str | None = None
        self._request_checksums = tuple(request_checksums)
        self._wire_probe_lock = threading.Lock()

    @classmethod
    def from_config(cls, name: str, tier: TierConfig, transfer: TransferConfig) -> S3Backend:
        """Build the backend of tier ``name`` (backend URL ``s3://bucket/prefix``).

        Credentials are resolved here (``ConfigError`` when the named source is missing). A ``glacier``
        archive tier writes with storage class ``GLACIER``.
        """
        parsed = urlparse(tier.backend)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"tier {name!r}: expected s3://bucket/prefix, got {tier.backend!r}")
        credentials = tier.credentials.resolve(name) if tier.credentials is not None else None
        return cls(
            parsed.netloc,
            parsed.path.strip("/"),
            endpoint_url=tier.endpoint,
            region=tier.region,
            credentials=credentials,
            verify_tls=tier.verify_tls,
            addressing_style=tier.addressing_style,
            multipart_threshold=transfer.multipart_threshold,
            part_size=transfer.part_size,
            part_workers=transfer.part_workers,
            # every member copy may run part_workers requests at once, plus one for its reads
            max_pool_connections=max(32, transfer.workers * (transfer.part_workers + 1)),
            retries=transfer.retries,
            connect_timeout=transfer.connect_timeout_seconds,
            read_timeout=transfer.read_timeout_seconds,
            request_timeout=transfer.request_timeout_seconds,
            seconds_per_mib=transfer.seconds_per_mib,
            lean_requests=transfer.lean_requests,
            storage_class="GLACIER" if tier.archive == "glacier" else None,
        )

    def __repr__(self) -> str:
        return f"S3Backend({self.url!r}, endpoint={self.endpoint_url or 'aws'!r})"

    # -- plumbing ---------------------------------------------------------------------------------

    def _client(self) -> Any:
        client = self._client_obj
        if client is not None:
            return client
        global _shared_session
        with self._client_lock:
            if self._client_obj is None:
                import boto3
                from botocore.config import Config as BotocoreConfig

                creds = self._credentials
                with _shared_session_lock:
                    if _shared_session is None:
                        _shared_session = boto3.session.Session()
                    self._client_obj = _shared_session.client(
                        "s3",
                        region_name=self.region,
                        endpoint_url=self.endpoint_url,
                        verify=self._verify_tls,
                        config=BotocoreConfig(**self._botocore_options),
                        # None for all three means boto3's default chain (env, ~/.aws, instance role)
                        aws_access_key_id=creds.access_key_id if creds else None,
                        aws_secret_access_key=creds.secret_access_key.reveal() if creds else None,
                        aws_session_token=(
                            creds.session_token.reveal() if creds and creds.session_token else None
                        ),
                    )
                    events = self._client_obj.meta.events
                    events.register("before-call.s3", self._start_deadline)
                    events.register_first("needs-retry.s3", self._botocore_retry)
            return self._client_obj

    def _start_deadline(self, params: Any = None, context: Any = None, **_: Any) -> None:
        """botocore's ``before-call``: the request's deadline, from the size of the body it sends."""
        body = params.get("body") if isinstance(params, dict) else None
        size = len(body) if isinstance(body, bytes | bytearray | memoryview) else 0
        if isinstance(context, dict):
            context["tiering_deadline"] = time.monotonic() + self._request_budget(size)

    def _request_budget(self, nbytes: int) -> float:
        return self._request_timeout + nbytes / MiB * self._seconds_per_mib

    def _botocore_retry(
        self, attempts: int = 1, response: Any = None, caught_exception: Any = None, request_dict: Any = None,
        **_: Any,
    ) -> float | None:
        """botocore's ``needs-retry``: seconds to wait before the next attempt, None for no retry.

        What the lean path retries (connection failures and timeouts, 5xx, 429, throttling codes), up to
        ``retries`` times, and never an attempt or a wait past the request's deadline.
        """
        if caught_exception is not None:
            retryable = isinstance(caught_exception, BotoConnectionError | HTTPClientError)
        elif response is not None:
            status = int(getattr(response[0], "status_code", 0) or 0)
            code = str((response[1] or {}).get("Error", {}).get("Code", "")) if len(response) > 1 else ""
            retryable = status in (500, 502, 503, 504, 429) or code in RETRY_CODES
        else:
            retryable = False
        if not retryable or attempts > self._retries:
            return None
        pause = random.random() * min(MAX_BACKOFF, 2.0 ** (attempts - 1))
        context = request_dict.get("context") if isinstance(request_dict, dict) else None
        deadline = context.get("tiering_deadline") if isinstance(context, dict) else None
        if deadline is not None and time.monotonic() + pause >= deadline:
            return None
        return pause

    @property
    def endpoint(self) -> str:
        """The endpoint URL requests go to (AWS's regional one when none was configured)."""
        if self.endpoint_url:
            return self.endpoint_url
        return str(self._client().meta.endpoint_url)

    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    def _call(self, op: str, key: str, **kwargs: Any) -> Any:
        """Run one client operation, translating every botocore error into ours."""
        try:
            return getattr(self._client(), op)(Bucket=self.bucket, **kwargs)
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, op=op, key=key) from exc

    # -- the lean request path ----------------------------------------------------------------------

    def _lean_keys(self) -> StaticKeys | None:
        creds = self._credentials
        if creds is not None:
            token = creds.session_token.reveal() if creds.session_token else None
            return StaticKeys(creds.access_key_id, creds.secret_access_key.reveal(), token)
        chain = self._chain_credentials
        if chain is None:
            return None
        frozen = chain.get_frozen_credentials()  # refreshes temporary credentials when they near expiry
        if not frozen.access_key or not frozen.secret_key:
            return None
        return StaticKeys(frozen.access_key, frozen.secret_key, frozen.token)

    def _lean(self) -> LeanS3Client | None:
        """The lean client, or None when this backend uses botocore only."""
        if not self._lean_wanted:
            return None
        client = self._lean_client
        if client is not None:
            return client
        if self._credentials is None and self._chain_credentials is None:
            self._client()  # makes the shared session, whose default chain finds the credentials
            assert _shared_session is not None
            self._chain_credentials = _shared_session.get_credentials()
        with self._client_lock:
            if self._lean_client is None:
                assert self.endpoint_url is not None
                self._lean_client = LeanS3Client(
                    self.endpoint_url, region=self.region, keys_source=self._lean_keys,
                    attempts=self._retries + 1, connect_timeout=self._connect_timeout,
                    read_timeout=self._read_timeout, max_idle=self._max_pool_connections,
                    request_timeout=self._request_timeout, seconds_per_mib=self._seconds_per_mib,
                )
            return self._lean_client

    def _via_lean(self, op: str, key: str, send: Any) -> Any:
        """``send(lean_client)`` with errors translated like a botocore call's, or ``_USE_BOTOCORE``.

        A 403 is not translated here: wrong keys, a bucket policy, an archived object, or an endpoint that
        refuses unsigned payloads all look alike, so botocore repeats the request (signed payload) and its
        answer counts; see :meth:`_after_refusal`.
        """
        lean = self._lean()
        if lean is None:
            return _USE_BOTOCORE
        self._lean_refused.refused = False
        try:
            return send(lean)
        except LeanHTTPError as exc:
            if exc.status == 403:
                self._lean_refused.refused = True
                return _USE_BOTOCORE
            err = ClientError(
                {"Error": {"Code": exc.code, "Message": exc.message},
                 "ResponseMetadata": {"HTTPStatusCode": exc.status, "HTTPHeaders": exc.headers}},
                op,
            )
            raise self._translate(err, op=op, key=key) from err
        except LeanConnectionError as exc:
            where = self.endpoint_url or ""
            cause: Exception
            if exc.kind == "connect":
                cause = EndpointConnectionError(endpoint_url=where, error=str(exc))
            elif exc.kind == "timeout":
                cause = ReadTimeoutError(endpoint_url=where, error=str(exc))
            else:
                cause = ConnectionClosedError(endpoint_url=where, error=str(exc))
            raise self._translate(cause, op=op, key=key) from cause
        except PermissionError:
            return _USE_BOTOCORE  # no credentials at hand: botocore raises the proper error

    def _after_refusal(self) -> None:
        """botocore succeeded where the lean path got a 403: this endpoint wants signed payloads."""
        if getattr(self._lean_refused, "refused", False):
            self._lean_refused.refused = False
            if self._lean_wanted:
                self._lean_wanted = False
                log.info("%s refuses unsigned-payload requests; using botocore for every request", self.url)

    def _translate(self, exc: Exception, *, op: str, key: str) -> BackendError:
        where = f"s3://{self.bucket}/{self.prefix}{key}" if key else f"s3://{self.bucket}"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            message = str(error.get("Message", "")) or code
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            # codes first: moto answers InvalidObjectState with 403, which is not a credentials problem
            if code == "InvalidObjectState":
                if op == "restore_object":
                    return PermanentBackendError(
                        f"cannot restore {where}: it is not in an archive storage class ({message})",
                        backend=self.url, key=key,
                    )
                storage_class = error.get("StorageClass") or "an archive storage class"
                return ArchivedObject(
                    f"{where} is in {storage_class}: it needs a restore before it can be read "
                    f"(`tiering restore NAME --to TIER`, or RestoreObject)",
                    backend=self.url, key=key,
                )
            if code in _DIGEST_CODES:
                return DigestRefused(f"{op} {where}: the store refused the body: {message}",
                                     backend=self.url, key=key)
            if code == "NoSuchUpload":
                return PermanentBackendError(f"{op} {where}: the multipart upload is gone ({message})",
                                             backend=self.url, key=key)
            if code == "NoSuchBucket":
                return PermanentBackendError(
                    f"bucket {self.bucket!r} does not exist at {self._endpoint_for_messages()} "
                    f"(`tiering init` creates it)",
                    backend=self.url, key=key,
                )
            if code in _NOT_FOUND_CODES or status == 404:
                if key:
                    return ObjectNotFound(key, backend=self.url)
                return PermanentBackendError(f"{op}: {where} not found ({code})", backend=self.url)
            if code in _FULL_CODES or status == 507 or "no space" in message.lower():
                return InsufficientStorage(f"{op} {where}: destination full ({code}: {message})",
                                           backend=self.url, key=key)
            if code in _TRANSIENT_CODES or status >= 500 or status == 429:
                return TransientBackendError(f"{op} {where}: {code or status}: {message}",
                                             backend=self.url, key=key)
            if code in _DENIED_CODES or status == 403:
                # SeaweedFS also answers a PUT into a missing bucket with AccessDenied
                return AccessDenied(
                    f"access denied ({code}) for {op} on {where} at {self._endpoint_for_messages()}: "
                    f"check the tier's credentials and that the bucket exists",
                    backend=self.url, key=key,
                )
            if code == "MethodNotAllowed" and op == "restore_object":
                return PermanentBackendError(
                    f"{self._endpoint_for_messages()} does not support RestoreObject "
                    f"(not an archive endpoint)",
                    backend=self.url, key=key,
                )
            return PermanentBackendError(f"{op} {where}: {code or status}: {message}",
                                         backend=self.url, key=key)
        if isinstance(exc, SSLError):
            return Unreachable(
                f"TLS error talking to S3 endpoint {self._endpoint_for_messages()} "
                f"(check verify_tls / the CA bundle)",
                backend=self.url, key=key,
            )
        if isinstance(exc, EndpointConnectionError | ConnectTimeoutError | ProxyConnectionError):
            return Unreachable(f"cannot reach S3 endpoint {self._endpoint_for_messages()}",
                               backend=self.url, key=key)
        if isinstance(exc, HTTPClientError | ConnectionClosedError | IncompleteReadError):
            return TransientBackendError(
                f"{op} {where}: connection problem with {self._endpoint_for_messages()} "
                f"({type(exc).__name__})",
                backend=self.url, key=key,
            )
        if isinstance(exc, NoCredentialsError | PartialCredentialsError):
            return AccessDenied(f"no usable S3 credentials for {self.url}: configure the tier's credentials",
                                backend=self.url, key=key)
        return PermanentBackendError(f"{op} {where}: {type(exc).__name__}: {exc}", backend=self.url, key=key)

    def _endpoint_for_messages(self) -> str:
        if self.endpoint_url:
            return self.endpoint_url
        client = self._client_obj
        return str(client.meta.endpoint_url) if client is not None else f"AWS S3 ({self.region})"

    def _write_args(self, metadata: Mapping[str, str] | None) -> dict[str, Any]:
        args: dict[str, Any] = {"Metadata": dict(metadata or {})}
        if self.storage_class:
            args["StorageClass"] = self.storage_class
        return args

    # -- the Backend protocol ---------------------------------------------------------------------

    def put(
        self,
        key: str,
        body: BinaryIO | ReadStream,
        *,
        size: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_xxh3: str | None = None,
    ) -> bool:
        """Store ``body`` (read to EOF, strictly in order) under ``key``; overwrites atomically.

        Below ``multipart_threshold`` bytes (known ``size``, or an unknown size that turns out small) the
        body is read into memory and sent as one PutObject; a body longer than its announced ``size``
        is not buffered past the threshold but goes multipart. Otherwise a multipart upload: parts of
        ``part_size`` are read one after another and uploaded by at most ``part_workers`` threads, with
        never more than ``part_workers + 1`` parts in memory. Any failure, KeyboardInterrupt included,
        aborts the upload (after in-flight parts settle), so no incomplete upload is left behind.

        With ``content_xxh3``, where the endpoint enforces a request checksum (learnt once per backend by
        probe writes it must refuse: ``x-amz-checksum-crc32`` first, ``Content-MD5`` where that is not
        checked): what is read from ``body`` is hashed (xxh3-128) and every request carries the checksum of
        its bytes, which the endpoint checks against what it received; a body that does not hash to
        ``content_xxh3`` is refused before anything is stored (before the PutObject, or instead of
        completing the multipart upload). Returns whether the write was checked that way.
        """
        self._full(key)  # an unsafe key fails here, before any byte is read
        wire = self._enforced_checksum() if content_xxh3 is not None else ""
        hasher = xxhash.xxh3_128() if wire else None
        head = b""
        if size is None or size < self.multipart_threshold:
            head = read_up_to(body, self.multipart_threshold)
            if len(head) < self.multipart_threshold:
                if hasher is not None:
                    hasher.update(head)
                    self._check_content(key, hasher, content_xxh3)
                self._put_single(key, head, metadata, _checksum_headers(wire, head))
                return bool(wire)
            size = None  # unknown, or the hint was wrong: part sizes cannot rely on it
        self._put_multipart(key, _Prefixed(head, body), size=size, metadata=metadata, hasher=hasher,
                            content_xxh3=content_xxh3, wire=wire)
        return bool(wire)

    def _check_content(self, key: str, hasher: Any, content_xxh3: str | None) -> None:
        if hasher.hexdigest() != content_xxh3:
            raise DigestRefused(f"{key}: the body does not hash to {content_xxh3}; nothing was stored",
                                backend=self.url, key=key)

    def _put_single(
        self, key: str, data: bytes, metadata: Mapping[str, str] | None, checksum: Mapping[str, str],
        *, storage_class: bool = True,
    ) -> None:
        full = self._full(key)
        headers = {f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}
        args = self._write_args(metadata)
        if not storage_class:
            args.pop("StorageClass", None)
        elif self.storage_class:
            headers["x-amz-storage-class"] = self.storage_class
        headers.update(checksum)
        args.update(_checksum_args(checksum))
        done = self._via_lean(
            "put_object", key, lambda c: c.request("PUT", self.bucket, full, headers=headers, body=data)
        )
        if done is _USE_BOTOCORE:
            self._call("put_object", key, Key=full, Body=data, **args)
            self._after_refusal()

    @property
    def request_checksum(self) -> str | None:
        """The checksum every write request carries for the endpoint to check ("crc32", "md5"), "" when the
        endpoint checks none, None until a checked write has asked."""
        return self._wire_check

    def _enforced_checksum(self) -> str:
        """The request checksum the endpoint checks against the body it receives: "crc32", "md5" or ""."""
        known = self._wire_check
        if known is not None:
            return known
        with self._wire_probe_lock:
            if self._wire_check is None:
                self._wire_check = self._probe_checksums()
            return self._wire_check or ""

    def _probe_checksums(self) -> str | None:
        """Write a small object with a wrong checksum, CRC32 then MD5: the first refused is enforced.
        None when a probe failed for another reason (asked again next time)."""
        body = b"request checksum probe"
        for algorithm in self._request_checksums:
            key = f"_tiering/checksum-probe-{uuid.uuid4().hex}"
            wrong = _checksum_headers(algorithm, body + b"!")
            try:
                self._put_single(key, body, None, wrong, storage_class=False)
            except DigestRefused:
                return algorithm
            except BackendError as exc:
                log.debug("%s: %s probe failed (%s); verifying by reading back for now", self.url, algorithm, exc)
                return None
            with contextlib.suppress(BackendError):
                self.delete(key)
        log.info("%s checks neither x-amz-checksum-crc32 nor Content-MD5: copies here are verified by reading "
                 "them back", self.url)
        return ""

    def _put_multipart(
        self, key: str, body: _Prefixed, *, size: int | None, metadata: Mapping[str, str] | None,
        hasher: Any = None, content_xxh3: str | None = None, wire: str = "",
    ) -> None:
        full = self._full(key)
        part_size = self.part_size
        if size is not None:
            part_size = max(part_size, -(-size // MAX_PARTS))
        upload_id = self._create_multipart(key, full, metadata, wire)
        pool = ThreadPoolExecutor(max_workers=self.part_workers, thread_name_prefix="tiering-s3-part")
        in_flight: set[Future[dict[str, Any]]] = set()
        parts: list[dict[str, Any]] = []
        try:
            number = 0
            eof = False
            while not eof:
                data = read_up_to(body, part_size)
                eof = len(data) < part_size
                if not data and number > 0:
                    break
                number += 1
                if number > MAX_PARTS:
                    raise PermanentBackendError(
                        f"{key}: more than {MAX_PARTS} parts of {part_size} bytes; "
                        f"pass size= or raise part_size",
                        backend=self.url, key=key,
                    )
                if hasher is not None:
                    hasher.update(data)  # in order, on this thread; each part's checksum is taken where it is sent
                in_flight.add(pool.submit(self._upload_part, key, upload_id, number, data, wire))
                del data  # only the future holds the part now
                if len(in_flight) >= self.part_workers:
                    done, in_flight = wait(in_flight, return_when=FIRST_COMPLETED)
                    parts.extend(f.result() for f in done)
            done, in_flight = wait(in_flight)
            parts.extend(f.result() for f in done)
            parts.sort(key=lambda p: int(p["PartNumber"]))
            if hasher is not None:
                self._check_content(key, hasher, content_xxh3)  # refused: the upload is aborted below
            self._complete_multipart(key, full, upload_id, parts)
        except BaseException:
            # let running parts settle first: a part landing after the abort could recreate the upload
            pool.shutdown(wait=True, cancel_futures=True)
            self._abort_quietly(key, upload_id)
            raise
        finally:
            pool.shutdown(wait=True)

    def _create_multipart(self, key: str, full: str, metadata: Mapping[str, str] | None, wire: str) -> str:
        """Start a multipart upload of ``full``; returns its upload id."""
        headers = {f"x-amz-meta-{k}": v for k, v in (metadata or {}).items()}
        if self.storage_class:
            headers["x-amz-storage-class"] = self.storage_class
        if wire == "crc32":  # declared up front: the parts' CRCs then travel with CompleteMultipartUpload
            headers["x-amz-checksum-algorithm"] = "CRC32"
        root = self._lean_document("create_multipart_upload", key, "POST", full, query={"uploads": ""},
                                   headers=headers)
        if root is None:
            create_args = self._write_args(metadata)
            if wire == "crc32":
                create_args["ChecksumAlgorithm"] = "CRC32"
            created = self._call("create_multipart_upload", key, Key=full, **create_args)
            self._after_refusal()
            return str(created["UploadId"])
        upload_id = _xml_text(root, "UploadId")
        if not upload_id:
            raise PermanentBackendError(f"{key}: the endpoint started a multipart upload without naming it "
                                        "(no UploadId in its answer)", backend=self.url, key=key)
        return upload_id

    def _complete_multipart(self, key: str, full: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        root = self._lean_document(
            "complete_multipart_upload", key, "POST", full, query={"uploadId": upload_id},
            headers={"content-type": "application/xml"}, body=_complete_multipart_xml(parts),
        )
        if root is None:
            self._call("complete_multipart_upload", key, Key=full, UploadId=upload_id,
                       MultipartUpload={"Parts": parts})
            self._after_refusal()

    def _lean_document(
        self, op: str, key: str, method: str, full: str, *, query: Mapping[str, str],
        headers: Mapping[str, str] | None = None, body: bytes | None = None,
    ) -> ElementTree.Element | None:
        """Send a request whose answer is an XML document on the lean path and return the document's root;
        None when botocore must send it. An error document sent with status 200 is an error."""
        answer = self._via_lean(op, key, lambda c: c.request(method, self.bucket, full, query=query,
                                                             headers=headers, body=body, stream=True))
        if answer is _USE_BOTOCORE:
            return None
        return self._read_document(answer, op=op, key=key, operation=op)

    def _read_document(self, answer: Any, *, op: str, key: str, operation: str) -> ElementTree.Element:
        """Read a lean answer's XML document to its end and return its root, errors translated as ``op``'s."""
        try:
            document = answer.read()
        except LeanConnectionError as exc:
            cause = ConnectionClosedError(endpoint_url=self.endpoint_url or "", error=str(exc))
            raise self._translate(cause, op=op, key=key) from cause
        finally:
            answer.close()
        try:
            return _answer_root(document, operation)
        except ClientError as exc:
            raise self._translate(exc, op=op, key=key) from exc

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes, wire: str) -> dict[str, Any]:
        full = self._full(key)
        # zlib and hashlib release the GIL on large buffers: the parts' checksums run in parallel
        checksum = _checksum_headers(wire, data)
        answer = self._via_lean(
            "upload_part", key,
            lambda c: c.request("PUT", self.bucket, full, query={"partNumber": str(number), "uploadId": upload_id},
                                headers=dict(checksum), body=data),
        )
        part: dict[str, Any] = {"PartNumber": number}
        if "x-amz-checksum-crc32" in checksum:
            part["ChecksumCRC32"] = checksum["x-amz-checksum-crc32"]
        if answer is not _USE_BOTOCORE:
            part["ETag"] = answer.headers["etag"]
            return part
        resp = self._call("upload_part", key, Key=full, UploadId=upload_id, PartNumber=number, Body=data,
                          **_checksum_args(checksum))
        self._after_refusal()
        part["ETag"] = resp["ETag"]
        return part

    def _abort_quietly(self, key: str, upload_id: str) -> None:
        full = self._full(key)
        try:
            answer = self._via_lean("abort_multipart_upload", key, lambda c: c.request(
                "DELETE", self.bucket, full, query={"uploadId": upload_id}))
            if answer is _USE_BOTOCORE:
                self._call("abort_multipart_upload", key, Key=full, UploadId=upload_id)
                self._after_refusal()
        except BackendError as exc:
            # the original failure matters more; abort_incomplete() sweeps what is left
            log.warning("could not abort multipart upload of %s on %s: %s", key, self.url, exc)

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        """Stream ``key`` from ``offset`` for ``length`` bytes (a ranged GET); see the protocol.

        A range past the end of the object reads as empty, as on the other backends.
        Raises ``ObjectNotFound``, or ``ArchivedObject`` when the object needs a restore first.
        """
        full = self._full(key)
        if offset < 0 or (length is not None and length < 0):
            raise ValueError("offset and length must not be negative")
        if length == 0:
            self.head(key)  # an empty range cannot be expressed in HTTP; still report a missing object
            return io.BytesIO(b"")
        args: dict[str, Any] = {"Key": full}
        if offset or length is not None:
            end = "" if length is None else str(offset + length - 1)
            args["Range"] = f"bytes={offset}-{end}"
        try:
            answer = self._via_lean(
                "get_object", key,
                lambda c: c.request("GET", self.bucket, full,
                                    headers={"range": args["Range"]} if "Range" in args else None, stream=True),
            )
        except BackendError as exc:
            if isinstance(exc.__cause__, ClientError) and _error_code(exc.__cause__) == "InvalidRange":
                self.head(key)
                return io.BytesIO(b"")
            raise
        if answer is not _USE_BOTOCORE:
            return S3ReadStream(answer, self, key)
        try:
            resp = self._client().get_object(Bucket=self.bucket, **args)
        except ClientError as exc:
            if _error_code(exc) == "InvalidRange":
                self.head(key)
                return io.BytesIO(b"")
            raise self._translate(exc, op="get_object", key=key) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, op="get_object", key=key) from exc
        self._after_refusal()
        return S3ReadStream(resp["Body"], self, key)

    def head(self, key: str) -> ObjectInfo:
        """Size, our metadata, storage class and archive state (from ``x-amz-restore``) of ``key``."""
        full = self._full(key)
        answer = self._via_lean("head_object", key, lambda c: c.request("HEAD", self.bucket, full))
        if answer is not _USE_BOTOCORE:
            h: dict[str, str] = answer.headers
            return self._object_info(
                key, int(h.get("content-length", 0)), h.get("x-amz-storage-class"), h.get("x-amz-restore"),
                {k[len("x-amz-meta-"):]: v for k, v in h.items() if k.startswith("x-amz-meta-")},
            )
        resp = self._call("head_object", key, Key=full)
        self._after_refusal()
        return self._object_info(
            key, int(resp["ContentLength"]), resp.get("StorageClass"), resp.get("Restore"), resp.get("Metadata") or {}
        )

    @staticmethod
    def _object_info(
        key: str, size: int, storage_class_header: str | None, restore_header: str | None, metadata: Mapping[str, Any]
    ) -> ObjectInfo:
        storage_class = str(storage_class_header or "STANDARD")
        ongoing = _ONGOING_RE.search(str(restore_header or ""))
        restore_in_progress = ongoing is not None and ongoing.group(1).lower() == "true"
        restored = ongoing is not None and ongoing.group(1).lower() == "false"
        return ObjectInfo(
            key=key,
            size=size,
            metadata={str(k).lower(): str(v) for k, v in metadata.items()},
            storage_class=storage_class,
            archived=storage_class in ARCHIVE_CLASSES and not restored,
            restore_in_progress=restore_in_progress,
        )

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is fine (S3 DELETE is idempotent), a missing bucket is not."""
        full = self._full(key)
        with contextlib.suppress(ObjectNotFound):
            done = self._via_lean("delete_object", key, lambda c: c.request("DELETE", self.bucket, full))
            if done is _USE_BOTOCORE:
                self._call("delete_object", key, Key=full)
                self._after_refusal()

    def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        """DeleteObjects, up to 1,000 keys per request and ``DELETE_REQUESTS`` requests at once (a server
        spends ~0.2 ms per key, one key after another within a request: fewer keys are spread over all
        the requests); an endpoint without DeleteObjects gets parallel single deletes."""
        per = min(DELETE_OBJECTS_MAX, max(DELETE_SPREAD_MIN, -(-len(keys) // DELETE_REQUESTS)))
        chunks = [list(keys[i:i + per]) for i in range(0, len(keys), per)]
        failed: dict[str, BackendError] = {}
        if len(chunks) == 1:
            return self._delete_chunk(chunks[0])
        with ThreadPoolExecutor(max_workers=DELETE_REQUESTS, thread_name_prefix="delete") as pool:
            for chunk_failed in pool.map(self._delete_chunk, chunks):
                failed.update(chunk_failed)
        return failed

    def _delete_chunk(self, chunk: list[str]) -> dict[str, BackendError]:
        if not self._no_batch_delete:
            try:
                return self._delete_objects(chunk)
            except _BatchDeleteUnsupported:
                self._no_batch_delete = True
                log.info("%s: DeleteObjects not supported by the endpoint; deleting one key at a time", self.url)
        failed: dict[str, BackendError] = {}
        with ThreadPoolExecutor(max_workers=SINGLE_DELETE_STREAMS, thread_name_prefix="delete-one") as pool:
            parts = [chunk[i::SINGLE_DELETE_STREAMS] for i in range(SINGLE_DELETE_STREAMS)]
            for part_failed in pool.map(lambda part: delete_each(self, part), parts):
                failed.update(part_failed)
        return failed

    def _delete_objects(self, keys: list[str]) -> dict[str, BackendError]:
        full = {self._full(k): k for k in keys}
        errors = self._delete_objects_lean(full)
        if errors is None:
            try:
                response = self._client().delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": f} for f in full], "Quiet": True}
                )
            except ClientError as exc:
                if _error_code(exc) in _BATCH_DELETE_UNSUPPORTED:
                    raise _BatchDeleteUnsupported() from exc
                raise self._translate(exc, op="delete_objects", key="") from exc
            except BotoCoreError as exc:
                raise self._translate(exc, op="delete_objects", key="") from exc
            self._after_refusal()
            errors = [(str(e.get("Key", "")), str(e.get("Code", "")), str(e.get("Message", "")))
                      for e in response.get("Errors", ())]
        failed: dict[str, BackendError] = {}
        for full_key, code, message in errors:
            key = full.get(full_key)
            if key is None or code in _NOT_FOUND_CODES:
                continue
            failed[key] = self._translate(_s3_error(code, message), op="delete_object", key=key)
        return failed

    def _delete_objects_lean(self, full: Mapping[str, str]) -> list[tuple[str, str, str]] | None:
        """DeleteObjects (quiet) on the lean path: the (key, code, message) of every key not deleted, or
        None when botocore must send it. Raises ``_BatchDeleteUnsupported``, ``BackendError``."""
        body = _delete_objects_xml(full)
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        headers = {"content-type": "application/xml", "content-md5": md5}
        try:
            answer = self._via_lean("delete_objects", "", lambda c: c.request(
                "POST", self.bucket, "", query={"delete": ""}, headers=headers, body=body, stream=True))
        except BackendError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and _error_code(cause) in _BATCH_DELETE_UNSUPPORTED:
                raise _BatchDeleteUnsupported() from exc
            raise
        if answer is _USE_BOTOCORE:
            return None
        return _errors_in(self._read_document(answer, op="delete_objects", key="", operation="DeleteObjects"))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Objects under ``prefix`` (relative to the backend prefix) in key order, one page at a time.

        Metadata is empty (LIST does not return it). ``archived`` is True for every archive-class object,
        restored or not: LIST does not say; ``head`` does.
        """
        paginator = self._client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
        try:
            for page in pages:
                for obj in page.get("Contents") or ():
                    full = str(obj["Key"])
                    if not full.startswith(self.prefix) or full.endswith("/"):
                        continue  # directory markers some servers show are not objects
                    storage_class = str(obj.get("StorageClass") or "STANDARD")
                    modified = obj.get("LastModified")
                    yield ObjectInfo(
                        key=full[len(self.prefix):],
                        size=int(obj.get("Size", 0)),
                        storage_class=storage_class,
                        archived=storage_class in ARCHIVE_CLASSES,
                        modified=modified.astimezone(dt.UTC) if isinstance(modified, dt.datetime) else None,
                    )
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, op="list_objects_v2", key="") from exc

    def list_incomplete(self, prefix: str = "") -> Iterator[IncompleteUpload]:
        """Every unfinished multipart upload under ``prefix`` (relative to the backend prefix), with when it began."""
        paginator = self._client().get_paginator("list_multipart_uploads")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
                for u in page.get("Uploads") or ():
                    full = str(u["Key"])
                    initiated = u.get("Initiated")
                    yield IncompleteUpload(
                        key=full[len(self.prefix):] if full.startswith(self.prefix) else full,
                        upload_id=str(u["UploadId"]),
                        initiated=initiated.astimezone(dt.UTC) if isinstance(initiated, dt.datetime) else None,
                    )
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, op="list_multipart_uploads", key="") from exc

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort the multipart upload ``upload_id`` of ``key``; one already completed or aborted is fine."""
        try:
            self._client().abort_multipart_upload(Bucket=self.bucket, Key=self._full(key), UploadId=upload_id)
        except ClientError as exc:
            if _error_code(exc) in ("NoSuchUpload", "NoSuchKey", "404"):
                return
            raise self._translate(exc, op="abort_multipart_upload", key=key) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, op="abort_multipart_upload", key=key) from exc

    def abort_incomplete(self, prefix: str = "") -> int:
        """Abort every unfinished multipart upload under ``prefix``; returns how many were aborted."""
        aborted = 0
        paginator = self._client().get_paginator("list_multipart_uploads")
        try:
            uploads = [
                (str(u["Key"]), str(u["UploadId"]))
                for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix)
                for u in page.get("Uploads") or ()
            ]
        except (ClientError, BotoCoreError) as exc:
            raise self._translate(exc, op="list_multipart_uploads", key="") from exc
        for full, upload_id in uploads:
            rel = full[len(self.prefix):] if full.startswith(self.prefix) else full
            try:
                self._client().abort_multipart_upload(Bucket=self.bucket, Key=full, UploadId=upload_id)
            except ClientError as exc:
                if _error_code(exc) in ("NoSuchUpload", "NoSuchKey", "404"):
                    continue  # completed or aborted by someone else meanwhile
                raise self._translate(exc, op="abort_multipart_upload", key=rel) from exc
            except BotoCoreError as exc:
                raise self._translate(exc, op="abort_multipart_upload", key=rel) from exc
            aborted += 1
        return aborted

    def locate(self, key: str) -> Location:
        """``s3://bucket/prefix/key`` and the endpoint, for boto3/s3fs; ``key`` may be a prefix or ""."""
        full = self.prefix + key if key else self.prefix
        return Location(
            kind="s3", url=f"s3://{self.bucket}/{full}", endpoint=self.endpoint_url or "",
            bucket=self.bucket, key=full,
        )

    def close(self) -> None:
        with self._client_lock:
            client, self._client_obj = self._client_obj, None
            lean, self._lean_client = self._lean_client, None
        if client is not None:
            client.close()
        if lean is not None:
            lean.close()

    # -- archive and administration ---------------------------------------------------------------

    def request_restore(self, key: str, *, days: int, retrieval_tier: str = "Standard") -> None:
        """Ask the archive to make ``key`` readable for ``days`` days (Glacier ``RestoreObject``).

        Returns once the request is accepted; poll :meth:`head` (``restore_in_progress`` / ``archived``).
        A restore already under way counts as success. Raises ``ObjectNotFound``, or
        ``PermanentBackendError`` when the object is not archived or the endpoint has no archive protocol.
        """
        if days < 1:
            raise ValueError("days must be at least 1")
        try:
            self._client().restore_object(
                Bucket=self.bucket, Key=self._full(key),
                RestoreRequest={"Days": days, "GlacierJobParameters": {"Tier": retrieval_tier}},
            )
        except ClientError as exc:
            if _error_code(exc) == "RestoreAlreadyInProgress":
                return  # asking twice is how a second user joins the first one's restore
            raise self._translate(exc, op="restore_object", key=key) from exc
        except BotoCoreError as exc:
            raise self._translate(exc, op="restore_object", key=key) from exc

    def ensure_bucket(self) -> bool:
        """Create the bucket when it is missing; returns True when it was created."""
        try:
            self._client().head_bucket(Bucket=self.bucket)
            return False
        except ClientError as exc:
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if status != 404 and _error_code(exc) not in ("404", "NoSuchBucket"):
                raise self._translate(exc, op="head_bucket", key="") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, op="head_bucket", key="") from exc
        args: dict[str, Any] = {}
        if self.region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client().create_bucket(Bucket=self.bucket, **args)
        except ClientError as exc:
            if _error_code(exc) == "BucketAlreadyOwnedByYou":
                return False
            raise self._translate(exc, op="create_bucket", key="") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, op="create_bucket", key="") from exc
        return True
