"""Node records as compact JSON. Binary xattr values travel as surrogate-escaped text."""

from __future__ import annotations

import json
import logging
import re
import stat
import struct
from typing import Any

from encfs.metadata import nesting_depth
from encfs.model import (
    Attributes,
    Dataset,
    Folder,
    Item,
    Kind,
    Media,
    Node,
    Project,
    Special,
    is_special_mode,
)

_NODE_FIELDS = (
    "id", "parent", "name", "mode", "uid", "gid", "owner",
    "created_ns", "mtime_ns", "ctime_ns", "atime_ns", "client_metadata", "xattrs",
)
_MEDIA_FIELDS = ("mime", "width", "height", "duration", "fps", "frames", "note", "extra")
_ENCODER = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps with options makes one a call
_DECODER = json.JSONDecoder()
# A record that the fast decoder cannot read (client metadata nested a thousand deep or
# with a 5,000-digit integer, stored before encfs bounded them) is read again with its
# deep values cut off and huge integers dropped; its client metadata is then shown as {}.
_SALVAGE_DEPTH = 100
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
# Metadata an older encfs stored deeper than today's limit of 64 is kept as long as
# Python can still show it (json recurses once per level, within its limit of 1,000
# frames wherever it runs); deeper than this it is shown as {}.
_SERVABLE_DEPTH = 200
_FEW_BRACKETS = _SERVABLE_DEPTH + 2  # a record with no more cannot nest deeper
log = logging.getLogger("encfs")
_REPORTED: set[Any] = set()  # nodes whose unreadable metadata was logged (once a process)


def encode_node(node: Node) -> bytes:
    record: dict[str, Any] = {name: getattr(node, name) for name in _NODE_FIELDS}
    if isinstance(node, Folder):
        record["description"] = node.description
        record["subfolders"] = node.subfolders
    elif isinstance(node, Special):
        record["target"], record["rdev"] = node.target, node.rdev
    elif isinstance(node, Item):
        record["size"] = node.size
        if node.members or node.source_folder is not None:
            record["members"], record["source_folder"] = node.members, node.source_folder
        if node.dicom is not None:
            record["dicom"] = node.dicom
        if node.datasets:
            record["datasets"] = node.datasets
        if node.identity is not None:
            record["identity"] = node.identity
        record["blob"] = node.blob
        hint = node.block_sum_hint()
        if hint is not None:
            record["bsum"] = hint
        record["kind"] = node.media.kind.value
        for name in _MEDIA_FIELDS:
            record[name] = getattr(node.media, name)
    return _ENCODER.encode(record).encode()


def decode_node(raw: bytes) -> Folder | Item | Special:
    record = _node_record(raw)
    common = {name: record[name] for name in _NODE_FIELDS}
    if stat.S_ISDIR(record["mode"]):
        return Folder(**common, description=record["description"], subfolders=record["subfolders"])
    if is_special_mode(record["mode"]):
        return Special(**common, target=record["target"], rdev=record["rdev"])
    media = Media(kind=Kind(record["kind"]), **{name: record[name] for name in _MEDIA_FIELDS})
    hint = record.get("bsum")
    return Item(
        **common, size=record["size"], blob=record["blob"], media=media, members=record.get("members", []),
        source_folder=record.get("source_folder"), dicom=record.get("dicom"),
        datasets=record.get("datasets", 0), identity=record.get("identity"),
        only_block_sum=None if hint is None or record["blob"] is None else (record["blob"], hint),
    )


def _node_record(raw: bytes) -> dict[str, Any]:
    """The record as a dict; client metadata that cannot be read back or shown (see
    _SALVAGE_DEPTH and _SERVABLE_DEPTH) is replaced by {} with a log line, so the node
    stays readable, removable and searchable."""
    text = raw.decode()
    try:
        record = _DECODER.decode(text)
    except (RecursionError, ValueError) as exc:
        record = _SALVAGER.decode(_pruned(text, _SALVAGE_DEPTH))
        _drop_client_metadata(record, f"it could not be read ({type(exc).__name__})")
        return record
    metadata = record["client_metadata"]
    if (metadata and raw.count(b"{") + raw.count(b"[") > _FEW_BRACKETS
            and nesting_depth(metadata, _SERVABLE_DEPTH) > _SERVABLE_DEPTH):
        _drop_client_metadata(record, f"it nests deeper than {_SERVABLE_DEPTH}")
    return record


def _drop_client_metadata(record: dict[str, Any], why: str) -> None:
    record["client_metadata"] = {}
    if record.get("id") in _REPORTED:
        return
    _REPORTED.add(record.get("id"))
    log.warning("node %s: its client metadata is shown as {} because %s (stored by an older encfs "
                "that did not bound it); the node's next change stores {}, or set it again to replace it",
                record.get("id"), why)


def _pruned(text: str, depth: int) -> str:
    """JSON text with every object or array nested deeper than `depth` replaced by null,
    scanned without recursion."""
    pieces, kept_until, level = [], 0, 0
    for token in _TOKENS.finditer(text):
        mark = token.group()
        if mark[0] == '"':
            continue
        if mark in "[{":
            level += 1
            if level == depth + 1:
                pieces.append(text[kept_until:token.start()])
        else:
            if level == depth + 1:
                pieces.append("null")
                kept_until = token.end()
            level -= 1
    pieces.append(text[kept_until:])
    return "".join(pieces)


def _bounded_int(digits: str) -> int | None:
    """Integers Python reads (it refuses strings of more than 4,300 digits)."""
    return int(digits) if len(digits) <= 4000 else None


_SALVAGER = json.JSONDecoder(parse_int=_bounded_int)


def encode_collection(collection: Dataset | Project) -> bytes:
    record = dict(vars(collection))
    record["type"] = "dataset" if isinstance(collection, Dataset) else "project"
    return json.dumps(record, separators=(",", ":")).encode()


def decode_collection(raw: bytes) -> Dataset | Project:
    record = json.loads(raw)
    return Dataset(**record) if record.pop("type") == "dataset" else Project(**record)


ATTRIBUTES = struct.Struct(">QIIIQqqqI")
DEVICE_ATTRIBUTES = struct.Struct(">QIIIQqqqIQ")  # a device node's: with its rdev


def encode_attributes(attributes: Attributes) -> bytes:
    if attributes.rdev:
        return DEVICE_ATTRIBUTES.pack(*attributes)
    return ATTRIBUTES.pack(*attributes[:-1])


def decode_attributes(raw: bytes) -> Attributes:
    if len(raw) == DEVICE_ATTRIBUTES.size:
        return Attributes._make(DEVICE_ATTRIBUTES.unpack(raw))
    return Attributes(*ATTRIBUTES.unpack(raw))


def xattr_to_text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def xattr_from_text(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
