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
) -> bytes:
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
        items.append(entry)
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
    return json.dumps(doc, indent=1, sort_keys=False).encode()


def parse_manifest(data: bytes) -> dict[str, Any]:
    doc = json.loads(data)
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise ValueError("not a tiering manifest")
    return doc
