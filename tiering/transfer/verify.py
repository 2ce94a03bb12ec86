"""Reading back and hashing many stored objects at once, for a verify of what a tier holds."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from tiering.errors import TieringError
from tiering.storage.base import Backend
from tiering.transfer.hashing import Digests, hash_stream
from tiering.transfer.packing import ShardProblem, scan_shard


@dataclass(frozen=True)
class StoredObject:
    """One object to read back: ``length`` bytes of ``key`` from ``offset`` (None: to its end)."""

    backend: Backend
    key: str
    offset: int = 0
    length: int | None = None


@dataclass(frozen=True)
class StoredShard:
    """A stored shard to scan; ``members`` as :func:`~tiering.transfer.packing.scan_shard` takes them."""

    backend: Backend
    key: str
    members: Mapping[int, tuple[str, int, str]]


@dataclass
class ShardScan:
    """What a scan of one shard found: ``error`` when it could not be read (``opened``: it was opened)."""

    problems: list[ShardProblem] = field(default_factory=list)
    nbytes: int = 0
    error: TieringError | None = None
    opened: bool = True


def _hash_one(obj: StoredObject) -> Digests | TieringError:
    try:
        stream = obj.backend.open_read(obj.key, offset=obj.offset, length=obj.length)
        try:
            return hash_stream(stream)
        finally:
            stream.close()
    except TieringError as exc:
        return exc


def hash_many(objects: Iterable[StoredObject], *, workers: int) -> Generator[Digests | TieringError, None, None]:
    """Read and hash every object, ``workers`` at once; one result per object, in the objects' order.

    A storage error reading an object is that object's result; any other exception is raised.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        yield from pool.map(_hash_one, objects)


def scan_many(
    shards: Iterable[StoredShard], *, workers: int, on_member: Callable[[int], None] | None = None,
) -> Generator[ShardScan, None, None]:
    """Scan every shard once, front to back, ``workers`` at once; one result per shard, in their order.

    ``on_member(size)`` is called (from the workers) as each member is checked.
    """

    def scan(shard: StoredShard) -> ShardScan:
        try:
            stream = shard.backend.open_read(shard.key)
        except TieringError as exc:
            return ShardScan(error=exc, opened=False)
        try:
            found, nbytes = scan_shard(stream, shard.members, on_member=on_member)
        except TieringError as exc:
            return ShardScan(error=exc)
        finally:
            stream.close()
        return ShardScan(found, nbytes)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="verify") as pool:
        yield from pool.map(scan, shards)
