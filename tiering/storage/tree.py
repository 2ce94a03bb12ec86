"""A dataset's tree beyond its members' bytes: file modes and times, directories, symbolic links.

Registering a local directory records, besides each regular file (a member): its permission bits and
modification time, every directory (so empty ones come back), and every symbolic link whose target stays
inside the directory (as a link, never as a copy of what it points to). These are kept in the catalog
(``members.mode``/``mtime_ns`` and ``tree_entries``), so every manifest a move or a restore writes carries
them, even where the previous copy's manifest cannot be read (an archive tier). A directory tier gets them
back whenever a dataset lands on it (register, move, restore): see :class:`~tiering.storage.base.PosixTree`.

What a registration refuses, by name, before any byte is uploaded: a link that resolves outside the
directory (unless links are followed on purpose), and anything that is not a regular file, a directory or
a link (FIFOs, sockets, devices), which has no bytes to keep.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from tiering.catalog.models import TreeEntry
from tiering.errors import UsageError
from tiering.layout import MANIFEST_DIR, ManifestEntry, check_member_path
from tiering.storage.base import Backend, PosixEntry, PosixTree, find_capability

#: permission bits kept: setuid, setgid and sticky bits are not (a tier's files belong to the service)
MODE_BITS = 0o777
#: offending paths named in one refusal at most
NAMED_AT_MOST = 5


@dataclass(frozen=True)
class ScannedFile:
    """A regular file found under the source: its member path, size (bytes), mode and mtime (ns)."""

    path: str
    size: int
    mode: int
    mtime_ns: int


@dataclass
class ScannedTree:
    files: list[ScannedFile] = field(default_factory=list)
    entries: list[ManifestEntry] = field(default_factory=list)


def _kind_of(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISBLK(mode):
        return "block device"
    return "special file"


def _inside(real: str, real_root: str) -> bool:
    return real == real_root or real.startswith(real_root.rstrip(os.sep) + os.sep)


def _link_target(full: Path, rel_parent: str, real_root: str) -> str:
    """The target to record for a link that resolves inside the source: as written when it is relative
    and stays inside without following other links, else the resolved path relative to the link's directory."""
    raw = os.readlink(full)
    if not os.path.isabs(raw):
        lexical = os.path.normpath(os.path.join(rel_parent, raw))
        if lexical != ".." and not lexical.startswith(".." + os.sep):
            return raw
    return os.path.relpath(os.path.realpath(full), os.path.realpath(full.parent))


def scan_directory(root: Path, *, follow_links: bool = False) -> ScannedTree:
    """Every regular file, directory and symbolic link under ``root`` (``_tiering`` directories skipped).

    Without ``follow_links``, a link is recorded as a link when its target resolves inside ``root`` and
    refused when it resolves outside. With ``follow_links``, what a link points to is read as if it were
    there (a file becomes a member, a directory is walked), wherever it is; a dangling link, or a link loop,
    is refused. FIFOs, sockets and devices are always refused. Raises one :class:`UsageError` naming the
    first few offending paths and what each is.
    """
    real_root = os.path.realpath(root)
    tree = ScannedTree()
    problems: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=follow_links):
        rel_dir = os.path.relpath(dirpath, root)
        rel_parent = "" if rel_dir == "." else rel_dir
        real_dir = os.path.realpath(dirpath)
        keep_dirs: list[str] = []
        # a directory named like ours is not part of a dataset (a file of that name is, as before)
        for name in sorted([d for d in dirnames if d != MANIFEST_DIR] + filenames):
            full = Path(dirpath) / name
            rel = Path(rel_parent, name).as_posix()
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode):
                real = os.path.realpath(full)
                if not follow_links:
                    if not _inside(real, real_root):
                        problems.append(f"{full} is a symbolic link to {os.readlink(full)} (outside {root}; "
                                        "add --follow-links to register what it points to)")
                        continue
                    tree.entries.append(ManifestEntry(check_member_path(rel), "link",
                                                      _link_target(full, rel_parent, real_root),
                                                      None, st.st_mtime_ns))
                    continue
                try:
                    st = os.stat(full)
                except OSError:
                    problems.append(f"{full} is a symbolic link to {os.readlink(full)}, which does not exist")
                    continue
                if stat.S_ISDIR(st.st_mode) and _inside(real_dir, real):
                    problems.append(f"{full} is a symbolic link to {os.readlink(full)}, a directory that "
                                    "holds it (a loop)")
                    continue
            if stat.S_ISDIR(st.st_mode):
                if name in dirnames:
                    keep_dirs.append(name)
                tree.entries.append(ManifestEntry(check_member_path(rel), "dir", None,
                                                  stat.S_IMODE(st.st_mode) & MODE_BITS, st.st_mtime_ns))
            elif stat.S_ISREG(st.st_mode):
                tree.files.append(ScannedFile(check_member_path(rel), st.st_size,
                                              stat.S_IMODE(st.st_mode) & MODE_BITS, st.st_mtime_ns))
            else:
                problems.append(f"{full} is a {_kind_of(st.st_mode)}: only regular files, directories and "
                                "symbolic links can be registered")
        dirnames[:] = keep_dirs
    if problems:
        more = f" (and {len(problems) - NAMED_AT_MOST} more)" if len(problems) > NAMED_AT_MOST else ""
        raise UsageError("; ".join(problems[:NAMED_AT_MOST]) + more)
    return tree


def scan_file(path: Path) -> ScannedFile:
    """One regular file named as the source (a link named so is followed: the user chose it)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path} is a {_kind_of(st.st_mode)}: only regular files and directories can be registered")
    return ScannedFile(check_member_path(path.name), st.st_size, stat.S_IMODE(st.st_mode) & MODE_BITS,
                       st.st_mtime_ns)


# ------------------------------------------------------------------------------------------ the catalog


def tree_rows(dataset_id: int, entries: Iterable[ManifestEntry]) -> list[dict[str, object]]:
    """``tree_entries`` rows for ``entries`` of a dataset."""
    return [
        {"dataset_id": dataset_id, "path": e.path, "kind": e.kind, "target": e.target, "mode": e.mode,
         "mtime_ns": e.mtime_ns}
        for e in entries
    ]


def load_entries(session: Session, dataset_id: int) -> list[ManifestEntry]:
    """The directories and links the catalog holds for a dataset, by path."""
    return [
        ManifestEntry(e.path, e.kind, e.target, e.mode, e.mtime_ns)
        for e in session.scalars(select(TreeEntry).where(TreeEntry.dataset_id == dataset_id)
                                 .order_by(TreeEntry.path))
    ]


# ------------------------------------------------------------------------------------------ directory tiers


def posix_entries(
    member_attrs: Mapping[str, tuple[int | None, int | None]], entries: Iterable[ManifestEntry]
) -> list[PosixEntry]:
    """What a directory tier applies: each member with a known mode or time (``path -> (mode, mtime_ns)``),
    then the directories and links."""
    out = [PosixEntry(path, "file", mode, mtime) for path, (mode, mtime) in member_attrs.items()
           if mode is not None or mtime is not None]
    out.extend(PosixEntry(e.path, e.kind, e.mode, e.mtime_ns, e.target or "") for e in entries)
    return out


def apply_tree(backend: Backend, prefix: str, entries: list[PosixEntry]) -> None:
    """Give a dataset's copy under ``prefix`` its tree, where ``backend`` is a directory tree; else nothing."""
    tree = find_capability(backend, PosixTree) if entries else None
    if tree is not None:
        tree.apply_tree(prefix, entries)


def remove_tree(backend: Backend, prefix: str, entries: list[ManifestEntry]) -> None:
    """Remove a dataset copy's links and emptied directories under ``prefix`` (after its objects went)."""
    tree = find_capability(backend, PosixTree) if entries else None
    if tree is not None:
        tree.remove_tree(prefix, [PosixEntry(e.path, e.kind, target=e.target or "") for e in entries])
