"""Name search by trigrams, and the id-ordered posting cursors every search joins.

A name is padded with a start mark and two end marks so that every character begins
some gram. Each gram's postings are keys `gram + 0x00 + id:u64`, so they come out in
item-id order; a query of three or more characters intersects the postings of its
grams with a leapfrog join: each cursor seeks (`set_range`) to the largest id the
others stand on, so the work follows how often the lists agree, not how long they are.
A shorter query takes the union of the grams that start with it.

Dataset links have the same shape (`prefix + id:u64`), and an attribute value's ids
are sorted duplicates of its key (meta/attrindex.py): all join in the same leapfrog."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import lmdb

START, END = "\x02", "\x03"
U64 = struct.Struct(">Q")
MAX_JOINED_GRAMS = 8  # more grams add seeks per step without cutting many candidates


def grams_of(lowered_name: str) -> set[str]:
    padded = START + lowered_name + END + END
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def query_grams(lowered_query: str) -> list[str]:
    return [lowered_query[i : i + 3] for i in range(len(lowered_query) - 2)]


def joined_grams(lowered_query: str) -> list[str]:
    """The distinct grams of the query the join uses: all of them up to
    MAX_JOINED_GRAMS, else that many spread over the query (first and last kept)."""
    grams = list(dict.fromkeys(query_grams(lowered_query)))
    if len(grams) <= MAX_JOINED_GRAMS:
        return grams
    step = (len(grams) - 1) / (MAX_JOINED_GRAMS - 1)
    return list(dict.fromkeys(grams[round(i * step)] for i in range(MAX_JOINED_GRAMS)))


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

    def value(self) -> bytes:
        return self.cursor.value()

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

    def value(self) -> bytes:
        return b""

    def holds(self, item_id: int) -> bool:
        return self.cursor.set_key_dup(self.key, U64.pack(item_id))

    def count(self, limit: int) -> int:
        return self.cursor.count() if self.cursor.set_key(self.key) else 0


class UnionCursor:
    """The ids of several cursors merged (a short query's grams)."""

    def __init__(self, parts: list[IdCursor]) -> None:
        self.parts = parts
        self._at: IdCursor | None = None

    def seek(self, item_id: int) -> int | None:
        best, self._at = None, None
        for part in self.parts:
            found = part.seek(item_id)
            if found is not None and (best is None or found < best):
                best, self._at = found, part
        return best

    def value(self) -> bytes:
        assert self._at is not None
        return self._at.value()

    def count(self, limit: int) -> int:
        total = 0
        for part in self.parts:
            total += part.count(limit - total)
            if total >= limit:
                break
        return total


Seekable = IdCursor | DupCursor | UnionCursor


def leapfrog(cursors: list[Seekable], start: int = 0) -> Iterator[int]:
    """The ids every cursor holds, in increasing order (a leapfrog join). After each
    yield the cursors stand on the id, so a caller can read their values."""
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
