"""What goes on the wire besides the bytes: request checksum headers and the XML documents of S3 requests."""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Iterable, Mapping
from typing import Any, Final
from xml.etree import ElementTree
from xml.sax.saxutils import escape as xml_escape

from tiering.storage.s3.errors import s3_error

_S3_XMLNS: Final = "http://s3.amazonaws.com/doc/2006-03-01/"


def checksum_headers(algorithm: str, data: bytes) -> dict[str, str]:
    """The header carrying ``data``'s checksum: CRC32 or MD5; none for ""."""
    if algorithm == "crc32":
        return {"x-amz-checksum-crc32": base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()}
    if algorithm == "md5":
        return {"content-md5": base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()}
    return {}


def checksum_args(headers: Mapping[str, str]) -> dict[str, str]:
    """The same checksum as botocore parameters."""
    names = {"x-amz-checksum-crc32": "ChecksumCRC32", "content-md5": "ContentMD5"}
    return {names[h]: v for h, v in headers.items()}


def delete_objects_xml(keys: Iterable[str]) -> bytes:
    """The body of a quiet DeleteObjects request for ``keys`` (full object keys)."""
    objects = "".join(f"<Object><Key>{xml_escape(k)}</Key></Object>" for k in keys)
    return (f'<?xml version="1.0" encoding="UTF-8"?><Delete xmlns="{_S3_XMLNS}"><Quiet>true</Quiet>'
            f"{objects}</Delete>").encode()


def complete_multipart_xml(parts: Iterable[Mapping[str, Any]]) -> bytes:
    """The body of a CompleteMultipartUpload request for ``parts`` (PartNumber, ETag, ChecksumCRC32 if any)."""
    items = "".join(
        f"<Part><PartNumber>{int(p['PartNumber'])}</PartNumber><ETag>{xml_escape(str(p['ETag']))}</ETag>"
        + (f"<ChecksumCRC32>{xml_escape(str(p['ChecksumCRC32']))}</ChecksumCRC32>" if "ChecksumCRC32" in p else "")
        + "</Part>"
        for p in parts
    )
    return (f'<?xml version="1.0" encoding="UTF-8"?><CompleteMultipartUpload xmlns="{_S3_XMLNS}">{items}'
            "</CompleteMultipartUpload>").encode()


def xml_local(tag: str) -> str:
    return tag.rpartition("}")[2]


def xml_text(node: ElementTree.Element, name: str) -> str:
    """The text of ``node``'s first child named ``name`` (any namespace), or ""."""
    for child in node:
        if xml_local(child.tag) == name:
            return child.text or ""
    return ""


def answer_root(document: bytes, operation: str) -> ElementTree.Element:
    """The root element of an XML answer. An error document (some servers send those with status 200, after
    whitespace sent to keep the connection open) or no XML at all raises ``ClientError``."""
    try:
        root = ElementTree.fromstring(document.lstrip())
    except ElementTree.ParseError as exc:
        raise s3_error("InternalError", f"unreadable {operation} answer: {exc}", operation) from exc
    if xml_local(root.tag) == "Error":
        raise s3_error(xml_text(root, "Code"), xml_text(root, "Message"), operation)
    return root


def delete_objects_errors(document: bytes) -> list[tuple[str, str, str]]:
    """(key, code, message) of each ``Error`` in a DeleteObjects answer. An answer that is an error document
    itself or no XML at all raises ``ClientError``."""
    return errors_in(answer_root(document, "DeleteObjects"))


def errors_in(root: ElementTree.Element) -> list[tuple[str, str, str]]:
    """(key, code, message) of each ``Error`` under a DeleteObjects answer's root."""
    return [(xml_text(node, "Key"), xml_text(node, "Code"), xml_text(node, "Message"))
            for node in root if xml_local(node.tag) == "Error"]
