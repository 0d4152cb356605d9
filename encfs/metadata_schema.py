"""Typed client-metadata keys, as Encord's organisation metadata schema.

A declared key has a type: number, text, boolean, datetime (ISO 8601 text, e.g.
`2026-01-31` or `2026-01-31T12:00:00Z`), or enum with its values. Client metadata is
checked against the declared keys wherever it comes in (the mount's setfattr, the CLI's
--metadata, imports): a value of the wrong type is refused with a sentence naming the
key. Undeclared keys stay free-form. Declared keys are indexed by their type (numbers
and datetimes by value, so ranges work; meta/attrindex.py).

Declaring a key re-indexes the items that hold it, and is refused if one holds a value
of another type; removing a declaration indexes the key as text again."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from encfs.access.policy import AccessPolicy
from encfs.errors import AccessDenied, AlreadyExists, InvalidInput, NotFound
from encfs.meta.attrindex import META, datetime_ns, entries_of, meta_key_prefix
from encfs.meta.search import U64
from encfs.meta.store import MetaStore, ReadTxn, WriteTxn
from encfs.model import Actor, Item

TYPES = ("number", "text", "boolean", "datetime", "enum")
KEY_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}")
ENUM_VALUES_MAX = 1000


@dataclass
class KeyType:
    key: str
    type: str
    values: list[str]

    def accepts(self, value: Any) -> bool:
        if self.type == "number":
            return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        if self.type == "boolean":
            return isinstance(value, bool)
        if self.type == "datetime":
            return datetime_ns(value) is not None
        if self.type == "enum":
            return isinstance(value, str) and value in self.values
        return isinstance(value, str)

    def expected(self) -> str:
        if self.type == "enum":
            return "one of " + ", ".join(self.values)
        return {"number": "a number", "boolean": "true or false", "text": "text",
                "datetime": "an ISO 8601 date or datetime such as 2026-01-31T12:00:00Z"}[self.type]

    def describe(self) -> str:
        return f"{self.key}\t{self.type}" + (f"\t{','.join(self.values)}" if self.values else "")


class MetadataSchema:
    """The declared keys of a store, read from its metadata (never cached: another
    process may declare a key)."""

    def __init__(self, meta: MetaStore, access: AccessPolicy) -> None:
        self.meta = meta
        self.access = access

    def declared(self) -> list[KeyType]:
        with self.meta.read() as r:
            declared = sorted(r.schema().items())
        return [KeyType(key, rec["type"], rec.get("values", [])) for key, rec in declared]

    def check(self, metadata: dict[str, Any], path: str = "", r: ReadTxn | None = None) -> None:
        """Refuse client metadata whose declared keys hold values of another type
        (`r`: the change's own transaction, when there is one)."""
        if not metadata:
            return
        if r is not None:
            declared = r.schema()
        else:
            with self.meta.read() as read:
                declared = read.schema()
        for key, record in declared.items():
            if key in metadata:
                kind = KeyType(key, record["type"], record.get("values", []))
                if not kind.accepts(metadata[key]):
                    raise InvalidInput(f"client metadata key '{key}' is declared {kind.type}: its value "
                                       f"must be {kind.expected()}, not {_shown(metadata[key])}", path)

    def _require_admin(self, actor: Actor) -> None:
        """Once the store has users, only an admin declares keys (they bind everyone)."""
        with self.meta.read() as r:
            if self.access.organised(r) and not self.access.person(r, actor).admin:
                raise AccessDenied("only an admin declares or removes metadata keys")

    def add(self, actor: Actor, key: str, type_name: str, values: list[str]) -> KeyType:
        kind = _declared(key, type_name, values)
        self._require_admin(actor)
        with self.meta.write() as w:
            if key in w.schema():
                raise AlreadyExists(f"metadata key '{key}' is already declared; remove it first to change "
                                    "its type")
            holders = _holders(w, key)
            for item in holders:
                if key in item.client_metadata and not kind.accepts(item.client_metadata[key]):
                    raise InvalidInput(f"cannot declare '{key}' {type_name}: item {item.name} (id {item.id}) "
                                       f"holds {_shown(item.client_metadata[key])}, not {kind.expected()}")
            record: dict[str, Any] = {"type": type_name}
            if values:
                record["values"] = values
            _reindex(w, holders, lambda: w.put_schema_key(key, record))
        return kind

    def remove(self, actor: Actor, key: str) -> None:
        self._require_admin(actor)
        with self.meta.write(reserve=True) as w:
            if key not in w.schema():
                raise NotFound(f"no metadata key '{key}' is declared")
            _reindex(w, _holders(w, key), lambda: w.put_schema_key(key, None))


def _declared(key: str, type_name: str, values: list[str]) -> KeyType:
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidInput(f"'{key}' is not a metadata key name: use letters, digits, _ . - (at most 128)")
    if type_name not in TYPES:
        raise InvalidInput(f"'{type_name}' is not a type; use one of {', '.join(TYPES)}")
    if type_name == "enum":
        if not values or len(values) > ENUM_VALUES_MAX or any(not v for v in values):
            raise InvalidInput(f"an enum key needs its values (1 to {ENUM_VALUES_MAX}, none empty), "
                               "e.g. --values north,south")
    elif values:
        raise InvalidInput("only an enum key takes --values")
    return KeyType(key, type_name, list(dict.fromkeys(values)))


def _holders(w: WriteTxn, key: str) -> list[Item]:
    """The items whose metadata holds the key, found by its index keys."""
    prefix = meta_key_prefix(key)
    ids = sorted({U64.unpack(value)[0] for _, value in w._scan("attrs", prefix)})
    items = [w.node(i) for i in ids]
    return [item for item in items if isinstance(item, Item)]


def _reindex(w: WriteTxn, items: list[Item], change: Any) -> None:
    """Apply the schema change and move the items' index keys with it."""
    before = {item.id: {k for k in entries_of(item, w.types()) if k.startswith(META)} for item in items}
    change()
    for item in items:
        after = {k for k in entries_of(item, w.types()) if k.startswith(META)}
        w.index_attributes(item.id, before[item.id], after)


def _shown(value: Any) -> str:
    import json

    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."
