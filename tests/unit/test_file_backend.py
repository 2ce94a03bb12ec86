"""A directory tier's metadata: an xattr on the file where the filesystem keeps them, sidecar files where
it does not, and data written either way read back by the other."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from tiering.backends import FileBackend
from tiering.backends.file import META_DIR, META_XATTR

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
