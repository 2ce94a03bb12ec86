"""An S3-compatible bucket as a tier (MinIO, SeaweedFS, Ceph RGW, AWS, tape gateways speaking Glacier).

Keys are relative to the backend's prefix: ``S3Backend("data", "hot")`` stores key ``a/b`` as
``s3://data/hot/a/b``. Our metadata travels as ``x-amz-meta-*`` headers, so other S3 clients see our digest.

Why the low-level client and not boto3's managed transfer: the transfer manager adds a thread and a
future per chunk and re-reads nothing we need; measured here it was the slower path. ``put`` below reads the
body strictly in order (so a hashing wrapper sees bytes in order) and uploads parts from a small bounded pool.

The hot requests (GET, HEAD, single PUT, multipart uploads and their parts, DELETE, DeleteObjects) on a
plain-http path-style endpoint go through :mod:`tiering.storage.s3.lean` (SigV4 by hand, pooled
connections, ``UNSIGNED-PAYLOAD``): botocore's per-request CPU, which holds the GIL, caps a small machine's
rate of small objects, and loading and building a client is slow (measured in bench/). An
endpoint that answers the lean path with 403 gets the same request again from botocore (signed payload);
when that works, the backend stops using the lean path. ``lean_requests=False`` turns it off.

Only this package imports botocore exceptions (:mod:`~tiering.storage.s3.errors`); every vendor error
leaves it translated to the tree in :mod:`tiering.errors`, with the cause chained (``raise ... from exc``):

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
import datetime as dt
import hashlib
import io
import logging
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tiering.errors import BackendError, TransientBackendError
from tiering.storage.base import IncompleteUpload, Location, ObjectInfo, ReadStream, delete_each
from tiering.storage.s3.core import _ONGOING_RE, _USE_BOTOCORE, ARCHIVE_CLASSES
from tiering.storage.s3.errors import BATCH_DELETE_UNSUPPORTED, NOT_FOUND_CODES, error_code, s3_error
from tiering.storage.s3.lean import LeanConnectionError
from tiering.storage.s3.upload import S3Uploads
from tiering.storage.s3.wire import delete_objects_xml, errors_in

log = logging.getLogger(__name__)


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


class _BatchDeleteUnsupported(Exception):
    """The endpoint does not implement DeleteObjects."""


class S3Backend(S3Uploads):
    """Objects in ``bucket`` under ``prefix`` on an S3-compatible endpoint; see :class:`S3Core` for the
    arguments, :class:`~tiering.storage.s3.upload.S3Uploads` for ``put``."""

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
            if isinstance(exc.__cause__, ClientError) and error_code(exc.__cause__) == "InvalidRange":
                self.head(key)
                return io.BytesIO(b"")
            raise
        if answer is not _USE_BOTOCORE:
            return S3ReadStream(answer, self, key)
        try:
            resp = self._client().get_object(Bucket=self.bucket, **args)
        except ClientError as exc:
            if error_code(exc) == "InvalidRange":
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

    def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        """DeleteObjects, up to 1,000 keys per request and ``DELETE_REQUESTS`` requests at once (a server
        handles a request's keys one after another: fewer keys are spread over all the requests); an
        endpoint without DeleteObjects gets parallel single deletes."""
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
                if error_code(exc) in BATCH_DELETE_UNSUPPORTED:
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
            if key is None or code in NOT_FOUND_CODES:
                continue
            failed[key] = self._translate(s3_error(code, message), op="delete_object", key=key)
        return failed

    def _delete_objects_lean(self, full: Mapping[str, str]) -> list[tuple[str, str, str]] | None:
        """DeleteObjects (quiet) on the lean path: the (key, code, message) of every key not deleted, or
        None when botocore must send it. Raises ``_BatchDeleteUnsupported``, ``BackendError``."""
        body = delete_objects_xml(full)
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        headers = {"content-type": "application/xml", "content-md5": md5}
        try:
            answer = self._via_lean("delete_objects", "", lambda c: c.request(
                "POST", self.bucket, "", query={"delete": ""}, headers=headers, body=body, stream=True))
        except BackendError as exc:
            cause = exc.__cause__
            if isinstance(cause, ClientError) and error_code(cause) in BATCH_DELETE_UNSUPPORTED:
                raise _BatchDeleteUnsupported() from exc
            raise
        if answer is _USE_BOTOCORE:
            return None
        return errors_in(self._read_document(answer, op="delete_objects", key="", operation="DeleteObjects"))

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
            if error_code(exc) in ("NoSuchUpload", "NoSuchKey", "404"):
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
                if error_code(exc) in ("NoSuchUpload", "NoSuchKey", "404"):
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
            if error_code(exc) == "RestoreAlreadyInProgress":
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
            if status != 404 and error_code(exc) not in ("404", "NoSuchBucket"):
                raise self._translate(exc, op="head_bucket", key="") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, op="head_bucket", key="") from exc
        args: dict[str, Any] = {}
        if self.region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._client().create_bucket(Bucket=self.bucket, **args)
        except ClientError as exc:
            if error_code(exc) == "BucketAlreadyOwnedByYou":
                return False
            raise self._translate(exc, op="create_bucket", key="") from exc
        except BotoCoreError as exc:
            raise self._translate(exc, op="create_bucket", key="") from exc
        return True
