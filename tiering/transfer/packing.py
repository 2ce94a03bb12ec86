"""Small members packed into tar shard objects on an archive tier (tape hates many small objects).

When a dataset moves to a tier with ``archive`` set, every member smaller than the tier's ``pack_threshold``
(bytes) goes into a shard: a plain POSIX tar (pax headers where a path needs them) at
``<kind>/<name>/<version>/_shards/shard-NNNNN.tar``, filled to about ``shard_size`` bytes. Larger members
stay single objects at their usual key. Any tar tool can unpack a shard; the manifest and the catalog record
where each member's bytes start (``offset``), so one member is read back with a ranged GET.

Everything about a shard's layout is a pure function of the members' paths and sizes:

* :func:`plan_shards` assigns members to shards: sorted by path, greedily, a new shard when the next member
  would take the current one past ``shard_size`` (a shard holds at least one member);
* :func:`layout_shard` gives each member's tar header bytes and offsets (headers carry the member's
  recorded mode and mtime, whole seconds, or 0644 and 0 when not known; uid/gid 0, no user names). Mode
  and mtime fill fixed-width header fields, so a header's length, and every offset, depends on the path
  and size alone.

So the same members always land in the same shard, at the same offsets, with the same bytes around them:
a resumed or retried move rewrites its own attempt at the same key. A dataset holding a member under
``_shards/`` is never packed, so a shard key can never collide with a member's own key.

:func:`write_shard` streams a shard from its members' sources (read in parallel ahead of the writer, each
member hashed and checked against its catalog digest on the way), then :func:`verify_shard` reads the
stored shard back and checks every tar header and every member's size and xxh3-128, before the caller may
trust (commit) anything in it. A failure is raised as a :class:`~tiering.errors.TieringError` naming the
dataset and the member's path; the caller deletes the shard.
"""

from __future__ import annotations

import collections
import tarfile
import threading
from collections.abc import Callable, Generator, Iterable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Final, Literal

from tiering.errors import CorruptedCopy, SourceChanged
from tiering.storage.base import Backend, ReadStream
from tiering.transfer.hashing import CHUNK_SIZE, Digests

#: directory (under the dataset prefix) holding shard objects
SHARD_DIR: Final = "_shards"
#: tar block size (bytes); every header and every member's data is padded to it
TAR_BLOCK: Final = 512
#: the end-of-archive marker: two zero blocks (bytes)
TAR_END: Final = 2 * TAR_BLOCK
#: at most this many bytes of members are read ahead of the shard writer
DEFAULT_PREFETCH_BYTES: Final = 64 * 2**20
#: metadata key on a shard object saying how many members it holds
SHARD_METADATA_KEY: Final = "tiering-shard-members"


def shard_name(index: int) -> str:
    """The key of shard ``index`` relative to the dataset prefix."""
    return f"{SHARD_DIR}/shard-{index:05d}.tar"


def is_shard_key(key: str) -> bool:
    """True for a key (relative to a tier) that names a shard object."""
    return f"/{SHARD_DIR}/" in f"/{key}" and key.endswith(".tar")


#: the largest mtime (seconds) a ustar header field holds; beyond it (and before 1970) a pax record would
#: be needed, which would change the header's length
TAR_MTIME_MAX: Final = 8**11 - 1


def tar_header(path: str, size: int, *, mode: int | None = None, mtime_ns: int | None = None) -> bytes:
    """The deterministic tar header block(s) of a regular file ``path`` of ``size`` bytes, with permission
    bits ``mode`` (0644 when None) and modification time ``mtime_ns`` (ns; whole seconds kept, clamped to
    what a ustar field holds; 0 when None)."""
    info = tarfile.TarInfo(path)
    info.size = size
    info.mtime = 0 if mtime_ns is None else min(max(mtime_ns // 1_000_000_000, 0), TAR_MTIME_MAX)
    info.mode = 0o644 if mode is None else mode & 0o7777
    info.type = tarfile.REGTYPE
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")


def _padding(size: int) -> int:
    return -size % TAR_BLOCK


@dataclass(frozen=True)
class ShardEntry:
    """One member inside a shard: its header starts at ``header_offset``, its bytes at ``data_offset``."""

    path: str
    size: int
    header_offset: int
    data_offset: int
    header: bytes = field(repr=False)

    @property
    def end(self) -> int:
        """Offset just past this member's padded data: where the next header starts."""
        return self.data_offset + self.size + _padding(self.size)


@dataclass(frozen=True)
class ShardLayout:
    """A whole shard: its name (relative to the dataset prefix), members in order, and total size (bytes)."""

    name: str
    entries: tuple[ShardEntry, ...]
    size: int


def layout_shard(
    name: str,
    members: Iterable[tuple[str, int]],
    *,
    attrs: Mapping[str, tuple[int | None, int | None]] | None = None,
) -> ShardLayout:
    """Lay out ``(path, size)`` members in the order given, followed by the end-of-archive marker.

    ``attrs`` gives members' ``(mode, mtime_ns)`` for their headers (see :func:`tar_header`).
    """
    known = attrs or {}
    return _layout(name, [
        (path, size, tar_header(path, size, mode=known.get(path, (None, None))[0],
                                mtime_ns=known.get(path, (None, None))[1]))
        for path, size in members
    ])


def _layout(name: str, members: Iterable[tuple[str, int, bytes]]) -> ShardLayout:
    entries: list[ShardEntry] = []
    pos = 0
    for path, size, header in members:
        entry = ShardEntry(path, size, pos, pos + len(header), header)
        entries.append(entry)
        pos = entry.end
    return ShardLayout(name, tuple(entries), pos + TAR_END)


def plan_shards(
    members: Iterable[tuple[str, int]], *, threshold: int, shard_size: int
) -> list[ShardLayout]:
    """Which members (``(path, size)``, sizes in bytes) go into which shard, and where.

    Members of ``threshold`` bytes or more are not packed. The others, sorted by path, fill shards of at
    most ``shard_size`` bytes each (a member bigger than that gets a shard of its own). Returns no shard at
    all when some member's path lies under ``_shards/`` (its key could collide with a shard's).
    """
    all_members = list(members)
    if any(p == SHARD_DIR or p.startswith(SHARD_DIR + "/") for p, _ in all_members):
        return []
    groups: list[list[tuple[str, int, bytes]]] = []
    used = 0
    for path, size in sorted((p, s) for p, s in all_members if s < threshold):
        header = tar_header(path, size)
        length = len(header) + size + _padding(size)
        if not groups or used + length + TAR_END > shard_size:
            groups.append([])
            used = 0
        groups[-1].append((path, size, header))
        used += length
    return [_layout(shard_name(i), group) for i, group in enumerate(groups)]


# ------------------------------------------------------------------------------------------ writing


@dataclass(frozen=True)
class MemberSource:
    """Where one member's bytes are read (``src_offset`` is set when the source is itself a shard)."""

    path: str
    size: int
    xxh3: str
    src_key: str
    src_offset: int | None = None


def _read_exact(stream: ReadStream, n: int) -> bytes:
    chunks: list[bytes] = []
    left = n
    while left > 0:
        chunk = stream.read(min(left, CHUNK_SIZE))
        if not chunk:
            break
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


class ShardStream:
    """A file-like object producing a shard's tar bytes, reading its members from ``src`` ahead of time.

    Members are fetched by ``workers`` threads, in order, never more than ``prefetch_bytes`` bytes ahead of
    the reader (but always at least the next member). Each member's bytes are hashed as they arrive; a
    member whose bytes do not match its catalog size and xxh3-128 raises :class:`SourceChanged` (naming the
    dataset and path) from :meth:`read`, so the backend's ``put`` fails and stores nothing.
    ``on_member(size)`` is called as each member's bytes are handed on (for progress displays).
    Always :meth:`close` it: that stops the fetch threads.
    """

    def __init__(
        self,
        layout: ShardLayout,
        sources: Mapping[str, MemberSource],
        src: Backend,
        *,
        label: str,
        workers: int = 8,
        prefetch_bytes: int = DEFAULT_PREFETCH_BYTES,
        on_member: Callable[[int], None] | None = None,
    ) -> None:
        self._layout = layout
        self._sources = sources
        self._src = src
        self._label = label
        self._prefetch_bytes = prefetch_bytes
        self._on_member = on_member
        #: members fetched ahead at most (many tiny members must not become thousands of futures)
        self._max_ahead = 16 * max(1, workers)
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="shard-fetch")
        self._closed = threading.Event()
        self._chunks = self._generate()
        self._buffer = b""
        self.bytes_out = 0

    def _fetch(self, source: MemberSource) -> bytes:
        if self._closed.is_set():
            return b""
        offset = source.src_offset
        stream = self._src.open_read(
            source.src_key, offset=offset or 0, length=source.size if offset is not None else None
        )
        try:
            data = _read_exact(stream, source.size + 1) if offset is None else _read_exact(stream, source.size)
        finally:
            stream.close()
        digests = Digests()
        digests.update(data)
        if digests.size != source.size or digests.xxh3 != source.xxh3:
            where = f"{self._src.url}/{source.src_key}" + (f"@{offset}" if offset is not None else "")
            raise SourceChanged(
                f"{where} (member {source.path} of {self._label})", source.xxh3,
                f"{digests.xxh3} ({digests.size} bytes)",
            )
        return data

    def _generate(self) -> Generator[bytes, None, None]:
        entries = self._layout.entries
        pending: collections.deque[tuple[int, Future[bytes]]] = collections.deque()
        ahead = 0
        submitted = 0
        for index, entry in enumerate(entries):
            while submitted < len(entries) and (
                submitted <= index
                or (ahead + entries[submitted].size <= self._prefetch_bytes and len(pending) < self._max_ahead)
            ):
                source = self._sources[entries[submitted].path]
                pending.append((source.size, self._pool.submit(self._fetch, source)))
                ahead += source.size
                submitted += 1
            size, future = pending.popleft()
            data = future.result()
            ahead -= size
            yield entry.header
            yield data
            if self._on_member is not None:
                self._on_member(entry.size)
            pad = _padding(entry.size)
            if pad:
                yield bytes(pad)
        yield bytes(TAR_END)

    def read(self, size: int = -1, /) -> bytes:
        parts = [self._buffer] if self._buffer else []
        have = len(self._buffer)
        while size is None or size < 0 or have < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            parts.append(chunk)
            have += len(chunk)
        data = b"".join(parts)
        if size is None or size < 0:
            out, self._buffer = data, b""
        else:
            out, self._buffer = data[:size], data[size:]
        self.bytes_out += len(out)
        return out

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._closed.set()
        self._chunks.close()
        self._pool.shutdown(wait=True, cancel_futures=True)


def write_shard(
    src: Backend,
    dst: Backend,
    key: str,
    layout: ShardLayout,
    sources: Mapping[str, MemberSource],
    *,
    label: str,
    workers: int = 8,
    verify: Literal["auto", "readback", "stream"] = "auto",
    on_member: Callable[[int], None] | None = None,
) -> None:
    """Write the shard ``layout`` to ``dst`` at ``key`` from its members' ``sources``, then verify it.

    Overwrites ``key`` (a retry rewrites its own attempt). Raises :class:`SourceChanged` when a source member
    does not hash to its catalog digest, :class:`CorruptedCopy` when the stored shard does not check out
    (see :func:`verify_shard`), ``BackendError`` from either backend. On any error the caller deletes ``key``.
    """
    stream = ShardStream(layout, sources, src, label=label, workers=workers, on_member=on_member)
    try:
        dst.put(key, stream, size=layout.size, metadata={SHARD_METADATA_KEY: str(len(layout.entries))})
    finally:
        stream.close()
    if stream.bytes_out != layout.size:
        raise CorruptedCopy(src.url, f"{dst.url}/{key}", f"{layout.size} bytes", f"{stream.bytes_out} bytes sent")
    # a shard has no digest known before it is written, so the destination cannot check it: ``auto`` reads it back
    verify_shard(dst, key, layout, sources, label=label, readback=verify != "stream")


def verify_shard(
    dst: Backend,
    key: str,
    layout: ShardLayout,
    sources: Mapping[str, MemberSource],
    *,
    label: str,
    readback: bool = True,
) -> None:
    """Check the shard stored at ``key``: its size, and with ``readback`` every header and member.

    One sequential read of the whole object: each tar header must equal the expected bytes, each member's
    bytes must hash to its catalog xxh3-128, and the archive must end where the layout says. Without
    ``readback`` (an archive that cannot be read before a restore) only the stored size is checked; the
    member hashes were checked while streaming. Raises :class:`CorruptedCopy` naming the dataset and path.
    """
    where = f"{dst.url}/{key}"
    if not readback:
        info = dst.head(key)
        if info.size != layout.size:
            raise CorruptedCopy(f"shard of {label}", where, f"{layout.size} bytes", f"{info.size} bytes")
        return
    stream = dst.open_read(key)
    try:
        pos = 0
        for entry in layout.entries:
            member = f"{where}@{entry.data_offset} (member {entry.path} of {label})"
            header = _read_exact(stream, len(entry.header))
            if header != entry.header:
                raise CorruptedCopy(sources[entry.path].src_key, member, "the tar header written",
                                    "different bytes")
            digests = Digests()
            left = entry.size
            while left > 0:
                chunk = stream.read(min(left, CHUNK_SIZE))
                if not chunk:
                    break
                digests.update(chunk)
                left -= len(chunk)
            expected = sources[entry.path].xxh3
            if digests.size != entry.size or digests.xxh3 != expected:
                raise CorruptedCopy(sources[entry.path].src_key, member, expected,
                                    f"{digests.xxh3} ({digests.size} bytes)")
            _read_exact(stream, _padding(entry.size))
            pos = entry.end
        tail = _read_exact(stream, TAR_END + 1)
        if len(tail) != TAR_END or any(tail):
            raise CorruptedCopy(f"shard of {label}", where, f"{layout.size} bytes ending in zero blocks",
                                f"{pos + len(tail)} bytes")
    finally:
        stream.close()


# ------------------------------------------------------------------------------------------ checking a stored shard


@dataclass(frozen=True)
class ShardProblem:
    """Something wrong inside a stored shard. ``path`` is the member's path, or the tar entry's name when the
    catalog places no member at its offset. ``problem``: ``unsafe_tar_entry`` (an absolute name, a ``..``
    component, a link, device or anything but a regular file: unpacking it could write outside the target),
    ``tar_name_mismatch`` (the entry at a member's offset carries another name), ``unexpected_tar_entry`` (an
    entry where the catalog has no member), ``missing`` (no entry at a member's offset), ``size_mismatch``,
    ``checksum_mismatch``, ``error`` (the shard is not a readable tar)."""

    path: str
    problem: str
    detail: str
    offset: int | None = None


def _unsafe_reason(info: tarfile.TarInfo) -> str:
    if info.name.startswith("/"):
        return "absolute name"
    if ".." in info.name.split("/"):
        return "'..' component in its name"
    if info.issym() or info.islnk():
        return f"a link to {info.linkname!r}"
    if info.ischr() or info.isblk() or info.isfifo():
        return "a device or pipe"
    if not info.isreg():
        return f"not a regular file (tar type {info.type!r})"
    return ""


def scan_shard(
    stream: ReadStream, members: Mapping[int, tuple[str, int, str]], *, on_member: Callable[[int], None] | None = None,
) -> tuple[list[ShardProblem], int]:
    """Read a stored shard once, front to back, checking every tar entry and every member it should hold.

    ``members`` maps each member's data offset to its (path, size in bytes, xxh3-128) from the catalog. Every
    entry must be safe to unpack (a regular file, a relative name without ``..``) and carry the name of the
    member the catalog places at its data offset; each member's bytes must hash to its digest.
    ``on_member(size)`` is called as each member is checked. Returns the problems and the bytes hashed.
    """
    problems: list[ShardProblem] = []
    seen: set[int] = set()
    hashed = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|") as tar:  # type: ignore[call-overload]
            for info in tar:
                member = members.get(info.offset_data)
                unsafe = _unsafe_reason(info)
                if unsafe:
                    problems.append(ShardProblem(member[0] if member else info.name, "unsafe_tar_entry",
                                                 f"tar entry {info.name!r} at offset {info.offset}: {unsafe}",
                                                 info.offset_data))
                if member is None:
                    if not unsafe:
                        problems.append(ShardProblem(info.name, "unexpected_tar_entry",
                                                     f"tar entry {info.name!r} at offset {info.offset} is no member "
                                                     "the catalog knows", info.offset_data))
                    continue
                path, size, xxh3 = member
                seen.add(info.offset_data)
                if info.name != path:
                    problems.append(ShardProblem(path, "tar_name_mismatch",
                                                 f"the tar entry at offset {info.offset} is named {info.name!r}",
                                                 info.offset_data))
                if unsafe:
                    continue
                digests = Digests()
                data = tar.extractfile(info)
                if data is not None:
                    while chunk := data.read(CHUNK_SIZE):
                        digests.update(chunk)
                hashed += digests.size
                if on_member is not None:
                    on_member(size)
                if digests.size != size:
                    problems.append(ShardProblem(path, "size_mismatch", f"{digests.size} != {size} bytes",
                                                 info.offset_data))
                elif digests.xxh3 != xxh3:
                    problems.append(ShardProblem(path, "checksum_mismatch", f"{digests.xxh3} != {xxh3}",
                                                 info.offset_data))
    except (tarfile.TarError, EOFError) as exc:
        problems.append(ShardProblem("", "error", f"not a readable tar after {hashed} member bytes: {exc}"))
    for offset, (path, _size, _xxh3) in sorted(members.items()):
        if offset not in seen:
            problems.append(ShardProblem(path, "missing", f"no tar entry holds its bytes at offset {offset}", offset))
    return problems, hashed
