"""A registration's source files: scanned (a local tree), hashed (small local files kept for the upload),
and read back through :class:`Preloaded` so the bytes sent are the bytes hashed."""

from __future__ import annotations

import io
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from tiering.errors import InvalidName, PathNotFound, UsageError
from tiering.layout import ManifestEntry, check_member_path
from tiering.storage.base import Backend, ObjectInfo, ReadStream, read_up_to
from tiering.storage.file import FileBackend
from tiering.storage.tree import scan_directory, scan_file
from tiering.transfer.hashing import CHUNK_SIZE, Digests, hash_stream


@dataclass(frozen=True)
class SourceFile:
    path: str  # member path
    size: int
    key: str  # key in the source backend
    mode: int | None = None  # permission bits of a local file
    mtime_ns: int | None = None


def scan_local(
    source: Path, *, follow_links: bool = False,
) -> tuple[FileBackend, list[SourceFile], list[ManifestEntry]]:
    """The files, directories and links of a local source (see :func:`tiering.storage.tree.scan_directory` for what
    is refused)."""
    if not source.exists() and not source.is_symlink():
        raise PathNotFound(str(source))
    entries: list[ManifestEntry] = []
    if source.is_dir():
        root = source
        try:
            tree = scan_directory(source, follow_links=follow_links)
        except InvalidName as exc:  # the refusal names the source it came from
            raise InvalidName(f"{str(source).rstrip('/')}: {exc}") from None
        files = [SourceFile(f.path, f.size, f.path, f.mode, f.mtime_ns) for f in tree.files]
        entries = tree.entries
    else:
        root = source.parent
        f = scan_file(source)
        files = [SourceFile(member_path(str(source), f.path), f.size, f.path, f.mode, f.mtime_ns)]
    if not files:
        raise UsageError(f"{source} holds no files to register")
    return FileBackend(root, fsync=False), files, entries


#: registering local files keeps the bytes the hashing pass read of files up to this size for the upload
#: (one read of each instead of two, and the bytes sent are the bytes hashed), up to PRELOAD_BYTES in all
PRELOAD_FILE_MAX = 1024 * 1024
PRELOAD_BYTES = 256 * 1024 * 1024


class Preloaded:
    """A registration's local source that hands out the bytes the hashing pass kept, once each; anything
    else (a file not kept, a second read, a range) is read from ``inner``. The copier only reads through it;
    anything else is asked of ``inner`` (``unwrap``)."""

    def __init__(self, inner: Backend, kept: dict[str, bytes]) -> None:
        self._inner = inner
        self._kept = kept
        self.url = inner.url

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        data = self._kept.pop(key, None)  # atomic: a copy thread takes it once, and the memory goes with it
        if data is None or offset:
            return self._inner.open_read(key, offset=offset, length=length)
        return io.BytesIO(data if length is None else data[:length])

    def head(self, key: str) -> ObjectInfo:
        return self._inner.head(key)

    def unwrap(self) -> Backend:
        return self._inner


#: a hashing task reads files until it holds this many, or HASH_TASK_BYTES (one future per small file
#: would cost more than reading it)
HASH_TASK_FILES = 64
HASH_TASK_BYTES = 8 * 1024 * 1024
#: threads of the hashing pass at most: reads from the page cache are short and more threads only fight
#: over the GIL (measured in bench/); a few still overlap the reads of a slower source
HASH_THREADS = 4
#: local files smaller than this on average are read on the calling thread, unless reading the first task
#: kept it waiting for storage: each read hands the GIL to another thread, which costs more than the read;
#: larger files gain from a second thread (measured in bench/)
SMALL_FILES = 256 * 1024


def hash_all(
    backend: Backend, files: list[SourceFile], workers: int, *, local: bool,
) -> tuple[dict[str, Digests], dict[str, bytes]]:
    """Digests of every file (by member path) and, for ``local`` files, the bytes of the small ones (by key).

    Local files are read on at most HASH_THREADS threads, several per task; objects on a tier (adopting)
    one per task on ``workers`` threads, as each read waits for a server.
    """
    kept: dict[str, bytes] = {}
    budget = PRELOAD_BYTES if local else 0
    per_task = HASH_TASK_FILES if local else 1
    tasks: list[list[tuple[SourceFile, bool]]] = [[]]
    task_bytes = 0
    for f in files:
        take = f.size <= PRELOAD_FILE_MAX and f.size <= budget
        if take:
            budget -= f.size
        if len(tasks[-1]) >= per_task or (tasks[-1] and task_bytes + f.size > HASH_TASK_BYTES):
            tasks.append([])
            task_bytes = 0
        tasks[-1].append((f, take))
        task_bytes += f.size

    def one(f: SourceFile, take: bool) -> Digests:
        stream = backend.open_read(f.key)
        try:
            if not take:
                return hash_stream(stream, md5=False)
            data = read_up_to(stream, f.size + 1)
            digests = Digests()
            digests.update(data)
            if len(data) > f.size:  # it grew since the scan: hash it all, keep nothing (the copy will see it)
                while chunk := stream.read(CHUNK_SIZE):
                    digests.update(chunk)
                return digests
        finally:
            stream.close()
        kept[f.key] = data
        return digests

    def task(batch: list[tuple[SourceFile, bool]]) -> list[tuple[str, Digests]]:
        return [(f.path, one(f, take)) for f, take in batch]

    digests: dict[str, Digests] = {}
    threads = max(1, min(workers, HASH_THREADS) if local else workers)
    if local and threads > 1 and sum(f.size for f in files) < SMALL_FILES * len(files):
        wall, cpu = time.monotonic(), time.thread_time()
        digests.update(task(tasks[0]))
        wall, cpu = time.monotonic() - wall, time.thread_time() - cpu
        tasks = tasks[1:]
        if wall < 2 * cpu:  # on the CPU more than half the time: the files came from memory
            threads = 1
    if threads == 1:
        for batch in tasks:
            digests.update(task(batch))
        return digests, kept
    with ThreadPoolExecutor(max_workers=threads) as pool:
        for done in pool.map(task, tasks):
            digests.update(done)
    return digests, kept


def member_path(source: str, path: str) -> str:
    """``path`` checked as a member path; a refusal names the source it came from."""
    try:
        return check_member_path(path)
    except InvalidName as exc:
        raise InvalidName(f"{source.rstrip('/')}: {exc}") from None
