"""Retry, fault-injection and dry-run wrappers over the memory backend; time is injected, nothing sleeps."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiering.config import TierConfig, TransferConfig
from tiering.errors import (
    InsufficientStorage,
    ObjectNotFound,
    PermanentBackendError,
    TransientBackendError,
)
from tiering.storage import (
    Backend,
    DryRunBackend,
    FaultyBackend,
    FileBackend,
    MemoryBackend,
    RetryingBackend,
    open_backend,
)
from tiering.storage.base import Archive as ArchiveAbility
from tiering.storage.base import BatchedSync, ObjectInfo, find_capability
from tiering.transfer.hashing import HashingReader, xxh3_bytes


@pytest.fixture
def memory() -> MemoryBackend:
    return MemoryBackend(f"wrappers-{uuid.uuid4().hex}")


def stored(backend: Backend, key: str) -> bytes:
    stream = backend.open_read(key)
    try:
        return stream.read()
    finally:
        stream.close()


class OneShotStream:
    """A non-seekable body (like a socket or another backend's read stream) that counts its reads."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.bytes_read = 0

    def read(self, size: int = -1, /) -> bytes:
        out = self._data.read(size)
        self.bytes_read += len(out)
        return out

    def close(self) -> None:
        pass


class ExplodingBody:
    """A body that must never be read."""

    def read(self, size: int = -1, /) -> bytes:
        raise AssertionError("the body was read")

    def close(self) -> None:
        pass


def retrying(inner: Backend, *, attempts: int = 4, sleeps: list[float] | None = None) -> RetryingBackend:
    return RetryingBackend(
        inner, attempts=attempts, base_delay=0.1, max_delay=1.0,
        sleep=(sleeps if sleeps is not None else []).append, rng=lambda: 0.0,
    )


# -- RetryingBackend -----------------------------------------------------------------------------


def test_retrying_backend_satisfies_the_protocol_and_keeps_the_inner_url(memory: MemoryBackend) -> None:
    wrapped = retrying(memory)
    assert isinstance(wrapped, Backend)
    assert wrapped.url == memory.url


def test_transient_failures_are_retried_with_growing_delays(memory: MemoryBackend) -> None:
    memory.put("k", io.BytesIO(b"v"))
    faulty = FaultyBackend(memory, fail_calls={"head": 3})
    sleeps: list[float] = []
    assert retrying(faulty, attempts=4, sleeps=sleeps).head("k").size == 1
    assert faulty.calls["head"] == 4
    # rng() == 0 gives the lower edge of the jitter band: half of 0.1, 0.2, 0.4
    assert sleeps == pytest.approx([0.05, 0.1, 0.2])


def test_delay_is_capped_and_jittered_within_half_to_full_ceiling(memory: MemoryBackend) -> None:
    low = RetryingBackend(memory, attempts=3, base_delay=1.0, max_delay=5.0, rng=lambda: 0.0)
    high = RetryingBackend(memory, attempts=3, base_delay=1.0, max_delay=5.0, rng=lambda: 0.999)
    assert low.delay(1) == pytest.approx(0.5)
    assert high.delay(1) == pytest.approx(1.0, abs=1e-3)
    assert low.delay(10) == pytest.approx(2.5)  # 1 * 2**9 capped at 5, halved by the jitter
    assert high.delay(10) <= 5.0


def test_retrying_gives_up_after_the_given_number_of_attempts(memory: MemoryBackend) -> None:
    faulty = FaultyBackend(memory, fail_calls={"delete": 10})
    sleeps: list[float] = []
    with pytest.raises(TransientBackendError):
        retrying(faulty, attempts=3, sleeps=sleeps).delete("k")
    assert faulty.calls["delete"] == 3
    assert len(sleeps) == 2


def test_retrying_stops_at_the_operations_time_limit_whatever_attempts_remain(memory: MemoryBackend) -> None:
    """Each failing call takes 4 s of a fake clock and each wait ~1 s; a limit of 9.5 s (+1 s per MiB) leaves
    room for two tries of a small head, three of a 2 MiB put, however many attempts are allowed."""
    now = [0.0]

    class SlowFailing(FaultyBackend):
        def _enter(self, op: str, key: str) -> None:
            now[0] += 4.0  # a timed-out attempt
            super()._enter(op, key)

    faulty = SlowFailing(memory, fail_calls={"head": 100, "put": 100})
    wrapped = RetryingBackend(
        faulty, attempts=20, base_delay=1.0, max_delay=1.0, rng=lambda: 0.999,
        budget=lambda nbytes: 9.5 + nbytes / 2**20, sleep=lambda s: now.__setitem__(0, now[0] + s),
        monotonic=lambda: now[0],
    )
    with pytest.raises(TransientBackendError, match="past the operation's 9.5 s limit"):
        wrapped.head("k")
    assert faulty.calls["head"] == 2  # 4 s + 1 s wait + 4 s; a third try would start past 9.5 s
    now[0] = 0.0
    with pytest.raises(TransientBackendError, match="11.5 s limit"):
        wrapped.put("k", io.BytesIO(b"x" * 2**21), size=2**21)
    assert faulty.calls["put"] == 3


def test_the_transfer_config_gives_each_request_a_total_limit_growing_with_its_body() -> None:
    transfer = TransferConfig(request_timeout_seconds=30, seconds_per_mib=0.5)
    assert transfer.request_budget() == 30
    assert transfer.request_budget(8 * 2**20) == 34
    assert TransferConfig().request_budget() == 30


@pytest.mark.parametrize("error", [PermanentBackendError, InsufficientStorage, ObjectNotFound])
def test_non_transient_errors_are_raised_at_once(memory: MemoryBackend, error: type[Exception]) -> None:
    faulty = FaultyBackend(memory, fail_calls={"head": 1}, fail_with=error)
    sleeps: list[float] = []
    with pytest.raises(error):
        retrying(faulty, sleeps=sleeps).head("k")
    assert faulty.calls["head"] == 1
    assert sleeps == []


def test_attempts_must_count_at_least_the_first_try(memory: MemoryBackend) -> None:
    with pytest.raises(ValueError):
        RetryingBackend(memory, attempts=0)


def test_delete_many_retries_only_the_keys_that_failed_transiently(memory: MemoryBackend) -> None:
    for key in ("a", "b", "c"):
        memory.put(key, io.BytesIO(b"v"))
    faulty = FaultyBackend(memory, fail_calls={"delete": 1})  # the first key's delete fails once
    sleeps: list[float] = []
    assert retrying(faulty, attempts=3, sleeps=sleeps).delete_many(["a", "b", "c"]) == {}
    assert [o.key for o in memory.list()] == []
    assert faulty.calls["delete"] == 4  # a (refused), b, c, then a again alone
    assert sleeps == pytest.approx([0.05])


def test_delete_many_reports_permanent_failures_per_key_without_retrying(memory: MemoryBackend) -> None:
    for key in ("a", "b"):
        memory.put(key, io.BytesIO(b"v"))
    faulty = FaultyBackend(memory, fail_calls={"delete": 1}, fail_with=PermanentBackendError)
    failed = retrying(faulty, attempts=3).delete_many(["a", "b"])
    assert list(failed) == ["a"] and isinstance(failed["a"], PermanentBackendError)
    assert [o.key for o in memory.list()] == ["a"]
    assert faulty.calls["delete"] == 2


def test_open_read_is_retried_until_the_stream_opens(memory: MemoryBackend) -> None:
    memory.put("k", io.BytesIO(b"hello"))
    faulty = FaultyBackend(memory, fail_calls={"open_read": 2})
    stream = retrying(faulty).open_read("k", offset=1, length=3)
    assert stream.read() == b"ell"


def test_put_of_a_seekable_body_is_retried_from_where_the_body_started(memory: MemoryBackend) -> None:
    faulty = FaultyBackend(memory, fail_puts_after_bytes=4, fail_times=1)
    body = io.BytesIO(b"HEADER|payload bytes")
    body.seek(7)  # the caller's object starts mid-stream: a retry must rewind to 7, not to 0
    sleeps: list[float] = []
    retrying(faulty, sleeps=sleeps).put("k", body, size=13)
    assert stored(memory, "k") == b"payload bytes"
    assert faulty.calls["put"] == 2
    assert len(sleeps) == 1


def test_put_of_a_small_unseekable_body_is_buffered_read_once_and_retried(memory: MemoryBackend) -> None:
    data = b"streamed from another tier" * 10
    faulty = FaultyBackend(memory, fail_puts_after_bytes=5, fail_times=2)
    source = OneShotStream(data)
    hashed = HashingReader(source)
    retrying(faulty).put("k", hashed, size=len(data))
    assert stored(memory, "k") == data
    assert faulty.calls["put"] == 3
    # every byte passed the hashing wrapper exactly once, in order, despite two failed attempts
    assert source.bytes_read == len(data)
    assert hashed.digests.xxh3 == xxh3_bytes(data)


@pytest.mark.parametrize("size", [None, 100], ids=["size-unknown", "over-buffer-limit"])
def test_put_of_an_unreplayable_body_gets_a_single_attempt(memory: MemoryBackend, size: int | None) -> None:
    faulty = FaultyBackend(memory, fail_puts_after_bytes=5)
    wrapped = RetryingBackend(faulty, attempts=5, buffer_limit=50, sleep=lambda s: None)
    with pytest.raises(TransientBackendError):
        wrapped.put("k", OneShotStream(b"x" * 100), size=size)
    assert faulty.calls["put"] == 1
    with pytest.raises(ObjectNotFound):
        memory.head("k")


class FlakyListing(MemoryBackend):
    """Lists two objects, then fails once, as a dropped connection between pages would."""

    failed = False

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        for i, info in enumerate(super().list(prefix)):
            if i == 2 and not self.failed:
                self.failed = True
                raise TransientBackendError("page lost", backend=self.url)
            yield info


def test_list_resumes_after_the_last_key_without_repeating_any() -> None:
    inner = FlakyListing(f"flaky-{uuid.uuid4().hex}")
    for key in ["a", "b", "c", "d", "e"]:
        inner.put(key, io.BytesIO(key.encode()))
    sleeps: list[float] = []
    assert [o.key for o in retrying(inner, sleeps=sleeps).list()] == ["a", "b", "c", "d", "e"]
    assert len(sleeps) == 1


def test_abilities_the_wrappers_lack_are_found_by_unwrapping_not_forwarded(
    memory: MemoryBackend, tmp_path: Path
) -> None:
    class Archive(MemoryBackend):
        restores: list[tuple[str, int]] = []

        def request_restore(self, key: str, *, days: int, retrieval_tier: str = "Standard") -> None:
            self.restores.append((key, days))

    inner = Archive(f"archive-{uuid.uuid4().hex}")
    wrapped = retrying(FaultyBackend(inner))
    wrapped.request_restore("k", days=3)
    assert inner.restores == [("k", 3)]
    assert not hasattr(wrapped, "forget_all")  # no attribute forwarding
    # an ability the outer wrapper has is used there (retried); one it lacks is found on the inner backend
    assert find_capability(wrapped, ArchiveAbility) is wrapped
    directory = FileBackend(tmp_path)
    assert find_capability(retrying(FaultyBackend(directory)), BatchedSync) is directory
    assert find_capability(retrying(FaultyBackend(memory)), BatchedSync) is None


# -- FaultyBackend -------------------------------------------------------------------------------


def test_corrupt_reads_flip_one_byte_of_what_is_read_but_not_of_what_is_stored(memory: MemoryBackend) -> None:
    data = b"0123456789"
    faulty = FaultyBackend(memory, corrupt_reads=True)
    faulty.put("k", io.BytesIO(data))
    seen = stored(faulty, "k")
    assert seen != data
    assert len(seen) == len(data)
    assert sum(a != b for a, b in zip(seen, data, strict=True)) == 1
    assert stored(memory, "k") == data


def test_corrupt_writes_store_bytes_that_no_longer_match_the_digest_the_sender_computed(
    memory: MemoryBackend,
) -> None:
    data = b"important weights" * 100
    sender = HashingReader(io.BytesIO(data))
    FaultyBackend(memory, corrupt_writes=True).put("k", sender, size=len(data))
    kept = stored(memory, "k")
    assert sender.digests.xxh3 == xxh3_bytes(data)
    assert xxh3_bytes(kept) != sender.digests.xxh3
    assert sum(a != b for a, b in zip(kept, data, strict=True)) == 1


def test_fail_puts_after_bytes_breaks_the_upload_mid_stream(memory: MemoryBackend) -> None:
    faulty = FaultyBackend(memory, fail_puts_after_bytes=3)
    body = OneShotStream(b"abcdefgh")
    with pytest.raises(TransientBackendError) as caught:
        faulty.put("k", body)
    assert caught.value.key == "k"
    assert caught.value.backend == memory.url
    assert body.bytes_read == 3
    with pytest.raises(ObjectNotFound):
        memory.head("k")


def test_fault_exception_can_be_a_class_or_a_factory(memory: MemoryBackend) -> None:
    full = FaultyBackend(memory, fail_calls={"put": 1}, fail_with=InsufficientStorage)
    with pytest.raises(InsufficientStorage, match="injected"):
        full.put("k", io.BytesIO(b"x"))
    full.put("k", io.BytesIO(b"x"))  # the budget of one failure is spent
    assert stored(memory, "k") == b"x"

    custom = FaultyBackend(memory, fail_calls={"head": 1}, fail_with=lambda key: OSError(f"disk gone: {key}"))
    with pytest.raises(OSError, match="disk gone: k"):
        custom.head("k")


def test_fail_times_limits_how_many_puts_break(memory: MemoryBackend) -> None:
    faulty = FaultyBackend(memory, fail_puts_after_bytes=1, fail_times=1)
    with pytest.raises(TransientBackendError):
        faulty.put("k", io.BytesIO(b"abc"))
    faulty.put("k", io.BytesIO(b"abc"))
    assert stored(memory, "k") == b"abc"
    assert faulty.calls == {"put": 2}


# -- DryRunBackend -------------------------------------------------------------------------------


def test_dry_run_records_writes_without_doing_or_reading_them(memory: MemoryBackend) -> None:
    memory.put("existing", io.BytesIO(b"still here"))
    dry = DryRunBackend(memory)
    assert isinstance(dry, Backend)
    assert dry.url == memory.url

    dry.put("new/obj", ExplodingBody(), size=123, metadata={"xxh3-128": "d"})
    dry.delete("existing")
    assert dry.abort_incomplete("new/") == 0
    dry.request_restore("cold/obj", days=7)

    assert [(r.op, r.key) for r in dry.recorded] == [
        ("put", "new/obj"),
        ("delete", "existing"),
        ("abort_incomplete", "new/"),
        ("request_restore", "cold/obj"),
    ]
    assert dry.recorded[0].size == 123
    assert dry.recorded[0].metadata == {"xxh3-128": "d"}
    assert dry.recorded[3].detail == {"days": 7, "retrieval_tier": "Standard"}
    assert [o.key for o in memory.list()] == ["existing"]


def test_dry_run_reads_pass_through(memory: MemoryBackend) -> None:
    memory.put("a/x", io.BytesIO(b"bytes"))
    dry = DryRunBackend(memory)
    assert dry.head("a/x").size == 5
    assert stored(dry, "a/x") == b"bytes"
    assert [o.key for o in dry.list("a/")] == ["a/x"]
    assert dry.locate("a/x") == memory.locate("a/x")
    with pytest.raises(ObjectNotFound):
        dry.head("missing")


def test_dry_run_still_rejects_unsafe_keys(memory: MemoryBackend) -> None:
    with pytest.raises(ValueError):
        DryRunBackend(memory).put("../escape", ExplodingBody())



# -- open_backend ---------------------------------------------------------------------------------


def test_open_backend_builds_memory_and_file_backends_unwrapped(tmp_path: Path) -> None:
    transfer = TransferConfig()
    name = f"hot-{uuid.uuid4().hex}"
    memory = open_backend("hot", TierConfig(rank=0, backend=f"memory://{name}"), transfer)
    assert isinstance(memory, MemoryBackend)
    assert memory.url == f"memory://{name}"

    root = tmp_path / "warm tier"
    file = open_backend("warm", TierConfig(rank=1, backend=root.as_uri()), transfer)
    assert isinstance(file, FileBackend)
    file.put("a/b", io.BytesIO(b"on disk"))
    assert (root / "a" / "b").read_bytes() == b"on disk"


def test_open_backend_wraps_s3_in_retries_counting_the_first_attempt() -> None:
    tier = TierConfig(rank=0, backend="s3://bucket/prefix", endpoint="http://127.0.0.1:9")
    backend = open_backend("hot", tier, TransferConfig(retries=3))
    assert isinstance(backend, RetryingBackend)
    assert backend.attempts == 4
    assert backend.url == "s3://bucket/prefix"
