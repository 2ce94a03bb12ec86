"""A POSIX directory as a tier (NVMe or NFS mount, LTFS).

Objects are plain files under ``root`` with their key as relative path, so training code can read them
directly. A write goes to a temp file in the same directory, is fsynced, then renamed over the key:
readers see the old or the new file, never a part. Metadata lives beside the tree in
``root/.tiering-meta/<key>.json`` (POSIX mounts rarely keep xattrs across NFS/LTFS).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO

import xxhash

from tiering.backends.base import Location, ObjectInfo, ReadStream, check_key, delete_each
from tiering.errors import BackendError, DigestRefused, InsufficientStorage, ObjectNotFound, PermanentBackendError

META_DIR = ".tiering-meta"
TMP_PREFIX = ".tiering-tmp-"
#: temp names are the process id and a counter: unique on the host without a random draw per write
_TMP_SEQ = itertools.count()


def _tmp_name() -> str:
    return f"{TMP_PREFIX}{os.getpid()}-{next(_TMP_SEQ)}"


class _RangeReader:
    def __init__(self, fh: BinaryIO, length: int | None) -> None:
        self._fh = fh
        self._left = length

    def read(self, size: int = -1, /) -> bytes:
        if self._left is not None:
            if self._left <= 0:
                return b""
            size = self._left if size < 0 else min(size, self._left)
        data = self._fh.read(size)
        if self._left is not None:
            self._left -= len(data)
        return data

    def close(self) -> None:
        self._fh.close()


class FileBackend:
    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()
        self._fsync = fsync

    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _meta_path(self, key: str) -> Path:
        return self.root / META_DIR / (check_key(key) + ".json")

    def put(
        self,
        key: str,
        body: BinaryIO | ReadStream,
        *,
        size: int | None = None,
        metadata: Mapping[str, str] | None = None,
        content_xxh3: str | None = None,
    ) -> bool:
        path = self._path(key)
        tmp = path.parent / _tmp_name()
        hasher = xxhash.xxh3_128() if content_xxh3 is not None else None
        try:
            with self._create(tmp) as out:
                while True:
                    chunk = body.read(1024 * 1024)
                    if not chunk:
                        break
                    out.write(chunk)
                    if hasher is not None:
                        hasher.update(chunk)
                if hasher is not None and hasher.hexdigest() != content_xxh3:
                    raise DigestRefused(f"{key}: the body does not hash to {content_xxh3}", backend=self.url, key=key)
                out.flush()
                if self._fsync:
                    os.fsync(out.fileno())
            meta_path = self._meta_path(key)
            if metadata:
                meta_path.parent.mkdir(parents=True, exist_ok=True)
                meta_tmp = meta_path.parent / _tmp_name()
                meta_tmp.write_text(json.dumps(dict(metadata), sort_keys=True))
                os.replace(meta_tmp, meta_path)
            else:
                with contextlib.suppress(FileNotFoundError):
                    meta_path.unlink()
            os.replace(tmp, path)
            return hasher is not None
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._translate(exc, key) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    @staticmethod
    def _create(tmp: Path) -> BinaryIO:
        """Open ``tmp`` for writing, creating its directory; a concurrent ``delete`` may prune an emptied
        directory between the two steps, so that is tried again."""
        for attempt in range(5):
            try:
                tmp.parent.mkdir(parents=True, exist_ok=True)
                return open(tmp, "wb")  # noqa: SIM115 - the caller closes it
            except (FileNotFoundError, FileExistsError):  # pruned under mkdir: it saw it, then it was gone
                if attempt == 4:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _translate(self, exc: OSError, key: str) -> BackendError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return InsufficientStorage(f"no space left writing {key}", backend=self.url, key=key)
        if exc.errno == errno.ENOENT:
            return ObjectNotFound(key, backend=self.url)
        return PermanentBackendError(f"{exc.strerror or exc} ({key})", backend=self.url, key=key)

    def open_read(self, key: str, *, offset: int = 0, length: int | None = None) -> ReadStream:
        path = self._path(key)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - the caller closes the stream
        except OSError as exc:
            raise self._translate(exc, key) from exc
        if offset:
            fh.seek(offset)
        return _RangeReader(fh, length)

    def head(self, key: str) -> ObjectInfo:
        path = self._path(key)
        try:
            st = path.stat()
        except OSError as exc:
            raise self._translate(exc, key) from exc
        if not path.is_file():
            raise ObjectNotFound(key, backend=self.url)
        return ObjectInfo(key=key, size=st.st_size, metadata=self._read_meta(key))

    def _read_meta(self, key: str) -> dict[str, str]:
        try:
            data = json.loads(self._meta_path(key).read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): str(v) for k, v in data.items()}

    def delete(self, key: str) -> None:
        path = self._path(key)
        for p in (path, self._meta_path(key)):
            try:
                p.unlink()
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise self._translate(exc, key) from exc
        # prune empty directories up to the root so a moved-away dataset leaves no husk
        parent = path.parent
        while parent != self.root and parent.is_relative_to(self.root):
            try:
                parent.rmdir()
            except OSError:
                break
            parent = parent.parent

    def delete_many(self, keys: Sequence[str]) -> dict[str, BackendError]:
        return delete_each(self, keys)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not self.root.exists():
            return
        found: list[tuple[str, int]] = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            if rel_dir == ".":
                rel_dir = ""
                dirnames[:] = [d for d in dirnames if d != META_DIR]
            for name in filenames:
                if name.startswith(TMP_PREFIX):
                    continue
                key = f"{rel_dir}/{name}" if rel_dir else name
                key = key.replace(os.sep, "/")
                if key.startswith(prefix):
                    try:
                        found.append((key, os.stat(os.path.join(dirpath, name)).st_size))
                    except FileNotFoundError:
                        continue
        for key, size in sorted(found):
            yield ObjectInfo(key=key, size=size, metadata=self._read_meta(key))

    def abort_incomplete(self, prefix: str = "") -> int:
        removed = 0
        if not self.root.exists():
            return 0
        for dirpath, _dirnames, filenames in os.walk(self.root):
            for name in filenames:
                if not name.startswith(TMP_PREFIX):
                    continue
                full = os.path.join(dirpath, name)
                rel = os.path.relpath(full, self.root).replace(os.sep, "/")
                if rel.startswith(prefix) or rel.startswith(f"{META_DIR}/{prefix}"):
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(full)
                        removed += 1
        return removed

    def locate(self, key: str) -> Location:
        path = self.root / key if key else self.root
        return Location(kind="file", url=path.as_uri(), path=str(path), key=key)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"FileBackend({str(self.root)!r})"
