"""One suite, every backend: the contract of ``tiering.storage.base`` holds for memory, file and S3.

The S3 backend runs twice against a real SeaweedFS bucket: with the default threshold (single PutObject
for everything here) and with a 1-byte threshold and 5 MiB parts, so every non-empty object goes through
the multipart path (parallel parts, completion, abort on failure). S3 tests share one bucket per module,
each under its own prefix: a new SeaweedFS bucket costs a volume allocation (~0.2 s) on its first write.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tiering.config import Credentials, Secret
from tiering.errors import DigestRefused, ObjectNotFound
from tiering.storage import Backend, FileBackend, MemoryBackend
from tiering.storage.base import DIGEST_METADATA_KEY
from tiering.transfer.hashing import xxh3_bytes

MiB = 2**20
#: the smallest part S3 (and SeaweedFS) accept for all but the last part
PART = 5 * MiB


@dataclass
class Subject:
    backend: Backend
    kind: str
    #: reads an object the way an outside client would, given the backend's Location of it
    read_directly: Callable[[str], bytes]


def _memory(tmp_path: Path, request: pytest.FixtureRequest) -> Subject:
    backend = MemoryBackend(f"conformance-{uuid.uuid4().hex}")
    # nothing outside the process can read it: the backend itself is the direct reader
    return Subject(backend, "memory", lambda key: read_all(backend, key))


def _file(**options: Any) -> Callable[[Path, pytest.FixtureRequest], Subject]:
    def make(tmp_path: Path, request: pytest.FixtureRequest) -> Subject:
        backend = FileBackend(tmp_path / "tier", **options)
        return Subject(backend, "file", lambda key: Path(backend.locate(key).path).read_bytes())

    return make


def _s3(**options: Any) -> Callable[[Path, pytest.FixtureRequest], Subject]:
    def make(tmp_path: Path, request: pytest.FixtureRequest) -> Subject:
        from tiering.storage.s3.backend import S3Backend

        server = request.getfixturevalue("seaweed")
        bucket = request.getfixturevalue("conformance_bucket")
        backend = S3Backend(
            bucket,
            f"conformance/{uuid.uuid4().hex}",
            endpoint_url=server.endpoint,
            credentials=Credentials(server.access_key, Secret(server.secret_key)),
            retries=1,
            connect_timeout=2,
            read_timeout=20,
            **options,
        )
        client = server.client()

        def read(key: str) -> bytes:
            loc = backend.locate(key)
            data: bytes = client.get_object(Bucket=loc.bucket, Key=loc.key)["Body"].read()
            return data

        return Subject(backend, "s3", read)

    return make


@pytest.fixture(scope="module")
def conformance_bucket(seaweed: Any) -> Iterator[str]:
    name = seaweed.make_bucket(f"conformance-{uuid.uuid4().hex[:12]}")
    try:
        yield name
    finally:
        seaweed.remove_bucket(name)


BACKENDS = [
    pytest.param(_memory, id="memory"),
    pytest.param(_file(), id="file"),
    # metadata in sidecar files, as on a filesystem without user xattrs
    pytest.param(_file(xattrs=False), id="file-sidecars"),
    pytest.param(_s3(), id="s3", marks=pytest.mark.server),
    pytest.param(
        _s3(multipart_threshold=1, part_size=PART, part_workers=2),
        id="s3-multipart",
        marks=pytest.mark.server,
    ),
]


@pytest.fixture(params=BACKENDS)
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    made = request.param(tmp_path, request)
    try:
        yield made
    finally:
        if made.kind == "memory":  # its store lives as long as the process: free the test's megabytes
            for info in list(made.backend.list()):
                made.backend.delete(info.key)
        made.backend.close()


@pytest.fixture
def backend(subject: Subject) -> Backend:
    return subject.backend


def read_all(
    backend: Backend, key: str, *, offset: int = 0, length: int | None = None, chunk: int = -1
) -> bytes:
    stream = backend.open_read(key, offset=offset, length=length)
    try:
        if chunk < 0:
            return stream.read()
        parts: list[bytes] = []
        while True:
            part = stream.read(chunk)
            if not part:
                return b"".join(parts)
            parts.append(part)
    finally:
        stream.close()


class BodyBroke(RuntimeError):
    pass


class BodyAborted(BaseException):
    """Like KeyboardInterrupt: not an Exception, so only ``except BaseException`` cleans up after it."""


class BreakingBody:
    """Hands out ``good`` bytes of a pattern, then raises ``error``."""

    def __init__(self, good: int, error: BaseException) -> None:
        self._left = good
        self._error = error

    def read(self, size: int = -1, /) -> bytes:
        if self._left <= 0:
            raise self._error
        n = self._left if size < 0 else min(size, self._left)
        self._left -= n
        return b"z" * n

    def close(self) -> None:
        pass


class Unseekable:
    """A stream with no size and no seek, like a socket or another backend's read stream."""

    def __init__(self, data: bytes, chunk: int = 64 * 1024) -> None:
        self._data = data
        self._pos = 0
        self._chunk = chunk

    def read(self, size: int = -1, /) -> bytes:
        # short reads on purpose: a caller must loop until EOF
        n = self._chunk if size < 0 else min(size, self._chunk)
        out = self._data[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def close(self) -> None:
        pass


def put_bytes(backend: Backend, key: str, data: bytes, **kwargs: Any) -> None:
    import io

    backend.put(key, io.BytesIO(data), size=len(data), **kwargs)


def test_backend_satisfies_the_protocol(backend: Backend) -> None:
    assert isinstance(backend, Backend)
    assert backend.url


@pytest.mark.parametrize("size", [0, 1, 1000, 256 * 1024])
@pytest.mark.parametrize("size_known", [True, False], ids=["size-known", "size-unknown"])
def test_put_then_read_returns_the_same_bytes(backend: Backend, size: int, size_known: bool) -> None:
    data = os.urandom(size)
    backend.put("d/obj.bin", Unseekable(data), size=size if size_known else None)
    assert read_all(backend, "d/obj.bin") == data
    assert read_all(backend, "d/obj.bin", chunk=4096) == data
    assert backend.head("d/obj.bin").size == size


@pytest.mark.parametrize("size_known", [True, False], ids=["size-known", "size-unknown"])
def test_object_larger_than_two_parts_roundtrips(backend: Backend, size_known: bool) -> None:
    data = os.urandom(2 * PART + 12345)
    backend.put("big/obj", Unseekable(data, chunk=MiB), size=len(data) if size_known else None)
    assert backend.head("big/obj").size == len(data)
    assert xxh3_bytes(read_all(backend, "big/obj", chunk=MiB)) == xxh3_bytes(data)


@pytest.mark.parametrize(("actual", "hint"), [(PART + 1000, 1), (100, 2 * PART)], ids=["longer", "shorter"])
def test_size_is_only_a_hint_all_bytes_of_the_body_are_stored(backend: Backend, actual: int, hint: int) -> None:
    data = os.urandom(actual)
    backend.put("hinted", Unseekable(data, chunk=MiB), size=hint)
    assert backend.head("hinted").size == actual
    assert read_all(backend, "hinted") == data


def test_put_overwrites_bytes_and_metadata(backend: Backend) -> None:
    put_bytes(backend, "k", b"first version, longer", metadata={"note": "old"})
    put_bytes(backend, "k", b"second")
    assert read_all(backend, "k") == b"second"
    info = backend.head("k")
    assert info.size == len(b"second")
    assert "note" not in info.metadata


def test_metadata_roundtrips_through_head(backend: Backend) -> None:
    data = b"payload"
    meta = {DIGEST_METADATA_KEY: xxh3_bytes(data), "tiering-kind": "dataset"}
    put_bytes(backend, "m/obj", data, metadata=meta)
    info = backend.head("m/obj")
    assert info.key == "m/obj"
    assert info.size == len(data)
    assert dict(info.metadata) == meta


RANGES = [
    (0, None), (10, None), (10, 5), (0, 1), (1023, 1), (1020, 10), (0, 0), (500, 0), (1024, None), (2000, 5),
]


@pytest.mark.parametrize(("offset", "length"), RANGES)
def test_range_read_returns_the_slice_clipped_to_the_object(
    backend: Backend, offset: int, length: int | None
) -> None:
    data = bytes(range(256)) * 4
    put_bytes(backend, "r", data)
    end = len(data) if length is None else offset + length
    assert read_all(backend, "r", offset=offset, length=length) == data[offset:end]


def test_head_of_missing_object_raises_object_not_found(backend: Backend) -> None:
    with pytest.raises(ObjectNotFound) as caught:
        backend.head("no/such/key")
    assert caught.value.key == "no/such/key"


@pytest.mark.parametrize(("offset", "length"), [(0, None), (5, 10), (0, 0)])
def test_open_read_of_missing_object_raises_object_not_found(
    backend: Backend, offset: int, length: int | None
) -> None:
    with pytest.raises(ObjectNotFound):
        backend.open_read("no/such/key", offset=offset, length=length)


def test_delete_removes_and_deleting_again_is_fine(backend: Backend) -> None:
    put_bytes(backend, "del/me", b"x")
    backend.delete("del/me")
    with pytest.raises(ObjectNotFound):
        backend.head("del/me")
    backend.delete("del/me")
    backend.delete("never/was/here")


@pytest.mark.parametrize("size", [300_000, 13 * MiB], ids=["single", "large"])
def test_a_write_with_its_digest_is_checked_and_a_body_that_does_not_match_is_refused(
    backend: Backend, size: int
) -> None:
    data = os.urandom(size)
    digest = xxh3_bytes(data)
    put_bytes(backend, "sum/old", b"previous")
    assert backend.put("sum/old", Unseekable(data), size=size, content_xxh3=digest) is True  # SeaweedFS checks
    assert read_all(backend, "sum/old") == data
    with pytest.raises(DigestRefused):
        backend.put("sum/new", Unseekable(data), size=size, content_xxh3=xxh3_bytes(data[1:]))
    with pytest.raises(ObjectNotFound):
        backend.head("sum/new")
    with pytest.raises(DigestRefused):
        backend.put("sum/old", Unseekable(data[:-1] + bytes([data[-1] ^ 1])), size=size, content_xxh3=digest)
    assert read_all(backend, "sum/old") == data  # the refused write left the old object as it was
    assert backend.put("sum/plain", Unseekable(data), size=size) is False  # no digest, nothing checked
    assert [o.key for o in backend.list("sum/")] == ["sum/old", "sum/plain"]
    assert backend.abort_incomplete("sum/") == 0  # a refused multipart upload was aborted, not left behind


def test_delete_many_removes_every_key_and_reports_no_failure_for_missing_ones(backend: Backend) -> None:
    keys = [f"many/{i:04d}" for i in range(1205)]  # more than one DeleteObjects request on S3
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda key: put_bytes(backend, key, b"k"), keys[:1203]))
    put_bytes(backend, "many-kept/x", b"stay")
    assert backend.delete_many(keys) == {}
    assert [o.key for o in backend.list("many/")] == []
    assert read_all(backend, "many-kept/x") == b"stay"
    assert backend.delete_many([]) == {}


def test_list_returns_objects_under_prefix_in_key_order(backend: Backend) -> None:
    keys = ["b/2", "a/10", "a/1", "ab", "a/sub/x", "a/2"]
    for i, key in enumerate(keys):
        put_bytes(backend, key, b"x" * i)
    listed = list(backend.list("a/"))
    assert [o.key for o in listed] == ["a/1", "a/10", "a/2", "a/sub/x"]
    assert {o.key: o.size for o in listed} == {"a/1": 2, "a/10": 1, "a/2": 5, "a/sub/x": 4}
    assert [o.key for o in backend.list("a")] == ["a/1", "a/10", "a/2", "a/sub/x", "ab"]
    assert [o.key for o in backend.list()] == sorted(keys)
    assert list(backend.list("nothing/")) == []


@pytest.mark.parametrize(
    "error", [BodyBroke("source went away"), BodyAborted()], ids=["exception", "base-exception"]
)
@pytest.mark.parametrize("size_known", [True, False], ids=["size-known", "size-unknown"])
def test_failed_put_leaves_no_object_and_no_incomplete_upload(
    backend: Backend, error: BaseException, size_known: bool
) -> None:
    size = PART + MiB  # past one part, so a multipart upload has a finished part when the body breaks
    with pytest.raises(type(error)):
        backend.put("fail/obj", BreakingBody(PART + MiB // 2, error), size=size if size_known else None)
    with pytest.raises(ObjectNotFound):
        backend.head("fail/obj")
    assert list(backend.list("fail/")) == []
    assert backend.abort_incomplete() == 0


def test_failed_overwrite_keeps_the_old_object(backend: Backend) -> None:
    put_bytes(backend, "keep", b"old bytes")
    with pytest.raises(BodyBroke):
        backend.put("keep", BreakingBody(PART + 1, BodyBroke("broken")), size=PART * 2)
    assert read_all(backend, "keep") == b"old bytes"


@pytest.mark.parametrize("key", ["../escape", "a/../../b", "a/./b", "/abs", "a//b", ""])
def test_unsafe_keys_are_rejected_before_anything_is_written(backend: Backend, key: str) -> None:
    with pytest.raises(ValueError):
        put_bytes(backend, key, b"x")
    assert list(backend.list()) == []


def test_locate_points_where_a_client_reads_the_object(subject: Subject) -> None:
    backend = subject.backend
    data = b"read me directly"
    put_bytes(backend, "loc/obj.txt", data)
    loc = backend.locate("loc/obj.txt")
    assert loc.kind == subject.kind
    assert loc.url.endswith("loc/obj.txt")
    assert subject.read_directly("loc/obj.txt") == data


def test_concurrent_puts_and_reads_from_many_threads(backend: Backend) -> None:
    payloads = {f"t/{i:02d}": os.urandom(1000 + i) for i in range(16)}
    errors: list[BaseException] = []

    def work(key: str, data: bytes) -> None:
        try:
            put_bytes(backend, key, data)
            assert read_all(backend, key) == data
        except BaseException as exc:  # noqa: BLE001 - reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=item) for item in payloads.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [o.key for o in backend.list("t/")] == sorted(payloads)


def test_close_twice_is_safe(backend: Backend) -> None:
    backend.close()
    backend.close()
