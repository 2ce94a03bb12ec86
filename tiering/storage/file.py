"""A POSIX directory as a tier (NVMe or NFS mount, LTFS).

Objects are plain files under ``root`` with their key as relative path, so training code can read them
directly. A write goes to a temp file in the same directory, is fsynced, then renamed over the key:
readers see the old or the new file, never a part. Metadata travels with the file as one extended
attribute (``user.tiering``, JSON), set on the temp file before the rename, so the two change together.
Where the filesystem keeps no user xattrs (some NFS and FUSE mounts), metadata lives beside the tree in
``root/.tiering-meta/<key>.json`` instead; reads look at both.

A job that records its copies in the catalog in batches may open :meth:`FileBackend.batched_sync` over its
keys: files up to ``BATCHED_SYNC_MAX`` written there are not fsynced one by one, and the job syncs the
filesystem once before each batch it records (an fsync per 16 KiB file costs more than the file's write).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import functools
import itertools
import json
import os
import stat
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

import xxhash

from tiering.config import TierConfig, TransferConfig
from tiering.errors import BackendError, DigestRefused, InsufficientStorage, ObjectNotFound, PermanentBackendError
from tiering.storage.base import Location, ObjectInfo, PosixEntry, ReadStream, check_key, delete_each
from tiering.storage.registry import register_scheme

META_DIR = ".tiering-meta"
#: the extended attribute holding an object's metadata (JSON)
META_XATTR = "user.tiering"
TMP_PREFIX = ".tiering-tmp-"
#: bytes per read from the body
CHUNK = 1024 * 1024
#: bytes per write(2): slices copy into the page cache for less kernel CPU than whole chunks (measured in bench/)
WRITE_SLICE = 128 * 1024
#: inside ``batched_sync``, files up to this size wait for the batch's sync: one sync of many small files
#: costs less than an fsync of each (measured in bench/)
BATCHED_SYNC_MAX = 4 * 1024 * 1024
_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
#: errors that mean "this filesystem keeps no user xattrs"
_NO_XATTRS = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES})
#: temp names are the process id and a counter: unique on the host without a random draw per write
_TMP_SEQ = itertools.count()


def _tmp_name() -> str:
    return f"{TMP_PREFIX}{os.getpid()}-{next(_TMP_SEQ)}"


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    """The C library's ``syncfs(2)`` (Linux), looked up once; None where there is none."""
    with contextlib.suppress(OSError, AttributeError, ImportError):
        import ctypes

        found: Callable[[int], int] = ctypes.CDLL(None, use_errno=True).syncfs
        return found
    return None


def _syncfs_errno() -> int:
    import ctypes

    return ctypes.get_errno() or errno.EIO


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
    def __init__(self, root: str | os.PathLike[str], *, fsync: bool = True, xattrs: bool = True) -> None:
        """``xattrs=False`` keeps metadata in sidecar files even where the filesystem has xattrs."""
        self.root = Path(root).resolve()
        self.url = self.root.as_uri()
        self._fsync = fsync
        #: False once the filesystem refused a user xattr: metadata goes to sidecar files from then on
        self._xattrs = xattrs and hasattr(os, "setxattr")
        #: whether sidecar files may exist (so a write or delete must remove a stale one); learnt lazily
        self._sidecars: bool | None = None
        #: key prefixes under ``batched_sync``: how many have it open, and the files written there not yet synced
        self._batched: dict[str, tuple[int, list[Path]]] = {}
        self._batched_lock = threading.Lock()

    def _may_have_sidecars(self) -> bool:
        """Whether the sidecar directory exists (looked at once; a sidecar we write sets it). Any writer on
        this filesystem keeps xattrs or not, as we do, so none adds sidecars behind our back."""
        if self._sidecars is None:
            self._sidecars = (self.root / META_DIR).is_dir()
        return self._sidecars

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
            fd = self._create(tmp)
            try:
                while chunk := body.read(CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view[:WRITE_SLICE]):]
                    if hasher is not None:
                        hasher.update(chunk)
                if hasher is not None and hasher.hexdigest() != content_xxh3:
                    raise DigestRefused(f"{key}: the body does not hash to {content_xxh3}", backend=self.url, key=key)
                in_xattr = self._set_xattr(fd, metadata) if metadata else False
                small = size is not None and size <= BATCHED_SYNC_MAX
                batch = self._batch_of(key) if self._fsync and small and self._batched else ""
                if self._fsync and not batch:
                    os.fsync(fd)
            finally:
                os.close(fd)
            meta_path = self._meta_path(key)
            if metadata and not in_xattr:
                meta_path.parent.mkdir(parents=True, exist_ok=True)
                meta_tmp = meta_path.parent / _tmp_name()
                meta_tmp.write_text(json.dumps(dict(metadata), sort_keys=True))
                os.replace(meta_tmp, meta_path)
                self._sidecars = True
            elif self._may_have_sidecars():
                with contextlib.suppress(FileNotFoundError):
                    meta_path.unlink()
            os.replace(tmp, path)
            if batch:
                with self._batched_lock:
                    entry = self._batched.get(batch)
                    if entry is not None:
                        entry[1].append(path)
                if entry is None:  # the batch closed while this file was written: sync it on its own
                    self._sync_paths([path])
            return hasher is not None
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise self._translate(exc, key) from exc
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise

    def _batch_of(self, key: str) -> str:
        """The ``batched_sync`` prefix ``key`` is under, or ""."""
        with self._batched_lock:
            return next((prefix for prefix in self._batched if key.startswith(prefix)), "")

    @contextlib.contextmanager
    def batched_sync(self, prefix: str) -> Iterator[Callable[[], None]]:
        """Small files written under ``prefix`` are not fsynced one by one until this closes; the function
        it yields makes every one written there so far durable (with its directory entry) before it returns,
        and closing does the same. The caller calls it before it records any of those files as stored.
        Two holders of one prefix (two workers of one job in one process) share its batch."""
        with self._batched_lock:
            holders, pending = self._batched.get(prefix, (0, []))
            self._batched[prefix] = (holders + 1, pending)

        def sync() -> None:
            with self._batched_lock:
                holders, pending = self._batched[prefix]
                self._batched[prefix] = (holders, [])
            self._sync_paths(pending)

        try:
            yield sync
        finally:
            with self._batched_lock:
                holders, pending = self._batched.pop(prefix)
                if holders > 1:
                    self._batched[prefix] = (holders - 1, [])
            self._sync_paths(pending)

    def _sync_paths(self, paths: list[Path]) -> None:
        """Make these files and their directory entries durable: one ``syncfs`` of the filesystem where
        the C library has it, else an fsync of each file and of each directory."""
        if not paths:
            return
        syncfs = _syncfs()
        if syncfs is not None:
            fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                if syncfs(fd) != 0:
                    code = _syncfs_errno()
                    raise self._translate(OSError(code, os.strerror(code)), "")
            finally:
                os.close(fd)
            return
        for target in [*paths, *{p.parent for p in paths}]:
            try:
                fd = os.open(target, os.O_RDONLY)
            except FileNotFoundError:
                continue  # deleted since (a failed copy's cleanup): nothing left to keep
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _set_xattr(self, fd: int, metadata: Mapping[str, str]) -> bool:
        """Put ``metadata`` on the open file; False when it must go to a sidecar file instead."""
        if not self._xattrs:
            return False
        try:
            os.setxattr(fd, META_XATTR, json.dumps(dict(metadata), sort_keys=True).encode())
        except OSError as exc:
            if exc.errno in _NO_XATTRS:
                self._xattrs = False
            elif exc.errno not in (errno.E2BIG, errno.ENOSPC, errno.ERANGE):  # too large for an xattr here
                raise
            return False
        return True

    @staticmethod
    def _create(tmp: Path) -> int:
        """Create ``tmp`` for writing, and its directory when missing; a concurrent ``delete`` may prune an
        emptied directory between the two steps, so that is tried again."""
        for attempt in range(5):
            try:
                return os.open(tmp, _O_CREATE, 0o666)
            except FileNotFoundError:
                if attempt == 4:
                    raise
            # pruned under mkdir (it saw the directory, then it was gone): the next round tries again
            with contextlib.suppress(FileNotFoundError, FileExistsError):
                tmp.parent.mkdir(parents=True, exist_ok=True)
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
        raw: bytes | str | None = None
        if self._xattrs:
            with contextlib.suppress(OSError):
                raw = os.getxattr(self._path(key), META_XATTR)
        if raw is None and self._may_have_sidecars():
            with contextlib.suppress(OSError):
                raw = self._meta_path(key).read_text()
        if raw is None:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            return {}
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def delete(self, key: str) -> None:
        path = self._path(key)
        for p in (path, self._meta_path(key)) if self._may_have_sidecars() else (path,):
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
        found: list[tuple[str, int, float]] = []
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
                        st = os.lstat(os.path.join(dirpath, name))
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):  # a dataset's symbolic links are part of its tree, not objects
                        found.append((key, st.st_size, st.st_mtime))
        for key, size, mtime in sorted(found):
            yield ObjectInfo(key=key, size=size, metadata=self._read_meta(key),
                             modified=dt.datetime.fromtimestamp(mtime, dt.UTC))

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

    # -- the PosixTree capability: a dataset's modes, times, directories and links --------------------

    def apply_tree(self, prefix: str, entries: Sequence[PosixEntry]) -> None:
        """Give the files under ``prefix`` their modes and times, make the directories, place the links.

        A tier must stay readable and removable by us: files keep owner read, directories owner rwx, on
        top of their recorded bits. Links come after every file and directory (nothing is written through
        them), directory times last (placing entries changes them). A link whose target is absolute, or
        that resolves outside ``prefix``, is removed again and refused with ``PermanentBackendError``.
        """
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        real_base = os.path.realpath(base)
        inside: dict[str, bool] = {}

        def checked(path: str) -> Path:
            full = base / check_key(path)
            parent = str(full.parent)
            if parent not in inside:
                real = os.path.realpath(parent)
                inside[parent] = real == real_base or real.startswith(real_base + os.sep)
            if not inside[parent]:
                raise PermanentBackendError(f"{prefix}{path}: a parent directory leads outside {prefix}",
                                            backend=self.url, key=prefix + path)
            return full

        dirs = sorted((e for e in entries if e.kind == "dir"), key=lambda e: e.path)
        try:
            for e in dirs:
                checked(e.path).mkdir(parents=True, exist_ok=True)
            for e in entries:
                if e.kind == "file":
                    full = checked(e.path)
                    if not stat.S_ISREG(full.lstat().st_mode):
                        raise PermanentBackendError(f"{prefix}{e.path} is not a regular file",
                                                    backend=self.url, key=prefix + e.path)
                    self._set_times_and_mode(full, e.mode, e.mtime_ns, extra=stat.S_IRUSR)
            for e in entries:
                if e.kind == "link":
                    self._place_link(prefix, checked(e.path), e, real_base)
            for e in reversed(dirs):
                self._set_times_and_mode(checked(e.path), e.mode, e.mtime_ns, extra=stat.S_IRWXU)
        except OSError as exc:
            raise self._translate(exc, prefix) from exc

    def _place_link(self, prefix: str, full: Path, entry: PosixEntry, real_base: str) -> None:
        key = prefix + entry.path
        if not entry.target or os.path.isabs(entry.target):
            raise PermanentBackendError(f"{key}: link target {entry.target!r} is not a relative path",
                                        backend=self.url, key=key)
        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISLNK(full.lstat().st_mode):
                raise PermanentBackendError(f"{key}: something other than a link is in the way",
                                            backend=self.url, key=key)
        full.parent.mkdir(parents=True, exist_ok=True)
        tmp = full.parent / _tmp_name()
        os.symlink(entry.target, tmp)
        os.replace(tmp, full)
        real = os.path.realpath(full)
        if real != real_base and not real.startswith(real_base + os.sep):
            full.unlink()
            raise PermanentBackendError(f"{key}: link target {entry.target!r} leads outside {prefix}",
                                        backend=self.url, key=key)
        if entry.mtime_ns is not None:
            with contextlib.suppress(NotImplementedError, OSError):  # not every platform sets a link's time
                os.utime(full, ns=(entry.mtime_ns, entry.mtime_ns), follow_symlinks=False)

    @staticmethod
    def _set_times_and_mode(full: Path, mode: int | None, mtime_ns: int | None, *, extra: int) -> None:
        if mode is not None:
            os.chmod(full, (mode & 0o7777) | extra)
        if mtime_ns is not None:
            os.utime(full, ns=(mtime_ns, mtime_ns))

    def remove_tree(self, prefix: str, entries: Sequence[PosixEntry]) -> None:
        """Remove the links of ``entries``, then each of its directories that is empty, deepest first."""
        base = self._path(prefix.rstrip("/")) if prefix.strip("/") else self.root
        for e in entries:
            if e.kind == "link":
                full = base / check_key(e.path)
                with contextlib.suppress(FileNotFoundError):
                    if stat.S_ISLNK(full.lstat().st_mode):
                        full.unlink()
        for e in sorted((e for e in entries if e.kind == "dir"), key=lambda e: e.path, reverse=True):
            with contextlib.suppress(OSError):  # not empty (objects still there), or already gone
                (base / check_key(e.path)).rmdir()

    def locate(self, key: str) -> Location:
        path = self.root / key if key else self.root
        return Location(kind="file", url=path.as_uri(), path=str(path), key=key)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"FileBackend({str(self.root)!r})"


def open_file(name: str, tier: TierConfig, transfer: TransferConfig) -> FileBackend:
    """``file:///abs/path``: a :class:`FileBackend` rooted at that directory."""
    return FileBackend(unquote(urlparse(tier.backend).path))


register_scheme("file", open_file)
