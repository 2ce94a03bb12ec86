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
from tiering.transfer.hashing import xxh3_bytes

MANIFEST_DIR = "_tiering"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
KINDS = ("dataset", "model")

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")
#: the catalog's column widths (tiering.catalog.models): longer values are refused before any byte moves
NAME_MAX = 255
VERSION_MAX = 128
OWNER_MAX = 128
MEMBER_PATH_MAX = 1024
KEY_MAX = 2048
#: tags are small labels, not documents
TAGS_MAX = 64
TAG_KEY_MAX = 128
TAG_VALUE_MAX = 1024
#: bytes of one path component: a directory tier cannot hold more (NAME_MAX of Linux filesystems)
COMPONENT_BYTES_MAX = 255


def check_name(value: str, what: str = "name") -> str:
    """A dataset name (at most 255 characters) or version (128): letters, digits, ``. _ + -``; no ``/``,
    no ``..``, not starting with a dot."""
    limit = VERSION_MAX if what == "version" else NAME_MAX
    if len(value) > limit:
        raise InvalidName(f"invalid {what} {value[:40]!r}...: {len(value)} characters, longer than {limit}")
    if not _NAME_RE.match(value) or ".." in value:
        raise InvalidName(
            f"invalid {what} {value!r}: use letters, digits and . _ + - "
            "(no '/', no '..', must start with a letter or digit)"
        )
    return value


def check_owner(owner: str) -> str:
    """An owner label: at most 128 characters, no control characters."""
    if len(owner) > OWNER_MAX:
        raise UsageError(f"owner {owner[:40]!r}... is {len(owner)} characters, longer than {OWNER_MAX}")
    bad = _forbidden_char(owner)
    if bad is not None:
        raise UsageError(f"owner {owner!r} holds the control character {bad!r}")
    return owner


def check_tags(tags: dict[str, str]) -> dict[str, str]:
    """At most 64 tags, keys up to 128 characters and values up to 1024, no control characters."""
    if len(tags) > TAGS_MAX:
        raise UsageError(f"{len(tags)} tags: at most {TAGS_MAX} are kept")
    for key, value in tags.items():
        if not key or len(key) > TAG_KEY_MAX:
            raise UsageError(f"tag key {key[:40]!r} must be 1 to {TAG_KEY_MAX} characters")
        if len(value) > TAG_VALUE_MAX:
            raise UsageError(f"tag {key!r} has a value of {len(value)} characters, longer than {TAG_VALUE_MAX}")
        bad = _forbidden_char(key + value)
        if bad is not None:
            raise UsageError(f"tag {key!r}={value!r} holds the control character {bad!r}")
    return tags


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


_FORBIDDEN_RE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


def _forbidden_char(text: str) -> str | None:
    """The first character of ``text`` that no S3 server stores faithfully, or None.

    Control characters (C0, DEL, C1) are mangled on the way: S3 answers in XML, which cannot carry most of
    them, and servers differ in how they escape or normalise the rest (a ``\\r`` made one server delete
    another key). Lone surrogates (a file name that is not UTF-8) cannot be sent at all; U+FFFE and U+FFFF
    are not XML characters either.
    """
    found = _FORBIDDEN_RE.search(text)
    return found.group() if found else None


def check_member_path(path: str) -> str:
    """A member's relative path, as every tier stores it faithfully; the one rule for member names.

    Components are separated by ``/`` and are neither empty nor ``.`` or ``..`` (no absolute path, no
    trailing ``/``); the first is not the reserved ``_tiering``. No control character (C0 ``\\x00``-``\\x1f``,
    DEL, C1 ``\\x80``-``\\x9f``), no backslash (a path separator on some servers and clients), no lone
    surrogate (a name that is not UTF-8), no U+FFFE/U+FFFF. At most 1024 characters, and at most 255 UTF-8
    bytes per component (a directory tier's limit). Anything else, spaces and any Unicode included, is kept
    as it is. Raises :class:`InvalidName` naming the path and showing the offending character escaped.
    """
    if not path:
        raise InvalidName("invalid member path '': empty")
    bad = _forbidden_char(path)
    if bad is not None:
        what = "a lone surrogate (the name is not UTF-8)" if 0xD800 <= ord(bad) <= 0xDFFF else "the character"
        raise InvalidName(f"invalid member path {path!r}: holds {what} {bad!r} (U+{ord(bad):04X}), "
                          "which S3 servers do not store faithfully")
    if "\\" in path:
        raise InvalidName(f"invalid member path {path!r}: holds a backslash, which some servers take as '/'")
    parts = path.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise InvalidName(f"invalid member path {path!r}: empty, '.' or '..' components or a leading or "
                          "trailing '/'")
    if parts[0] == MANIFEST_DIR:
        raise InvalidName(f"member path {path!r} is inside the reserved {MANIFEST_DIR}/ directory")
    if len(path) > MEMBER_PATH_MAX:
        raise InvalidName(f"member path {path[:60]!r}... is {len(path)} characters, longer than {MEMBER_PATH_MAX}")
    for p in parts:
        if len(p.encode()) > COMPONENT_BYTES_MAX:
            raise InvalidName(f"member path {path[:60]!r}...: the component {p[:40]!r}... is "
                              f"{len(p.encode())} bytes, longer than {COMPONENT_BYTES_MAX}")
    return path


def check_members_form_a_tree(paths: Iterable[str]) -> None:
    """Refuse a file that is also a directory of another (``a`` and ``a/b``): no directory tier, and not
    every S3 server, can hold both."""
    paths = list(paths)
    files = set(paths)
    for path in paths:
        cut = path.find("/")
        while cut != -1:
            if path[:cut] in files:
                raise InvalidName(f"member {path[:cut]!r} is both a file and the directory of {path!r}")
            cut = path.find("/", cut + 1)


def prefix_ancestors(prefix: str) -> list[str]:
    """Every prefix of ``prefix`` that ends at a ``/`` (``a/b/`` -> ``a/``, ``a/b/``)."""
    return [prefix[: i + 1] for i, ch in enumerate(prefix) if ch == "/"]


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
