"""Where a dataset's objects live inside a tier, and the self-describing manifest beside them.

Inside a tier (after the tier's own prefix): ``<kind>/<name>/<version>/<relative path>``, plus
``<kind>/<name>/<version>/_tiering/manifest.json`` listing every member's path, size and digests, so a
tier can be understood, and the catalog rebuilt, without our database.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tiering.errors import InvalidName, UsageError
from tiering.hashing import xxh3_bytes

MANIFEST_DIR = "_tiering"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
KINDS = ("dataset", "model")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,254}$")


def check_name(value: str, what: str = "name") -> str:
    """A dataset name or version: letters, digits, ``. _ + -``; no ``/``, no ``..``, not starting with a dot."""
    if not _NAME_RE.match(value) or ".." in value:
        raise InvalidName(
            f"invalid {what} {value!r}: use letters, digits and . _ + - "
            "(no '/', no '..', must start with a letter or digit)"
        )
    return value


def check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise UsageError(f"invalid kind {kind!r}: expected one of {', '.join(KINDS)}")
    return kind


def parse_label(label: str) -> tuple[str, str | None]:
    """``name@version`` -> (name, version); ``name`` -> (name, None)."""
    name, sep, version = label.partition("@")
    check_name(name)
    if sep:
        check_name(version, "version")
        return name, version
    return name, None


def check_member_path(path: str) -> str:
    """A member's relative path: no absolute paths, no ``..``, not inside ``_tiering/``."""
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\x00" in path:
        raise InvalidName(f"invalid member path {path!r}")
    if parts[0] == MANIFEST_DIR:
        raise InvalidName(f"member path {path!r} is inside the reserved {MANIFEST_DIR}/ directory")
    return path


def dataset_prefix(kind: str, name: str, version: str) -> str:
    return f"{kind}/{name}/{version}/"


def manifest_key(prefix: str) -> str:
    return f"{prefix}{MANIFEST_DIR}/{MANIFEST_NAME}"


@dataclass(frozen=True)
class ManifestMember:
    path: str
    size: int
    xxh3: str
    md5: str | None = None
    sha256: str | None = None
    #: on a packed archive tier: the shard object holding this member, and where
    shard: str | None = None
    offset: int | None = None
    #: permission bits and modification time (ns since the epoch) of the registered file, when known
    mode: int | None = None
    mtime_ns: int | None = None


@dataclass(frozen=True)
class ManifestEntry:
    """A directory (``kind="dir"``) or symbolic link (``kind="link"``, to ``target`` relative to the link's
    directory) of a dataset: no bytes, listed in the manifest beside the members."""

    path: str
    kind: str
    target: str | None = None
    mode: int | None = None
    mtime_ns: int | None = None


def content_digest(members: Iterable[tuple[str, int, str]]) -> str:
    """One digest for a dataset's content: xxh3-128 over its sorted (path, size, xxh3) triples."""
    lines = "\n".join(f"{p}\t{s}\t{x}" for p, s, x in sorted(members))
    return xxh3_bytes(lines.encode())


def build_manifest(
    *,
    name: str,
    version: str,
    kind: str,
    owner: str,
    tags: dict[str, str],
    tier: str,
    members: Iterable[ManifestMember],
    written_at: dt.datetime,
    entries: Iterable[ManifestEntry] = (),
) -> bytes:
    """The manifest of one dataset copy (JSON, format 1).

    Members carry ``mode`` (octal text, ``"0755"``) and ``mtime_ns`` when known; ``dirs`` and ``links``
    (present only when the dataset has any) list its directories and symbolic links. Readers of format 1
    that do not know these keys still read the members as before.
    """
    items: list[dict[str, Any]] = []
    for m in sorted(members, key=lambda m: m.path):
        entry: dict[str, Any] = {"path": m.path, "size": m.size, "xxh3_128": m.xxh3}
        if m.md5:
            entry["md5"] = m.md5
        if m.sha256:
            entry["sha256"] = m.sha256
        if m.shard:
            entry["shard"] = m.shard
            entry["offset"] = m.offset
        _put_attrs(entry, m.mode, m.mtime_ns)
        items.append(entry)
    dirs: list[dict[str, Any]] = []
    links: list[dict[str, Any]] = []
    for e in sorted(entries, key=lambda e: e.path):
        item: dict[str, Any] = {"path": e.path}
        if e.kind == "link":
            item["target"] = e.target
            links.append(item)
        else:
            dirs.append(item)
        _put_attrs(item, e.mode, e.mtime_ns)
    doc = {
        "format": MANIFEST_FORMAT,
        "name": name,
        "version": version,
        "kind": kind,
        "owner": owner,
        "tags": tags,
        "tier": tier,
        "written_at": written_at.isoformat(),
        "member_count": len(items),
        "size_bytes": sum(i["size"] for i in items),
        "content_xxh3_128": content_digest((i["path"], i["size"], i["xxh3_128"]) for i in items),
        "members": items,
    }
    if dirs:
        doc["dirs"] = dirs
    if links:
        doc["links"] = links
    return json.dumps(doc, indent=1, sort_keys=False).encode()


def _put_attrs(item: dict[str, Any], mode: int | None, mtime_ns: int | None) -> None:
    if mode is not None:
        item["mode"] = f"{mode:04o}"
    if mtime_ns is not None:
        item["mtime_ns"] = mtime_ns


def _mode(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return int(str(value), 8)


def manifest_contents(doc: dict[str, Any]) -> tuple[list[ManifestMember], list[ManifestEntry]]:
    """The members, directories and links of a parsed manifest; a manifest written before modes, times,
    directories and links were recorded reads with None for them and no entries."""
    members = [
        ManifestMember(
            m["path"], int(m["size"]), m["xxh3_128"], m.get("md5"), m.get("sha256"), m.get("shard"),
            m.get("offset"), _mode(m.get("mode")), m.get("mtime_ns"),
        )
        for m in doc.get("members", [])
    ]
    entries = [
        ManifestEntry(d["path"], "dir", None, _mode(d.get("mode")), d.get("mtime_ns")) for d in doc.get("dirs", [])
    ] + [
        ManifestEntry(lk["path"], "link", lk["target"], None, lk.get("mtime_ns")) for lk in doc.get("links", [])
    ]
    return members, entries


def parse_manifest(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ValueError("not a tiering manifest")
    return doc
