"""From an object read to a dataset read, and from reads to per-day counts.

Objects live at ``<tier prefix>/<kind>/<name>/<version>/<relative path>`` (DESIGN section 4), so a
key belongs to the dataset whose prefix it starts with. :class:`DatasetPrefixIndex` answers that in
a few dictionary probes, however many datasets there are. :class:`ReadCounter` folds a stream of
:class:`~tiering.access.events.AccessEvent` into one count per (dataset, UTC day), so the catalog
takes one upsert per dataset-day instead of one write per read.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Generic, TypeVar

from tiering.access.events import AccessEvent, ObjectRead
from tiering.errors import UsageError

IdT = TypeVar("IdT", bound=Hashable)

#: directory under each dataset version that holds our manifest; reads there are ours, not users'
INTERNAL_DIR = "_tiering/"

#: directories per bucket whose match :class:`DatasetPrefixIndex` remembers before emptying that cache
_DIRECTORY_CACHE_LIMIT = 65_536


class DatasetPrefixError(UsageError):
    """A prefix given to :class:`DatasetPrefixIndex` is empty or already belongs to another dataset."""

    reason = "dataset_prefix"

    def __init__(self, message: str, *, bucket: str, prefix: str) -> None:
        self.bucket = bucket
        self.prefix = prefix
        super().__init__(f"bucket {bucket!r}, prefix {prefix!r}: {message}")


class DatasetPrefixIndex(Generic[IdT]):
    """Maps ``(bucket, key)`` to the dataset whose prefix the key starts with.

    Prefixes end at a ``/`` boundary (one is appended when missing); ``a/b/`` never matches the key
    ``a/bc/x``. Prefixes of one bucket are grouped by their number of path components, so a lookup
    costs one slice and one dict probe per distinct depth in that bucket (usually one), independent
    of the number of datasets. Where nested prefixes both match, the longer one wins.

    A match depends only on the key's directory (the key up to its last ``/``), and a log reads many
    objects of one directory, so the answer is remembered per bucket and directory (up to
    :data:`_DIRECTORY_CACHE_LIMIT` directories a bucket) until the next :meth:`add`.
    """

    __slots__ = ("_by_bucket", "_depths", "_size", "_directories")

    def __init__(self, entries: Iterable[tuple[str, str, IdT]] = ()) -> None:
        self._by_bucket: dict[str, dict[int, dict[str, IdT]]] = {}
        self._depths: dict[str, tuple[int, ...]] = {}
        self._size = 0
        # bucket -> directory -> match; () for "no dataset"
        self._directories: dict[str, dict[str, tuple[IdT, int] | tuple[()]]] = {}
        for bucket, prefix, dataset_id in entries:
            self.add(bucket, prefix, dataset_id)

    def __len__(self) -> int:
        return self._size

    def add(self, bucket: str, prefix: str, dataset_id: IdT) -> None:
        """Register ``prefix`` in ``bucket`` as ``dataset_id``'s; adding the same triple twice is a no-op.

        Raises :class:`DatasetPrefixError` for an empty prefix, or one already held by another dataset.
        """
        normal = prefix.lstrip("/")
        if not normal.strip("/"):
            raise DatasetPrefixError("a dataset prefix cannot be empty", bucket=bucket, prefix=prefix)
        if not normal.endswith("/"):
            normal += "/"
        depth = normal.count("/")
        by_depth = self._by_bucket.setdefault(bucket, {})
        table = by_depth.setdefault(depth, {})
        held = table.get(normal)
        if held is not None:
            if held != dataset_id:
                raise DatasetPrefixError(
                    f"already belongs to dataset {held!r}, cannot also be {dataset_id!r}",
                    bucket=bucket,
                    prefix=prefix,
                )
            return
        table[normal] = dataset_id
        self._size += 1
        self._depths[bucket] = tuple(sorted(by_depth, reverse=True))
        self._directories.pop(bucket, None)

    def match(self, bucket: str, key: str) -> tuple[IdT, int] | None:
        """The dataset holding ``key`` and the length of its prefix in ``key``, or None."""
        directory = key[: key.rfind("/") + 1]
        known = self._directories.get(bucket)
        if known is None:
            if bucket not in self._depths:
                return None
            known = self._directories[bucket] = {}
        found = known.get(directory)
        if found is None:
            found = self._match_directory(bucket, directory) or ()
            if len(known) >= _DIRECTORY_CACHE_LIMIT:
                known.clear()
            known[directory] = found
        return found or None

    def _match_directory(self, bucket: str, directory: str) -> tuple[IdT, int] | None:
        by_depth = self._by_bucket[bucket]
        for depth in self._depths[bucket]:
            end = -1
            for _ in range(depth):
                end = directory.find("/", end + 1)
                if end < 0:
                    break
            else:
                found = by_depth[depth].get(directory[: end + 1])
                if found is not None:
                    return found, end + 1
        return None

    def lookup(self, bucket: str, key: str) -> IdT | None:
        """The dataset that ``key`` in ``bucket`` belongs to, or None when no prefix matches."""
        found = self.match(bucket, key)
        return None if found is None else found[0]


@dataclass(frozen=True, slots=True)
class ReadBatch(Generic[IdT]):
    """Reads per (dataset id, UTC day), and the latest read (UTC) per dataset, ready for the catalog."""

    counts: dict[tuple[IdT, date], int]
    last_seen: dict[IdT, datetime]


class ReadCounter(Generic[IdT]):
    """Counts reads per (dataset id, UTC day), in memory, for one batched write to the catalog.

    An event counts for the dataset its key maps to through ``index``; a direct dataset read
    (``event.dataset`` set) counts for ``resolve_label(event.dataset)``. Not counted, each with its
    own counter: keys under a dataset's ``_tiering/`` directory (our manifests) in ``internal``;
    events whose ``principal`` is in ``ignore_principals`` (the tiering service's own copies) in
    ``ignored_principal``; keys or labels that map to no dataset in ``unmatched``.
    """

    __slots__ = (
        "_index",
        "_resolve_label",
        "_ignore_principals",
        "_counts",
        "_last_seen",
        "counted",
        "internal",
        "ignored_principal",
        "unmatched",
    )

    def __init__(
        self,
        index: DatasetPrefixIndex[IdT],
        *,
        resolve_label: Callable[[str], IdT | None] | None = None,
        ignore_principals: Iterable[str] = (),
    ) -> None:
        self._index = index
        self._resolve_label = resolve_label
        self._ignore_principals = frozenset(ignore_principals)
        self._counts: dict[tuple[IdT, date], int] = {}
        self._last_seen: dict[IdT, datetime] = {}
        self.counted = 0
        self.internal = 0
        self.ignored_principal = 0
        self.unmatched = 0

    def add(self, event: AccessEvent) -> IdT | None:
        """Count ``event``; return the dataset it was counted for, or None if it was not counted."""
        if event.principal is not None and event.principal in self._ignore_principals:
            self.ignored_principal += 1
            return None
        if event.dataset is not None:
            dataset_id = self._resolve_label(event.dataset) if self._resolve_label is not None else None
        else:
            found = self._index.match(event.bucket, event.key)
            if found is None:
                dataset_id = None
            elif event.key.startswith(INTERNAL_DIR, found[1]):
                self.internal += 1
                return None
            else:
                dataset_id = found[0]
        if dataset_id is None:
            self.unmatched += 1
            return None
        at = event.at
        day_key = (dataset_id, at.date())
        self._counts[day_key] = self._counts.get(day_key, 0) + 1
        latest = self._last_seen.get(dataset_id)
        if latest is None or at > latest:
            self._last_seen[dataset_id] = at
        self.counted += 1
        return dataset_id

    def add_all(self, events: Iterable[AccessEvent]) -> None:
        """Count every event of ``events``."""
        for event in events:
            self.add(event)

    def add_object_reads(self, reads: Iterable[ObjectRead]) -> None:
        """Count every read of ``reads`` exactly as :meth:`add` counts the same reads as events.

        The fast path of an import (see :func:`tiering.access.formats.iter_object_reads`): one loop,
        no event objects, the totals kept in locals and added to the counters when ``reads`` ends or raises.
        """
        ignore = self._ignore_principals
        match = self._index.match
        counts = self._counts
        last_seen = self._last_seen
        counted = internal = ignored = unmatched = 0
        try:
            for bucket, key, at, principal in reads:
                if principal is not None and principal in ignore:
                    ignored += 1
                    continue
                found = match(bucket, key)
                if found is None:
                    unmatched += 1
                    continue
                dataset_id, prefix_end = found
                if key.startswith(INTERNAL_DIR, prefix_end):
                    internal += 1
                    continue
                day_key = (dataset_id, at.date())
                counts[day_key] = counts.get(day_key, 0) + 1
                latest = last_seen.get(dataset_id)
                if latest is None or at > latest:
                    last_seen[dataset_id] = at
                counted += 1
        finally:
            self.counted += counted
            self.internal += internal
            self.ignored_principal += ignored
            self.unmatched += unmatched

    def __len__(self) -> int:
        """Number of distinct (dataset, day) pairs held."""
        return len(self._counts)

    def counts(self) -> Mapping[tuple[IdT, date], int]:
        """A snapshot of reads per (dataset id, UTC day) counted since creation or the last drain."""
        return dict(self._counts)

    def drain(self) -> ReadBatch[IdT]:
        """Hand over what was counted since creation or the last drain, and start empty.

        Lets a caller flush in batches, one upsert per dataset-day each. The ``counted``, ``internal``,
        ``ignored_principal`` and ``unmatched`` totals keep running.
        """
        batch = ReadBatch(self._counts, self._last_seen)
        self._counts = {}
        self._last_seen = {}
        return batch
