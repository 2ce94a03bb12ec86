"""The S3 backend's plumbing: configuration, the botocore client, the lean request path and error translation.

:class:`S3Core` holds what every request needs; :class:`~tiering.storage.s3.upload.S3Uploads` adds the write
path and :class:`~tiering.storage.s3.backend.S3Backend` the rest of the Backend protocol.
"""

from __future__ import annotations

import contextlib
import logging
import random
import re
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Self
from urllib.parse import urlparse
from xml.etree import ElementTree

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    EndpointConnectionError,
    HTTPClientError,
    ReadTimeoutError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from tiering.config import Credentials, TierConfig, TransferConfig
from tiering.errors import BackendError, ObjectNotFound
from tiering.storage.base import check_key
from tiering.storage.s3.errors import translate
from tiering.storage.s3.lean import (
    MAX_BACKOFF,
    RETRY_CODES,
    LeanConnectionError,
    LeanHTTPError,
    LeanS3Client,
    StaticKeys,
)
from tiering.storage.s3.wire import answer_root

log = logging.getLogger(__name__)

MiB: Final = 2**20
#: S3 limits: at most 10 000 parts; every part but the last at least 5 MiB
MAX_PARTS: Final = 10_000
MIN_PART_SIZE: Final = 5 * MiB
#: the largest object a single PutObject may carry
MAX_SINGLE_PUT: Final = 5 * 2**30

#: storage classes whose objects must be restored before a GET (GLACIER_IR is instant: not listed)
ARCHIVE_CLASSES: Final = frozenset({"GLACIER", "DEEP_ARCHIVE"})

_ONGOING_RE: Final = re.compile(r'ongoing-request\s*=\s*"(true|false)"', re.IGNORECASE)

# Building a client from a new boto3 Session re-parses botocore's S3 model; clients
# made from one Session share the parsed model. Credentials are given per client, never kept on the
# Session, so backends with different keys share nothing but the model. Session.client() is not
# thread-safe: the lock serialises client creation (once per backend). boto3 itself (and botocore's
# client machinery) is loaded only then: the lean path with static keys never needs it.
_shared_session: Any = None
_shared_session_lock = threading.Lock()

#: returned by ``_lean`` when botocore must make the request instead
_USE_BOTOCORE: Final = object()


#: request checksums an endpoint may check against the body it receives, in the order they are tried
WIRE_CHECKSUMS: Final = ("crc32", "md5")


class S3Core:
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
    def from_config(cls, name: str, tier: TierConfig, transfer: TransferConfig) -> Self:
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
        return translate(exc, op=op, key=key, url=self.url, bucket=self.bucket, prefix=self.prefix,
                         endpoint=self._endpoint_for_messages)

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
            return answer_root(document, operation)
        except ClientError as exc:
            raise self._translate(exc, op=op, key=key) from exc

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is fine (S3 DELETE is idempotent), a missing bucket is not."""
        full = self._full(key)
        with contextlib.suppress(ObjectNotFound):
            done = self._via_lean("delete_object", key, lambda c: c.request("DELETE", self.bucket, full))
            if done is _USE_BOTOCORE:
                self._call("delete_object", key, Key=full)
                self._after_refusal()
