"""The attribute index: what an item is, as keys that sort by value.

    attrs   field + value -> id:u64 (LMDB sorted duplicates: 8 bytes an item, in id order)

Fields (one byte): K kind, S size, W width, H height, D duration, F fps, C created,
and M + key:utf8 + 0x00 + type:1 byte for a client-metadata key. Values are encoded so
that byte order is value order: unsigned integers as u64, floats (duration, fps,
metadata numbers) as order-preserving float64, datetimes as ns + 2^63 in u64,
booleans as one byte, text as UTF-8 (cut at TEXT_KEPT bytes) and a 0x00 end mark.

One value's ids come in increasing order, so an equality is one key whose ids join
with the name postings in the leapfrog (meta/search.py); a range is a key range.
Fields a kind lacks are not written.

Client metadata: a key declared in the metadata schema (metadata_schema.py) is indexed
with its type; any other key's scalar values (and the scalars of a list) as text, so
`meta.tags=car` and `meta.tags~car` find them without reading every item.

Nothing here knows a rule: `types` (declared key -> type letter) comes from the caller."""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from encfs.model import Item

U64 = struct.Struct(">Q")
F64 = struct.Struct(">d")
TEXT_KEPT = 96  # bytes of a text value kept in its key; longer values are verified per item
NUMBER, TEXT, BOOLEAN, DATETIME = b"n", b"t", b"b", b"d"
KIND, SIZE, WIDTH, HEIGHT, DURATION, FPS, CREATED, META = (b"K", b"S", b"W", b"H", b"D", b"F", b"C", b"M")
INT_FIELDS = {"size": SIZE, "width": WIDTH, "height": HEIGHT, "created": CREATED}
FLOAT_FIELDS = {"duration": DURATION, "fps": FPS}


def datetime_ns(value: Any) -> int | None:
    """An ISO 8601 date or datetime (UTC when no zone is given) as ns since 1970."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


def encode_u64(n: int) -> bytes:
    return U64.pack(min(max(n, 0), (1 << 64) - 1))


def encode_float(x: float) -> bytes:
    """Order-preserving float64: flip every bit of a negative number, the sign bit of
    any other."""
    bits = U64.unpack(F64.pack(float(x)))[0]
    return U64.pack(bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63))


def encode_text(text: str) -> bytes:
    """Text cut at TEXT_KEPT bytes, NUL made 0x01 so that 0x00 ends it."""
    return text.replace("\x00", "\x01").encode("utf-8", "surrogateescape")[:TEXT_KEPT] + b"\x00"


def encode_datetime_ns(ns: int) -> bytes:
    return encode_u64(ns + (1 << 63))


def meta_field(key: str, type_letter: bytes) -> bytes:
    return META + key.encode("utf-8", "surrogateescape") + b"\x00" + type_letter


def meta_key_prefix(key: str) -> bytes:
    return META + key.encode("utf-8", "surrogateescape") + b"\x00"


def scalar_text(value: Any) -> str | None:
    """How an undeclared key's scalar is indexed (and compared) as text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return json.dumps(value)
    return None


def typed_value(type_letter: bytes, value: Any) -> bytes | None:
    """A declared key's value as index bytes (None: not of the type; never stored
    once the key is declared, as the door refuses it)."""
    if type_letter == NUMBER:
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            return encode_float(value)
        return None
    if type_letter == BOOLEAN:
        return (b"\x01" if value else b"\x00") if isinstance(value, bool) else None
    if type_letter == DATETIME:
        ns = datetime_ns(value)
        return None if ns is None else encode_datetime_ns(ns)
    return encode_text(value) if isinstance(value, str) else None


def meta_entries(metadata: dict[str, Any], types: dict[str, bytes]) -> Iterable[bytes]:
    for key, value in metadata.items():
        if not isinstance(key, str):
            continue
        declared = types.get(key)
        if declared is not None:
            encoded = typed_value(declared, value)
            if encoded is not None:
                yield meta_field(key, declared) + encoded
                continue
        for scalar in value if isinstance(value, list) else [value]:
            text = scalar_text(scalar)
            if text is not None:
                yield meta_field(key, TEXT) + encode_text(text)


def entries_of(item: Item, types: dict[str, bytes]) -> set[bytes]:
    """The index keys (without the id) of an item."""
    media = item.media
    keys = {KIND + encode_text(media.kind.value), SIZE + encode_u64(item.size),
            CREATED + encode_u64(item.created_ns)}
    if media.width is not None:
        keys.add(WIDTH + encode_u64(int(media.width)))
    if media.height is not None:
        keys.add(HEIGHT + encode_u64(int(media.height)))
    if media.duration is not None and math.isfinite(media.duration):
        keys.add(DURATION + encode_float(media.duration))
    if media.fps is not None and math.isfinite(media.fps):
        keys.add(FPS + encode_float(media.fps))
    if item.client_metadata:
        keys.update(meta_entries(item.client_metadata, types))
    return keys


TYPE_LETTERS = {"number": NUMBER, "text": TEXT, "enum": TEXT, "boolean": BOOLEAN, "datetime": DATETIME}


def index_type(schema_type: str) -> bytes:
    """The index type letter of a declared key's type (enum values are text)."""
    return TYPE_LETTERS.get(schema_type, TEXT)
