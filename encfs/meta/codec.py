"""Node records as compact JSON. Binary xattr values travel as surrogate-escaped text."""

from __future__ import annotations

import json
import stat
import struct
from typing import Any

from encfs.model import Attributes, Dataset, Folder, Item, Kind, Media, Node, Project

_NODE_FIELDS = (
    "id", "parent", "name", "mode", "uid", "gid", "owner",
    "created_ns", "mtime_ns", "ctime_ns", "atime_ns", "client_metadata", "xattrs",
)
_MEDIA_FIELDS = ("mime", "width", "height", "duration", "fps", "frames", "note", "extra")
_ENCODER = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps with options makes one a call
_DECODER = json.JSONDecoder()


def encode_node(node: Node) -> bytes:
    record: dict[str, Any] = {name: getattr(node, name) for name in _NODE_FIELDS}
    if isinstance(node, Folder):
        record["description"] = node.description
        record["subfolders"] = node.subfolders
    elif isinstance(node, Item):
        record["size"] = node.size
        if node.members or node.source_folder is not None:
            record["members"], record["source_folder"] = node.members, node.source_folder
        if node.dicom is not None:
            record["dicom"] = node.dicom
        if node.datasets:
            record["datasets"] = node.datasets
        record["blob"] = node.blob
        record["kind"] = node.media.kind.value
        for name in _MEDIA_FIELDS:
            record[name] = getattr(node.media, name)
    return _ENCODER.encode(record).encode()


def decode_node(raw: bytes) -> Folder | Item:
    record = _DECODER.decode(raw.decode())
    common = {name: record[name] for name in _NODE_FIELDS}
    if stat.S_ISDIR(record["mode"]):
        return Folder(**common, description=record["description"], subfolders=record["subfolders"])
    media = Media(kind=Kind(record["kind"]), **{name: record[name] for name in _MEDIA_FIELDS})
    return Item(
        **common, size=record["size"], blob=record["blob"], media=media, members=record.get("members", []),
        source_folder=record.get("source_folder"), dicom=record.get("dicom"),
        datasets=record.get("datasets", 0),
    )


def encode_collection(collection: Dataset | Project) -> bytes:
    record = dict(vars(collection))
    record["type"] = "dataset" if isinstance(collection, Dataset) else "project"
    return json.dumps(record, separators=(",", ":")).encode()


def decode_collection(raw: bytes) -> Dataset | Project:
    record = json.loads(raw)
    return Dataset(**record) if record.pop("type") == "dataset" else Project(**record)


ATTRIBUTES = struct.Struct(">QIIIQqqqI")


def encode_attributes(attributes: Attributes) -> bytes:
    return ATTRIBUTES.pack(*attributes)


def decode_attributes(raw: bytes) -> Attributes:
    return Attributes._make(ATTRIBUTES.unpack(raw))


def xattr_to_text(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def xattr_from_text(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")
