"""Streaming digests: xxh3-128 always, md5 / sha256 on request, computed while the bytes pass.

The hex digest of xxh3-128 is the catalog's identity for a member's content. Chunks of at least
1 MiB let xxhash release the GIL, so hashing runs beside other copy threads.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any, BinaryIO

import xxhash

#: read size for hashing and streaming copies (bytes); xxhash releases the GIL from 1 MiB on
CHUNK_SIZE = 1024 * 1024


class Digests:
    """Accumulates xxh3-128 (and optionally md5 / sha256) over bytes fed in order."""

    def __init__(self, *, md5: bool = False, sha256: bool = False) -> None:
        self._xxh = xxhash.xxh3_128()
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self._sha256 = hashlib.sha256() if sha256 else None
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._xxh.update(data)
        if self._md5 is not None:
            self._md5.update(data)
        if self._sha256 is not None:
            self._sha256.update(data)
        self.size += len(data)

    @property
    def xxh3(self) -> str:
        return self._xxh.hexdigest()

    @property
    def md5(self) -> str | None:
        return self._md5.hexdigest() if self._md5 is not None else None

    @property
    def sha256(self) -> str | None:
        return self._sha256.hexdigest() if self._sha256 is not None else None


class HashingReader:
    """A file-like wrapper that hashes every byte read through it.

    ``limit`` caps how many bytes are read from ``raw`` (for a member inside a shard).
    """

    def __init__(self, raw: Any, digests: Digests | None = None, *, limit: int | None = None) -> None:
        self._raw = raw
        self.digests = digests or Digests()
        self._left = limit

    def read(self, size: int = -1, /) -> bytes:
        if self._left is not None:
            if self._left <= 0:
                return b""
            size = self._left if size is None or size < 0 else min(size, self._left)
        data: bytes = self._raw.read(size) if size is not None and size >= 0 else self._raw.read()
        if data:
            self.digests.update(data)
            if self._left is not None:
                self._left -= len(data)
        return data

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        close = getattr(self._raw, "close", None)
        if close is not None:
            close()


def xxh3_bytes(data: bytes) -> str:
    return xxhash.xxh3_128_hexdigest(data)


def hash_stream(stream: BinaryIO | Any, *, md5: bool = False, sha256: bool = False) -> Digests:
    """Read ``stream`` to EOF and return its digests."""
    digests = Digests(md5=md5, sha256=sha256)
    while True:
        chunk = stream.read(CHUNK_SIZE)
        if not chunk:
            return digests
        digests.update(chunk)


def hash_chunks(chunks: Iterable[bytes]) -> Digests:
    digests = Digests()
    for chunk in chunks:
        digests.update(chunk)
    return digests
