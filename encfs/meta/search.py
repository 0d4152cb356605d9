"""Name search by grams, and the id-ordered posting cursors every search joins.

A name's grams are the GRAM characters that start at each of its positions (fewer
near the end: the name's last GRAM - 1 grams are its tails). Each posting is a key
`gram + 0x00 + id:u64`, so one gram's postings come out in item-id order.

- A query of GRAM characters or more: every name that holds it holds each of its
  whole grams, so their postings are intersected by a leapfrog join: each cursor
  seeks (`set_range`) to the largest id the others stand on, and the work follows the
  rarest gram, which at GRAM characters is rare (a trigram of digits is not).
- A shorter query is the start of a gram at every place it occurs in a name, so the
  keys that begin with it list exactly the items that hold it (in gram order, an item
  once for each place).

Dataset links have the same shape (`prefix + id:u64`), and an attribute value's ids
are sorted duplicates of its key (meta/attrindex.py): all join in the same leapfrog."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import lmdb

GRAM = 8  # characters: long enough that a gram of digits is rare, short enough to keep keys small
INDEX_VERSION = b"grams8"  # `info` key name_index: stores indexed otherwise are indexed again
U64 = struct.Struct(">Q")
MAX_JOINED_GRAMS = 8  # more grams add seeks per step without cutting many candidates


def grams_of(lowered_name: str) -> set[str]:
    return {lowered_name[i : i + GRAM] for i in range(len(lowered_name))}


def gram_key(gram: str, item_id: int) -> bytes:
    return gram.encode() + b"\x00" + U64.pack(item_id)


def joined_grams(lowered_query: str) -> list[str]:
    """The distinct whole grams of a query the join uses: all of them up to
    MAX_JOINED_GRAMS, else that many spread over the query (first and last kept);
    none for a query shorter than a gram (read by prefix instead)."""
    grams = list(dict.fromkeys(lowered_query[i : i + GRAM] for i in range(len(lowered_query) - GRAM + 1)))
    if len(grams) <= MAX_JOINED_GRAMS:
        return grams
    step = (len(grams) - 1) / (MAX_JOINED_GRAMS - 1)
    return list(dict.fromkeys(grams[round(i * step)] for i in range(MAX_JOINED_GRAMS)))


def ids_of_grams_starting(txn: lmdb.Transaction, db: lmdb._Database, prefix: bytes,
                          limit: int | None = None) -> Iterator[int]:
    """The ids of the postings whose gram starts with `prefix` (an item once for each
    place its name holds it), in gram order; at most `limit` of them."""
    with txn.cursor(db=db) as cur:
        if not cur.set_range(prefix):
            return
        for n, key in enumerate(cur.iternext(keys=True, values=False)):
            if not key.startswith(prefix) or (limit is not None and n >= limit):
                return
            yield U64.unpack_from(key, len(key) - 8)[0]


class IdCursor:
    """The ids ending the keys `prefix + id:u64` of one database, read by seeking."""

    def __init__(self, cursor: lmdb.Cursor, prefix: bytes) -> None:
        self.cursor = cursor
        self.prefix = prefix
        self.plen = len(prefix)

    def seek(self, item_id: int) -> int | None:
        """The first id >= item_id, or None past the last."""
        cur = self.cursor
        if not cur.set_range(self.prefix + U64.pack(item_id)):
            return None
        key = cur.key()
        if len(key) != self.plen + 8 or not key.startswith(self.prefix):
            return None
        return U64.unpack_from(key, self.plen)[0]

    def holds(self, item_id: int) -> bool:
        """Whether the id is among this cursor's (one point lookup)."""
        return self.cursor.set_key(self.prefix + U64.pack(item_id))

    def count(self, limit: int) -> int:
        """How many ids there are, counted up to `limit` (the planner's estimate)."""
        cur, n = self.cursor, 0
        if not cur.set_range(self.prefix):
            return 0
        for key in cur.iternext(keys=True, values=False):
            if n >= limit or not key.startswith(self.prefix):
                break
            n += 1
        return n


class DupCursor:
    """The ids stored as sorted duplicates of one key (the attribute index)."""

    def __init__(self, cursor: lmdb.Cursor, key: bytes) -> None:
        self.cursor = cursor
        self.key = key

    def seek(self, item_id: int) -> int | None:
        if not self.cursor.set_range_dup(self.key, U64.pack(item_id)):
            return None
        return U64.unpack(self.cursor.value())[0]

    def holds(self, item_id: int) -> bool:
        return self.cursor.set_key_dup(self.key, U64.pack(item_id))

    def count(self, limit: int) -> int:
        return self.cursor.count() if self.cursor.set_key(self.key) else 0


Seekable = IdCursor | DupCursor


def gram_postings(txn: lmdb.Transaction, db: lmdb._Database, gram: str) -> IdCursor:
    return IdCursor(txn.cursor(db=db), gram.encode() + b"\x00")


def leapfrog(cursors: list[Seekable], start: int = 0) -> Iterator[int]:
    """The ids every cursor holds, in increasing order (a leapfrog join)."""
    if not cursors:
        return
    at = [c.seek(start) for c in cursors]
    if any(a is None for a in at):
        return
    high = max(at)  # type: ignore[type-var]
    agreed, i, n = 0, 0, len(cursors)
    while True:
        found = cursors[i].seek(high)
        if found is None:
            return
        if found != high:
            high, agreed = found, 0
        agreed += 1
        if agreed == n:
            yield high
            high, agreed = high + 1, 0
        i = (i + 1) % n
