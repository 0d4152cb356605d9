"""How a search runs: plan from the indexes, verify each candidate, stream the hits.

A query (search_query.py) is name substrings and conditions. Each part that an index
can answer becomes a source of candidate item ids:

- id-ordered sources (keys `prefix + id:u64`): the postings of the whole grams of
  each name substring of GRAM (8) characters or more, equalities on the attribute
  index (kind=, width=, meta.KEY=V) and a Dataset's links (in:). These are
  intersected by a leapfrog join (meta/search.py), seeking rather than scanning.
- value-ordered sources: a shorter name substring (the postings of the grams that
  start with it: exactly the items that hold it), ranges on the attribute index
  (size>5MB, created>DATE, meta.score>0.8; meta.KEY~text reads the entries of that
  key), and a folder subtree (under:/F, read through its folder entries).

The planner picks the cheapest: with a long name substring, the leapfrog (unless
another source holds fewer than RANGE_FIRST ids); otherwise it counts each source up
to ESTIMATE_CAP and takes the smallest (a range when equal: equalities such as kind=image are coarse).
Every candidate is then read once and checked against the whole query (name, every
condition, that it is still in the tree, that the caller may see it), so an index only
has to hold a superset. Negations (kind!=, not-in:) use no index and are checked per
candidate; a query of negations alone reads every item.

Hits stream in the order their source gives them (item id for the leapfrog, value for
a range, gram for a short name substring); `sorted_hits` orders them by path."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from encfs.access.policy import AccessPolicy
from encfs.errors import InvalidInput, NotFound
from encfs.meta import attrindex as ix
from encfs.meta.search import (
    U64,
    DupCursor,
    IdCursor,
    Seekable,
    gram_postings,
    ids_of_grams_starting,
    joined_grams,
    leapfrog,
)
from encfs.meta.store import MetaStore, ReadTxn
from encfs.model import ROOT_ID, Actor, Folder, Item, SearchHit
from encfs.names import is_text, split_path
from encfs.search_query import ORDERED, Condition, Query

ESTIMATE_CAP = 1000
RANGE_FIRST = 256
FOLDER_TAGS = {"size": ix.SIZE, "width": ix.WIDTH, "height": ix.HEIGHT, "created": ix.CREATED,
               "duration": ix.DURATION, "fps": ix.FPS}
PathOf = Callable[[ReadTxn, int, str, dict[int, str]], str]


@dataclass
class Range:
    """Keys from `low` up to `high` (inclusive), all starting with `prefix`."""

    prefix: bytes
    low: bytes
    high: bytes | None

    def ids(self, r: ReadTxn) -> Iterator[int]:
        with r.txn.cursor(db=r.dbs["attrs"]) as cur:
            if not cur.set_range(self.low):
                return
            for key, value in cur:
                if not key.startswith(self.prefix) or (self.high is not None and key > self.high):
                    return
                yield U64.unpack(value)[0]

    def count(self, r: ReadTxn, limit: int) -> int:
        """The ids in the range, counted up to about `limit` (whole values at a time)."""
        n, prefix, high = 0, self.prefix, self.high
        with r.txn.cursor(db=r.dbs["attrs"]) as cur:
            found = cur.set_range(self.low)
            while found and n < limit:
                key = cur.key()
                if not key.startswith(prefix) or (high is not None and key > high):
                    break
                n += cur.count()
                found = cur.next_nodup()
        return n


@dataclass
class NameStart:
    """The items whose name holds `text`, a query shorter than a gram: the postings of
    the grams that start with it (an item once for each place it holds the text)."""

    text: str

    def ids(self, r: ReadTxn) -> Iterator[int]:
        return ids_of_grams_starting(r.txn, r.dbs["grams"], self.text.encode())

    def count(self, r: ReadTxn, limit: int) -> int:
        return sum(1 for _ in ids_of_grams_starting(r.txn, r.dbs["grams"], self.text.encode(), limit))


@dataclass
class Subtree:
    """The items under a folder, read through the folder entries."""

    folder_id: int

    def ids(self, r: ReadTxn) -> Iterator[int]:
        stack = [self.folder_id]
        while stack:
            for _, child, is_folder in r.children(stack.pop()):
                if is_folder:
                    stack.append(child)
                else:
                    yield child

    def count(self, r: ReadTxn, limit: int) -> int:
        n = 0
        for _ in self.ids(r):
            n += 1
            if n >= limit:
                break
        return n


@dataclass
class Plan:
    """Resolved conditions and the sources the query can be read from."""

    joined: list[Seekable]
    scans: list[Range | Subtree | NameStart]
    types: dict[str, dict[str, Any]]
    datasets: dict[str, int]
    folders: dict[str, int]
    below: dict[tuple[int, int], bool] = field(default_factory=dict)  # (folder, ancestor) -> under?
    whole_grams: bool = False  # a name substring joins its grams (the join is then the rule)


class Finder:
    """Runs queries for the service; `path_of(r, parent, name, cache)` makes paths."""

    def __init__(self, meta: MetaStore, access: AccessPolicy, path_of: PathOf) -> None:
        self.meta = meta
        self.access = access
        self.path_of = path_of

    def hits(self, actor: Actor, query: Query, limit: int | None = None) -> Iterator[SearchHit]:
        """The items matching the query that the actor may see, streamed as found. A
        bad query (an unknown Dataset or folder, a value of the wrong type for a
        declared key) is refused here, before the first hit is asked for."""
        if query.empty:
            raise InvalidInput("give some text to search for, or an expression such as kind=image")
        if (limit is not None and limit <= 0) or any(not is_text(text) for text in query.texts):
            return iter(())  # names are text: bytes that are not UTF-8 match none
        with self.meta.read() as r:
            self._plan(r, query)
        return self._stream(actor, query, limit)

    def _stream(self, actor: Actor, query: Query, limit: int | None) -> Iterator[SearchHit]:
        with self.meta.read() as r:
            plan = self._plan(r, query)
            paths: dict[int, str] = {}
            found = 0
            for item_id in self._candidates(r, plan, query):
                item = self._matching(r, plan, query, item_id)
                if item is None or not self.access.sees_file(r, actor, item):
                    continue
                yield SearchHit(path=self.path_of(r, item.parent, item.name, paths), item=item)
                found += 1
                if limit is not None and found >= limit:
                    return

    def sorted_hits(self, actor: Actor, query: Query, limit: int | None = None) -> list[SearchHit]:
        return sorted(self.hits(actor, query, limit), key=lambda hit: hit.path)

    # ------------------------------------------------------------------ planning

    def _plan(self, r: ReadTxn, query: Query) -> Plan:
        plan = Plan([], [], r.schema(), {}, {})
        for text in query.texts:
            grams = joined_grams(text)
            if grams:
                plan.joined.extend(gram_postings(r.txn, r.dbs["grams"], gram) for gram in grams)
                plan.whole_grams = True
            else:
                plan.scans.append(NameStart(text))
        for condition in query.conditions:
            self._add_source(r, plan, condition)
        return plan

    def _add_source(self, r: ReadTxn, plan: Plan, c: Condition) -> None:
        attrs = r.dbs["attrs"]
        if c.field == "kind":
            if c.op == "=":
                plan.joined.append(DupCursor(r.txn.cursor(db=attrs), ix.KIND + ix.encode_text(c.value.value)))
        elif c.field in ("in", "not-in"):
            dataset_id = r.collection_id(b"d", c.value)
            if dataset_id is None:
                raise InvalidInput(f"'{c.field}:{c.value}': no Dataset is named {c.value}")
            plan.datasets[c.value] = dataset_id
            if c.field == "in":
                plan.joined.append(IdCursor(r.txn.cursor(db=r.dbs["links"]), U64.pack(dataset_id)))
        elif c.field == "under":
            folder_id = _folder_id(r, c.value)
            plan.folders[c.value] = folder_id
            plan.scans.append(Subtree(folder_id))
        elif c.field in FOLDER_TAGS:
            self._add_field_source(r, plan, c)
        elif c.meta_key is not None:
            self._add_meta_source(r, plan, c)

    def _add_field_source(self, r: ReadTxn, plan: Plan, c: Condition) -> None:
        tag = FOLDER_TAGS[c.field]
        encode = ix.encode_float if tag in (ix.DURATION, ix.FPS) else (lambda v: ix.encode_u64(math.ceil(v)))
        if c.op == "=" and c.until is not None:  # created=DATE: that day
            plan.scans.append(Range(tag, tag + ix.encode_u64(c.value), tag + ix.encode_u64(c.until - 1)))
        elif c.op == "=" and (tag in (ix.DURATION, ix.FPS) or c.value == int(c.value)):
            plan.joined.append(DupCursor(r.txn.cursor(db=r.dbs["attrs"]), tag + encode(c.value)))
        elif c.op in ORDERED:
            plan.scans.append(_range(tag, encode(c.value) if c.op in (">", ">=") else None,
                                     _floor(tag, c.value) if c.op in ("<", "<=") else None))

    def _add_meta_source(self, r: ReadTxn, plan: Plan, c: Condition) -> None:
        key = c.meta_key
        assert key is not None
        declared = plan.types.get(key)
        letter = ix.index_type(declared["type"]) if declared else ix.TEXT
        value = meta_value(c, declared)
        prefix = ix.meta_field(key, letter)
        if c.op == "=" and (declared or isinstance(value, str)):
            encoded = ix.typed_value(letter, value) if letter != ix.TEXT else ix.encode_text(value)
            if encoded is not None:
                plan.joined.append(DupCursor(r.txn.cursor(db=r.dbs["attrs"]), prefix + encoded))
        elif c.op in ORDERED and declared and letter != ix.TEXT:
            encoded = ix.typed_value(letter, value)
            if encoded is not None:
                low = encoded if c.op in (">", ">=") else None
                plan.scans.append(_range(prefix, low, encoded if c.op in ("<", "<=") else None))
        elif c.op != "!=":
            plan.scans.append(Range(ix.meta_key_prefix(key), ix.meta_key_prefix(key), None))

    def _candidates(self, r: ReadTxn, plan: Plan, query: Query) -> Iterator[int]:
        scan = self._cheapest_scan(r, plan)
        if scan is not None:  # the joined sources checked by a point lookup each, before a read
            for item_id in _unique(scan.ids(r)):
                if all(source.holds(item_id) for source in plan.joined):
                    yield item_id
        elif plan.joined:
            yield from leapfrog(plan.joined)
        else:  # negations only: every item (each has a kind)
            yield from Range(ix.KIND, ix.KIND, None).ids(r)

    def _cheapest_scan(self, r: ReadTxn, plan: Plan) -> Range | Subtree | NameStart | None:
        """The source to read instead of the leapfrog, if it is smaller."""
        if not plan.scans:
            return None
        cap = RANGE_FIRST if plan.whole_grams else ESTIMATE_CAP
        counted = sorted(((scan.count(r, cap), i) for i, scan in enumerate(plan.scans)))
        fewest, best = counted[0]
        if not plan.joined:
            return plan.scans[best]
        if plan.whole_grams:
            return plan.scans[best] if fewest < cap else None
        joined = min(source.count(cap) for source in plan.joined)
        return plan.scans[best] if fewest <= joined else None

    # ------------------------------------------------------------------ checking

    def _matching(self, r: ReadTxn, plan: Plan, query: Query, item_id: int) -> Item | None:
        item = r.node(item_id)
        if not isinstance(item, Item) or r.child_id(item.parent, item.name) != item_id:
            return None  # gone, or out of the tree (a tombstone)
        lowered = item.name.casefold()
        if any(text not in lowered for text in query.texts):
            return None
        for c in query.conditions:
            if not self._holds(r, plan, c, item):
                return None
        return item

    def _holds(self, r: ReadTxn, plan: Plan, c: Condition, item: Item) -> bool:
        if c.field == "kind":
            return (item.media.kind == c.value) == (c.op == "=")
        if c.field in ("in", "not-in"):
            return (r.link_in(plan.datasets[c.value], item.id) is not None) == (c.field == "in")
        if c.field == "under":
            pair = (item.parent, plan.folders[c.value])
            if pair not in plan.below:
                plan.below[pair] = _is_under(r, *pair)
            return plan.below[pair]
        if c.field == "created":
            if c.until is not None:
                inside = c.value <= item.created_ns < c.until
                return inside == (c.op == "=")
            return compare(item.created_ns, c.op, c.value)
        if c.field in FOLDER_TAGS:
            have = item.size if c.field == "size" else getattr(item.media, c.field)
            return have is not None and compare(have, c.op, c.value)
        key = c.meta_key
        assert key is not None
        return meta_holds(item.client_metadata, key, c, plan.types.get(key))


def _range(prefix: bytes, low: bytes | None, high: bytes | None) -> Range:
    return Range(prefix, prefix + (low or b""), None if high is None else prefix + high)


def _floor(tag: bytes, value: float) -> bytes:
    if tag in (ix.DURATION, ix.FPS):
        return ix.encode_float(value)
    return ix.encode_u64(math.floor(value))


def _unique(ids: Iterator[int]) -> Iterator[int]:
    seen: set[int] = set()
    for item_id in ids:
        if item_id not in seen:
            seen.add(item_id)
            yield item_id


def _folder_id(r: ReadTxn, path: str) -> int:
    node_id = ROOT_ID
    for part in split_path(path):
        child = r.child_id(node_id, part)
        if child is None or not isinstance(r.node(child), Folder):
            raise NotFound(f"under:{path}: no such folder", path)
        node_id = child
    return node_id


def _is_under(r: ReadTxn, folder_id: int, ancestor: int) -> bool:
    while True:
        if folder_id == ancestor:
            return True
        if folder_id == ROOT_ID:
            return False
        node = r.node(folder_id)
        if node is None:
            return False
        folder_id = node.parent


def compare(have: Any, op: str, want: Any) -> bool:
    if op == "=":
        return bool(have == want)
    if op == "!=":
        return bool(have != want)
    if op == "<":
        return bool(have < want)
    if op == "<=":
        return bool(have <= want)
    if op == ">":
        return bool(have > want)
    return bool(have >= want)


def meta_value(c: Condition, declared: dict[str, Any] | None) -> Any:
    """The value of a meta.KEY condition, typed by the key's declaration."""
    text = c.value
    if declared is None or c.op == "~":
        return text
    kind = declared["type"]
    if kind == "number":
        try:
            number = float(text)
        except ValueError:
            raise InvalidInput(f"'{c.field}{c.op}{text}': {c.meta_key} is a number key; give a number"
                               ) from None
        if not math.isfinite(number):
            raise InvalidInput(f"'{c.field}{c.op}{text}': give a finite number")
        return number
    if kind == "boolean":
        if text.lower() not in ("true", "false"):
            raise InvalidInput(f"'{c.field}{c.op}{text}': {c.meta_key} is a boolean key; give true or false")
        return text.lower() == "true"
    if kind == "datetime":
        if ix.datetime_ns(text) is None:
            raise InvalidInput(f"'{c.field}{c.op}{text}': {c.meta_key} is a datetime key; give an ISO 8601 "
                               "date or datetime")
        return text
    if kind == "enum" and c.op in ("=", "!=") and text not in declared.get("values", []):
        raise InvalidInput(f"'{c.field}{c.op}{text}': {c.meta_key} is one of {', '.join(declared['values'])}")
    return text


def meta_holds(metadata: dict[str, Any], key: str, c: Condition, declared: dict[str, Any] | None) -> bool:
    """Whether an item's metadata meets a meta.KEY condition. A missing key meets none."""
    if key not in metadata:
        return False
    have = metadata[key]
    if c.op == "~":
        values = have if isinstance(have, list) else [have]
        wanted = c.value.casefold()
        return any((text := ix.scalar_text(v)) is not None and wanted in text.casefold() for v in values)
    if declared is not None:
        want = meta_value(c, declared)
        if declared["type"] == "datetime":
            have_ns = ix.datetime_ns(have)
            return have_ns is not None and compare(have_ns, c.op, ix.datetime_ns(want))
        if declared["type"] == "number":
            return isinstance(have, int | float) and not isinstance(have, bool) and compare(have, c.op, want)
        if declared["type"] == "boolean":
            return isinstance(have, bool) and compare(have, c.op, want)
        return isinstance(have, str) and compare(have, c.op, want)
    values = have if isinstance(have, list) else [have]
    if c.op == "!=":
        return all(not _undeclared_holds(v, "=", c.value) for v in values)
    return any(_undeclared_holds(v, c.op, c.value) for v in values)


def _undeclared_holds(value: Any, op: str, want: str) -> bool:
    """An undeclared key compares as text; < and > compare numbers when both are."""
    if op in ORDERED and isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return compare(value, op, float(want))
        except ValueError:
            return False
    text = ix.scalar_text(value)
    return text is not None and compare(text, op, want)
