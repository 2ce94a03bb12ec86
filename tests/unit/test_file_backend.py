"""A directory tier's metadata: an xattr on the file where the filesystem keeps them, sidecar files where
it does not, and data written either way read back by the other."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from helpers import read_all

from tiering.storage import FileBackend
from tiering.storage.file import BATCHED_SYNC_MAX, META_DIR, META_XATTR

needs_xattrs = pytest.mark.skipif(not hasattr(os, "setxattr"), reason="no extended attributes on this platform")


def _xattrs_work(path: Path) -> bool:
    probe = path / "probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, META_XATTR, b"{}")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


@needs_xattrs
def test_metadata_is_an_xattr_of_the_file_and_no_sidecar_is_written(tmp_path: Path) -> None:
    if not _xattrs_work(tmp_path):
        pytest.skip("this filesystem keeps no user xattrs")
    backend = FileBackend(tmp_path / "tier")
    assert backend.put("d/a.bin", io.BytesIO(b"abc"), metadata={"xxh3-128": "f" * 32}) is False
    path = tmp_path / "tier" / "d" / "a.bin"
    assert path.read_bytes() == b"abc"
    assert os.getxattr(path, META_XATTR) == b'{"xxh3-128": "' + b"f" * 32 + b'"}'
    assert not (tmp_path / "tier" / META_DIR).exists()
    assert backend.head("d/a.bin").metadata == {"xxh3-128": "f" * 32}
    assert [(o.key, o.metadata) for o in backend.list()] == [("d/a.bin", {"xxh3-128": "f" * 32})]


@needs_xattrs
def test_sidecar_metadata_is_read_and_replaced_by_a_backend_with_xattrs(tmp_path: Path) -> None:
    if not _xattrs_work(tmp_path):
        pytest.skip("this filesystem keeps no user xattrs")
    root = tmp_path / "tier"
    old = FileBackend(root, xattrs=False)
    old.put("d/a.bin", io.BytesIO(b"old"), metadata={"k": "sidecar"})
    old.put("d/b.bin", io.BytesIO(b"bee"), metadata={"k": "b"})
    sidecar = root / META_DIR / "d" / "a.bin.json"
    assert sidecar.is_file()
    assert not os.listxattr(root / "d" / "a.bin")

    new = FileBackend(root)
    assert new.head("d/a.bin").metadata == {"k": "sidecar"}
    # an overwrite keeps its metadata on the file and removes the stale sidecar, which would otherwise
    # be what a sidecar-only reader sees
    new.put("d/a.bin", io.BytesIO(b"new"), metadata={"k": "xattr"})
    assert not sidecar.exists()
    assert new.head("d/a.bin").metadata == {"k": "xattr"}
    assert (root / "d" / "a.bin").read_bytes() == b"new"
    # an overwrite without metadata leaves none behind either way
    new.put("d/b.bin", io.BytesIO(b"bee2"))
    assert new.head("d/b.bin").metadata == {}
    assert old.head("d/b.bin").metadata == {}
    new.delete("d/a.bin")
    new.delete("d/b.bin")
    assert list(new.list()) == []
    assert not any(p.is_file() for p in (root / META_DIR).rglob("*"))


def test_without_xattrs_metadata_lives_in_sidecars_and_delete_removes_them(tmp_path: Path) -> None:
    root = tmp_path / "tier"
    backend = FileBackend(root, xattrs=False)
    backend.put("d/a.bin", io.BytesIO(b"abc"), metadata={"xxh3-128": "0" * 32})
    sidecar = root / META_DIR / "d" / "a.bin.json"
    assert sidecar.read_text() == '{"xxh3-128": "' + "0" * 32 + '"}'
    assert FileBackend(root, xattrs=False).head("d/a.bin").metadata == {"xxh3-128": "0" * 32}
    backend.delete("d/a.bin")
    assert not sidecar.exists()
    assert not (root / "d").exists()


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What each ``os.fsync`` of the test synced (the path, where /proc tells it), in order; the real fsync runs."""
    synced: list[str] = []
    real_fsync = os.fsync

    def noting_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else str(fd))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", noting_fsync)
    return synced


def test_small_files_in_a_batched_sync_wait_for_the_batch_and_everything_else_is_fsynced_at_once(
    tmp_path: Path, fsynced: list[str],
) -> None:
    backend = FileBackend(tmp_path / "tier")
    small, large = b"s" * 1000, b"L" * (BATCHED_SYNC_MAX + 1)
    with backend.batched_sync("ds/a/") as sync:
        backend.put("ds/a/one.bin", io.BytesIO(small), size=len(small))
        backend.put("ds/a/sub/two.bin", io.BytesIO(small), size=len(small))
        assert fsynced == []  # small, inside the batch: not synced one by one
        assert backend._batched["ds/a/"] == (1, [tmp_path / "tier/ds/a/one.bin", tmp_path / "tier/ds/a/sub/two.bin"])
        backend.put("ds/a/big.bin", io.BytesIO(large), size=len(large))
        backend.put("ds/b/other.bin", io.BytesIO(small), size=len(small))
        backend.put("ds/a/unsized.bin", io.BytesIO(small))
        assert len(fsynced) == 3  # too large, outside the prefix, size unknown: each fsynced as it is written
        sync()
        assert backend._batched["ds/a/"] == (1, [])
        backend.put("ds/a/three.bin", io.BytesIO(small), size=len(small))
        with backend.batched_sync("ds/a/"):  # a second holder shares the batch
            assert backend._batched["ds/a/"] == (2, [tmp_path / "tier/ds/a/three.bin"])
        assert backend._batched["ds/a/"] == (1, [])  # its closing synced what was waiting; the batch stays
        backend.put("ds/a/five.bin", io.BytesIO(small), size=len(small))
        assert fsynced[3:] == []
    assert backend._batched == {}  # closing synced the last one and forgot the prefix
    backend.put("ds/a/four.bin", io.BytesIO(small), size=len(small))
    assert len(fsynced) == 4  # no batch any more: fsynced at once
    for key, body in [("ds/a/one.bin", small), ("ds/a/sub/two.bin", small), ("ds/a/big.bin", large),
                      ("ds/a/three.bin", small), ("ds/a/four.bin", small), ("ds/a/five.bin", small)]:
        assert read_all(backend, key) == body


def test_without_syncfs_a_batch_is_synced_file_by_file_and_directory_by_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fsynced: list[str],
) -> None:
    backend = FileBackend(tmp_path / "tier")
    monkeypatch.setattr("tiering.storage.file._syncfs", lambda: None)
    with backend.batched_sync("ds/") as sync:
        for key in ("ds/x/1.bin", "ds/x/2.bin", "ds/y/3.bin"):
            backend.put(key, io.BytesIO(b"12345"), size=5)
        backend.delete("ds/x/2.bin")  # gone before the sync: skipped, not an error
        assert fsynced == []
        sync()
    root = backend.root
    if os.path.exists("/proc/self/fd"):
        assert sorted(fsynced) == sorted(str(p) for p in (root / "ds/x/1.bin", root / "ds/y/3.bin",
                                                           root / "ds/x", root / "ds/y"))
    else:
        assert len(fsynced) == 4
