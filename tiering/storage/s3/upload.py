"""The S3 write path: single PUTs, multipart uploads from a small bounded pool, and request checksums."""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any, BinaryIO

import xxhash

from tiering.errors import BackendError, DigestRefused, PermanentBackendError
from tiering.storage.base import ReadStream, read_up_to
from tiering.storage.s3.core import _USE_BOTOCORE, MAX_PARTS, S3Core
from tiering.storage.s3.wire import checksum_args, checksum_headers, complete_multipart_xml, xml_text

log = logging.getLogger(__name__)


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


class S3Uploads(S3Core):
    """:class:`S3Core` with the write path of the Backend protocol (``put``)."""

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
                self._put_single(key, head, metadata, checksum_headers(wire, head))
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
        args.update(checksum_args(checksum))
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
            wrong = checksum_headers(algorithm, body + b"!")
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
        upload_id = xml_text(root, "UploadId")
        if not upload_id:
            raise PermanentBackendError(f"{key}: the endpoint started a multipart upload without naming it "
                                        "(no UploadId in its answer)", backend=self.url, key=key)
        return upload_id

    def _complete_multipart(self, key: str, full: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        root = self._lean_document(
            "complete_multipart_upload", key, "POST", full, query={"uploadId": upload_id},
            headers={"content-type": "application/xml"}, body=complete_multipart_xml(parts),
        )
        if root is None:
            self._call("complete_multipart_upload", key, Key=full, UploadId=upload_id,
                       MultipartUpload={"Parts": parts})
            self._after_refusal()

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes, wire: str) -> dict[str, Any]:
        full = self._full(key)
        # zlib and hashlib release the GIL on large buffers: the parts' checksums run in parallel
        checksum = checksum_headers(wire, data)
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
                          **checksum_args(checksum))
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
