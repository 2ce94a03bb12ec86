"""A dataset source whose tree has more than bytes (modes, times, links, empty directories), and the check that
a directory holds it as registered: shared by the functional and the integration tests."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from helpers import make_tree

#: a time in the past, to the nanosecond, that no write during a test can produce
T0 = 1_600_000_000_123_456_789


def files_on(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink() and "_tiering" not in p.parts)


def make_source(src: Path) -> dict[str, Any]:
    """A directory with modes 755 and 600, a 700 directory, an empty directory, links to a file (relative),
    to a directory and to a file by absolute path inside, and known mtimes; returns what to expect."""
    files = make_tree(src, 6, seed=5, max_size=30_000)
    (src / "bin").mkdir()
    (src / "bin/run.sh").write_bytes(b"#!/bin/sh\necho train\n")
    (src / "secret").mkdir()
    (src / "secret/key.pem").write_bytes(b"-----BEGIN KEY-----\n")
    (src / "empty/deeper").mkdir(parents=True)
    files["bin/run.sh"] = b"#!/bin/sh\necho train\n"
    files["secret/key.pem"] = b"-----BEGIN KEY-----\n"
    first = sorted(files)[0]
    (src / "latest").symlink_to(first)
    (src / "tools").symlink_to("bin")
    (src / "secret/abs-link").symlink_to(src / "bin/run.sh")
    os.chmod(src / "bin/run.sh", 0o755)
    os.chmod(src / "secret/key.pem", 0o600)
    os.chmod(src / "secret", 0o700)
    modes = {rel: 0o644 for rel in files} | {"bin/run.sh": 0o755, "secret/key.pem": 0o600}
    for rel, mode in modes.items():
        os.chmod(src / rel, mode)
    mtimes = {rel: T0 + i * 1_000_000_007 for i, rel in enumerate(sorted(files))}
    for rel, mtime in mtimes.items():
        os.utime(src / rel, ns=(mtime, mtime))
    for i, d in enumerate(("empty/deeper", "empty", "bin", "secret")):
        os.utime(src / d, ns=(T0 - i, T0 - i))
    return {"files": files, "modes": modes, "mtimes": mtimes, "first": first}


def check_tree(root: Path, want: dict[str, Any]) -> None:
    """``root`` holds the dataset as registered: bytes, modes, mtimes, links, empty directories."""
    assert files_on(root) == sorted(want["files"])
    for rel, data in want["files"].items():
        st = (root / rel).lstat()
        assert (root / rel).read_bytes() == data, rel
        assert stat.S_IMODE(st.st_mode) == want["modes"][rel], rel
        assert st.st_mtime_ns == want["mtimes"][rel], rel
    assert os.readlink(root / "latest") == want["first"]
    assert (root / "latest").read_bytes() == want["files"][want["first"]]
    assert os.readlink(root / "tools") == "bin"
    assert os.readlink(root / "secret/abs-link") == "../bin/run.sh"  # made relative: it still works elsewhere
    assert (root / "secret/abs-link").read_bytes() == want["files"]["bin/run.sh"]
    assert (root / "empty/deeper").is_dir() and not any((root / "empty/deeper").iterdir())
    assert stat.S_IMODE((root / "secret").stat().st_mode) == 0o700
    assert (root / "empty/deeper").stat().st_mtime_ns == T0
    assert (root / "secret").stat().st_mtime_ns == T0 - 3
