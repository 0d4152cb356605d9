"""The LMDB environment and its key layout. Nothing here knows a rule of the product.

Sub-databases (all keys big-endian so that prefix scans come out in order):

    info     b"format" -> b"1", b"store_id" -> uuid text, b"next_id" -> u64
    nodes    id:u64 -> JSON record of a folder or item (see codec.py)
    stats    id:u64 -> packed Attributes (what stat shows), written with every record
    dirents  parent:u64 + name:utf8 -> child:u64 + b"d" | b"f"
    blobs    sha256:32 bytes -> refcount:u64 + size:u64
    sums     sha256:32 bytes -> block size:u32 + xxh3-64:u64 per block (integrity.py;
             written with the blob's first reference, gone with its last)
    holders, held: which items name each blob, kept with every item record (holders.py)
    places   sha256:32 bytes -> where a bucket store keeps the blob: object key + "\n" + ETag
             (blobs/s3.py; dropped by its deleter once the blob is unused)
    grams    gram:utf8 + 0x00 + id:u64 -> lower-cased name (search postings)
    attrs    field + value -> id:u64, sorted duplicates (what an item is, by value: attrindex.py)
    schema   key:utf8 -> JSON {"type", "values"} (declared client-metadata keys)
    errors   user:utf8 + 0x00 + time_ns:u64 -> one refusal line
    members  member:u64 + group:u64 -> b"" (the groups, sequences and series an item is in)
    contents group:u64 + member:u64 -> b"" (the same pairs the other way round)
    sources  folder:u64 + group:u64 -> b"" (the groups whose frames a folder holds)
    unsettled series item:u64 -> time_ns:u64 of its last change (manifest behind its slices)
    live_drafts item:u64 -> spool file name:utf8, of an item whose content is that file, not
             a blob yet (live_drafts.py: written at fsync or close, gone when it settles)
    series   folder:u64 + SeriesInstanceUID:utf8 -> series item:u64, and
             folder:u64 + SeriesInstanceUID + 0x00 + SOPInstanceUID -> slice item:u64
    collections id:u64 -> JSON record of a Dataset or Project
    names    b"d" | b"p" + name:utf8 -> Dataset or Project id
    links    dataset:u64 + item:u64 -> b"l" (linked) | b"s" (by sync) + view name:utf8
    linked   item:u64 + dataset:u64 -> b"" (the item's "Linked to")
    views    dataset:u64 + view name:utf8 -> item:u64 (names are unique in a Dataset)
    synced   folder:u64 + dataset:u64 -> b"" (the Datasets synced with a folder)
    attached project:u64 + dataset:u64 -> b"", and attachments dataset:u64 + project:u64 -> b""
    users, uids, groups, memberships, member_of, grants, granted: access (see access.py)
    journal, journal_folders: the change journal (journal.py)
    integrations, refs, urls, tombstones, cloudsync: the cloud part (meta/cloud.py)

One user-visible change is one write transaction. Writers in one process take a
thread lock first; LMDB's own lock serialises writers across processes.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import struct
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lmdb

from encfs.errors import NoSpace
from encfs.meta import holders, journal
from encfs.meta.attrindex import entries_of, index_type
from encfs.meta.codec import (
    decode_attributes,
    decode_collection,
    decode_node,
    encode_attributes,
    encode_collection,
    encode_node,
)
from encfs.meta.room import (
    DEFAULT_MAX_METADATA,
    first_map_size,
    grown_map_size,
    human,
    reserve_for,
    round_up,
)
from encfs.meta.search import INDEX_VERSION, gram_key, grams_of
from encfs.model import Attributes, Dataset, Folder, Item, Node, Project, attributes_of

FORMAT = b"1"
U64 = struct.Struct(">Q")
BLOB = struct.Struct(">QQ")
DISK_FULL_BELOW = 64 << 10  # free bytes under which the disk counts as full
REMAP_WAIT_SECONDS = 5.0  # how long a map change waits for this process's reads to end
ERRORS_KEPT = 100
NAME_BATCH = 50_000  # items a transaction when a store's names are indexed again
log = logging.getLogger("encfs.meta")
_DBS = ("info", "nodes", "stats", "dirents", "blobs", "grams", "attrs", "schema", "errors", "members",
        "sources", "series", "unsettled", "contents", "collections", "names", "links", "linked", "views",
        "synced", "live_drafts", "attached", "attachments", "sums", "places", "users", "uids", "groups",
        "memberships", "member_of", "grants", "granted",  # access records (meta/access.py)
        "integrations", "refs", "urls", "tombstones", "cloudsync",  # the cloud part (meta/cloud.py)
        *journal.JOURNAL_DBS, *holders.HOLDERS_DBS)


DUPLICATE_DBS = ("attrs",)  # one key, many ids: 8 bytes an id, in id order (LMDB dupsort)


def u64(n: int) -> bytes:
    return U64.pack(n)


def _index_items(w: WriteTxn, ids: list[int]) -> int:
    """Write the name postings of the items among `ids` that are in the tree (a
    tombstone is not); how many."""
    indexed = 0
    for node_id in ids:
        try:
            node = w.node(node_id)
        except Exception:  # a damaged record: fsck reports it
            continue
        if isinstance(node, Item) and w.child_id(node.parent, node.name) == node.id:
            w.index_name(node.id, node.name)
            indexed += 1
    return indexed


def _text_key(name: str) -> bytes | None:
    """The key bytes of a name looked up; None for a name that is not UTF-8 text,
    which no stored name is (the service refuses to store one)."""
    try:
        return name.encode()
    except UnicodeEncodeError:
        return None


_ONE_BLOCK_SUMS = struct.Struct(">IQ")  # a blob's block size and the checksum of its only block


class ReadTxn:
    """Typed reads over one LMDB transaction."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]) -> None:
        self.txn = txn
        self.dbs = dbs

    def node(self, node_id: int) -> Folder | Item | None:
        raw = self.txn.get(u64(node_id), db=self.dbs["nodes"])
        return None if raw is None else decode_node(raw)

    def attributes(self, node_id: int) -> Attributes | None:
        raw = self.txn.get(u64(node_id), db=self.dbs["stats"])
        return None if raw is None else decode_attributes(raw)

    def child_id(self, parent: int, name: str) -> int | None:
        key = _text_key(name)
        raw = None if key is None else self.txn.get(u64(parent) + key, db=self.dbs["dirents"])
        return None if raw is None else U64.unpack_from(raw)[0]

    def children(self, parent: int) -> Iterator[tuple[str, int, bool]]:
        """(name, id, is_folder) of a folder's entries, in name order: one prefix scan."""
        prefix = u64(parent)
        with self.txn.cursor(db=self.dbs["dirents"]) as cur:
            if not cur.set_range(prefix):
                return
            for key, value in cur:
                if not key.startswith(prefix):
                    return
                yield key[8:].decode(), U64.unpack_from(value)[0], value[8:9] == b"d"

    def has_children(self, parent: int) -> bool:
        return next(self.children(parent), None) is not None

    def blob(self, sha: str) -> tuple[int, int] | None:
        raw = self.txn.get(bytes.fromhex(sha), db=self.dbs["blobs"])
        return None if raw is None else BLOB.unpack(raw)

    def sums(self, sha: str) -> bytes | None:
        """The packed block checksums of a blob (None for one stored before them)."""
        return self.txn.get(bytes.fromhex(sha), db=self.dbs["sums"])

    def place(self, sha: str) -> bytes | None:
        return self.txn.get(bytes.fromhex(sha), db=self.dbs["places"])

    def all_places(self) -> Iterator[tuple[str, bytes]]:
        with self.txn.cursor(db=self.dbs["places"]) as cur:
            for key, value in cur:
                yield key.hex(), value

    def holders(self, sha: str) -> list[int]:
        """The items naming a blob, from the index kept with their records."""
        return list(holders.holders(self.txn, self.dbs, sha))

    def all_blobs(self) -> Iterator[str]:
        with self.txn.cursor(db=self.dbs["blobs"]) as cur:
            for key in cur.iternext(keys=True, values=False):
                yield key.hex()

    def node_records(self) -> Iterator[tuple[int, bytes]]:
        """(id, raw record) of every folder and item, in id order (recovery, fsck)."""
        with self.txn.cursor(db=self.dbs["nodes"]) as cur:
            for key, value in cur:
                yield U64.unpack(key)[0], value

    def schema(self) -> dict[str, dict[str, Any]]:
        """The declared client-metadata keys: key -> {"type", "values"}."""
        with self.txn.cursor(db=self.dbs["schema"]) as cur:
            return {key.decode(): json.loads(value) for key, value in cur}

    def declared_types(self) -> dict[str, bytes]:
        """Declared key -> its index type letter (attrindex.py)."""
        return {key: index_type(record["type"]) for key, record in self.schema().items()}

    def store_id(self) -> str:
        return self.txn.get(b"store_id", db=self.dbs["info"]).decode()

    def _scan(self, db: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of every entry whose key starts with `prefix`, in key order."""
        with self.txn.cursor(db=self.dbs[db]) as cur:
            if not cur.set_range(prefix):
                return
            for key, value in cur:
                if not key.startswith(prefix):
                    return
                yield key, value

    def _ids_after(self, db: str, prefix: bytes) -> list[int]:
        """The u64 ids that end the keys starting with `prefix`."""
        return [U64.unpack(key[-8:])[0] for key, _ in self._scan(db, prefix)]

    def groups_of(self, item_id: int) -> list[int]:
        """The groups, sequences and series that hold the item."""
        return self._ids_after("members", u64(item_id))

    def members_of(self, group_id: int) -> list[int]:
        """The items a group, sequence or series holds (in id order)."""
        return self._ids_after("contents", u64(group_id))

    def groups_sourced_from(self, folder_id: int) -> list[int]:
        return self._ids_after("sources", u64(folder_id))

    def series_in(self, folder_id: int, series_uid: str) -> int | None:
        raw = self.txn.get(u64(folder_id) + series_uid.encode(), db=self.dbs["series"])
        return None if raw is None else U64.unpack(raw)[0]

    def unsettled(self, changed_before_ns: int | None = None) -> list[int]:
        with self.txn.cursor(db=self.dbs["unsettled"]) as cur:
            return [
                U64.unpack(key)[0] for key, value in cur
                if changed_before_ns is None or U64.unpack(value)[0] < changed_before_ns
            ]

    def is_unsettled(self, node_id: int) -> bool:
        return self.txn.get(u64(node_id), db=self.dbs["unsettled"]) is not None

    def live_draft(self, item_id: int) -> str | None:
        raw = self.txn.get(u64(item_id), db=self.dbs["live_drafts"])
        return None if raw is None else raw.decode()

    def live_drafts(self) -> list[tuple[int, str]]:
        with self.txn.cursor(db=self.dbs["live_drafts"]) as cur:
            return [(U64.unpack(key)[0], value.decode()) for key, value in cur]

    def slice_with(self, folder_id: int, series_uid: str, sop_uid: str) -> int | None:
        key = u64(folder_id) + series_uid.encode() + b"\x00" + sop_uid.encode()
        raw = self.txn.get(key, db=self.dbs["series"])
        return None if raw is None else U64.unpack(raw)[0]

    # ------------------------------------------------------------ Datasets and Projects

    def collection(self, collection_id: int) -> Dataset | Project | None:
        raw = self.txn.get(u64(collection_id), db=self.dbs["collections"])
        return None if raw is None else decode_collection(raw)

    def collection_id(self, kind: bytes, name: str) -> int | None:
        key = _text_key(name)
        raw = None if key is None else self.txn.get(kind + key, db=self.dbs["names"])
        return None if raw is None else U64.unpack(raw)[0]

    def collection_names(self, kind: bytes) -> Iterator[tuple[str, int]]:
        for key, value in self._scan("names", kind):
            yield key[1:].decode(), U64.unpack(value)[0]

    def link_in(self, dataset_id: int, item_id: int) -> tuple[bool, str] | None:
        """(by sync, view name) of the item's link in the Dataset, or None."""
        raw = self.txn.get(u64(dataset_id) + u64(item_id), db=self.dbs["links"])
        return None if raw is None else (raw[:1] == b"s", raw[1:].decode())

    def links_of(self, dataset_id: int) -> Iterator[tuple[int, bool, str]]:
        """(item id, by sync, view name) of every file in the Dataset."""
        for key, value in self._scan("links", u64(dataset_id)):
            yield U64.unpack(key[8:])[0], value[:1] == b"s", value[1:].decode()

    def view_entries(self, dataset_id: int) -> Iterator[tuple[str, int]]:
        """(view name, item id) of the Dataset's files, in name order."""
        for key, value in self._scan("views", u64(dataset_id)):
            yield key[8:].decode(), U64.unpack(value)[0]

    def view_item(self, dataset_id: int, view_name: str) -> int | None:
        key = _text_key(view_name)
        raw = None if key is None else self.txn.get(u64(dataset_id) + key, db=self.dbs["views"])
        return None if raw is None else U64.unpack(raw)[0]

    def datasets_of(self, item_id: int) -> list[int]:
        """The Datasets that hold the item."""
        return self._ids_after("linked", u64(item_id))

    def synced_with(self, folder_id: int) -> list[int]:
        """The Datasets synced with this folder (not its parents)."""
        return self._ids_after("synced", u64(folder_id))

    def any_synced(self) -> bool:
        with self.txn.cursor(db=self.dbs["synced"]) as cur:
            return cur.first()

    def attached_to(self, project_id: int) -> list[int]:
        return self._ids_after("attached", u64(project_id))

    def projects_of(self, dataset_id: int) -> list[int]:
        return self._ids_after("attachments", u64(dataset_id))

    def errors(self, user: str) -> list[str]:
        return [value.decode() for _, value in self._scan("errors", user.encode() + b"\x00")]

    # ------------------------------------------------------------ the change journal

    def journal_last(self) -> int:
        """The number of the newest record (0: none yet)."""
        return journal.last_seq(self.txn, self.dbs)

    def journal_first(self) -> int:
        return journal.first_seq(self.txn, self.dbs)

    def journal_after(self, seq: int, limit: int = 10_000) -> Iterator[tuple[int, dict[str, Any]]]:
        return journal.records_after(self.txn, self.dbs, seq, limit)

    def journal_record(self, seq: int) -> dict[str, Any] | None:
        return journal.record(self.txn, self.dbs, seq)

    def journal_seq_at(self, time_ns: int) -> int:
        return journal.seq_at(self.txn, self.dbs, time_ns)

    def journal_of_folder(self, folder_id: int, from_seq: int) -> Iterator[int]:
        return journal.folder_records(self.txn, self.dbs, folder_id, from_seq)


class WriteTxn(ReadTxn):
    """Typed writes; every method keeps the indexes in step with the records, and
    notes what it changed for the change journal (`touched`)."""

    def __init__(self, txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]) -> None:
        super().__init__(txn, dbs)
        self.touched = journal.Touched()
        self._zeroed: dict[str, int] = {}  # blobs whose count reached zero here -> size
        self._types: dict[str, bytes] | None = None  # the schema's, read once a change

    def journal(self, activity: str, paths: list[str], item_id: int | None = None,
                folder_ids: list[int] | None = None, user: str | None = None, **more: Any) -> None:
        """Say what this change is, where the user action under way would say it
        wrongly or there is none (a refusal): its activity line."""
        said = {"a": activity, "p": paths, **more}
        if item_id is not None:
            said["i"] = item_id
        if folder_ids is not None:
            said["f"] = folder_ids
        if user is not None:
            said["u"] = user
        self.touched.said = said

    def next_id(self) -> int:
        info = self.dbs["info"]
        current = U64.unpack(self.txn.get(b"next_id", db=info))[0]
        self.txn.put(b"next_id", u64(current + 1), db=info)
        return current

    def put_node(self, node: Node) -> None:
        key = u64(node.id)
        self.touched.nodes[node.id] = node.parent
        self.touched.names[node.id] = node.name
        if isinstance(node, Folder):
            self.touched.folders.add(node.id)
        old = None
        if isinstance(node, Item):
            old = self.txn.get(key, db=self.dbs["nodes"])
            self._note_only_block_sum(node)
        self.txn.put(key, encode_node(node), db=self.dbs["nodes"])
        self.txn.put(key, encode_attributes(attributes_of(node)), db=self.dbs["stats"])
        if isinstance(node, Item):
            holders.hold(self.txn, self.dbs, node.id, node.blob)
            self.index_attributes(node.id, self._entries(old), entries_of(node, self.types()))

    def _note_only_block_sum(self, item: Item) -> None:
        """Copy the checksum of one-block content into the item's record (from `sums`,
        written earlier in this transaction or before): the first read of a small file
        then needs no lookup in `sums`, whose keys are in no useful order."""
        if item.blob is None or item.block_sum_hint() is not None:
            return
        raw = self.txn.get(bytes.fromhex(item.blob), db=self.dbs["sums"])
        if raw is not None and len(raw) == _ONE_BLOCK_SUMS.size:  # integrity.Sums.pack of one block
            item.only_block_sum = (item.blob, _ONE_BLOCK_SUMS.unpack(raw)[1])

    def delete_node(self, node_id: int) -> None:
        key = u64(node_id)
        self.touched.nodes[node_id] = -1
        self.touched.names.pop(node_id, None)
        self.index_attributes(node_id, self._entries(self.txn.get(key, db=self.dbs["nodes"])), set())
        self.txn.delete(key, db=self.dbs["nodes"])
        self.txn.delete(key, db=self.dbs["stats"])
        holders.hold(self.txn, self.dbs, node_id, None)

    def types(self) -> dict[str, bytes]:
        if self._types is None:
            self._types = self.declared_types()
        return self._types

    def _entries(self, raw: bytes | None) -> set[bytes]:
        """The attribute keys a stored record has (none for a folder or a new item). A
        damaged record has none: writing its replacement must not fail on it (fsck drops
        keys it may have left)."""
        try:
            node = None if raw is None else decode_node(raw)
        except (ValueError, KeyError, TypeError):
            return set()
        return entries_of(node, self.types()) if isinstance(node, Item) else set()

    def index_attributes(self, item_id: int, old: set[bytes], new: set[bytes]) -> None:
        """Move the item's attribute keys from `old` to `new` (only those that differ)."""
        value, attrs = u64(item_id), self.dbs["attrs"]
        for key in old - new:
            self.txn.delete(key, value, db=attrs)
        for key in new - old:
            self.txn.put(key, value, db=attrs)

    def put_schema_key(self, key: str, record: dict[str, Any] | None) -> None:
        """Declare (or with None, forget) a client-metadata key; the caller re-indexes
        the items that hold it."""
        if record is None:
            self.txn.delete(key.encode(), db=self.dbs["schema"])
        else:
            self.txn.put(key.encode(), json.dumps(record, sort_keys=True).encode(), db=self.dbs["schema"])
        self._types = None

    def link(self, parent: int, name: str, child: int, is_folder: bool) -> None:
        value = u64(child) + (b"d" if is_folder else b"f")
        self.touched.entry(parent, name, child, True)
        self.txn.put(u64(parent) + name.encode(), value, db=self.dbs["dirents"])

    def unlink(self, parent: int, name: str) -> None:
        raw = self.txn.pop(u64(parent) + name.encode(), db=self.dbs["dirents"])
        if raw is not None:
            self.touched.entry(parent, name, U64.unpack_from(raw)[0], False)

    def add_blob_ref(self, sha: str, size: int) -> int:
        """Count one more reference to a blob; returns the new count (1 = new blob)."""
        key = bytes.fromhex(sha)
        raw = self.txn.get(key, db=self.dbs["blobs"])
        count = 1 if raw is None else BLOB.unpack(raw)[0] + 1
        self.txn.put(key, BLOB.pack(count, size), db=self.dbs["blobs"])
        return count

    def drop_blob_ref(self, sha: str) -> int:
        """Count one reference less; at zero the record goes and 0 is returned (the
        count is checked against the items naming the blob before the commit:
        `check_zeroed_blobs`)."""
        key = bytes.fromhex(sha)
        raw = self.txn.get(key, db=self.dbs["blobs"])
        if raw is None:
            return 0
        count, size = BLOB.unpack(raw)
        if count <= 1:
            self.txn.delete(key, db=self.dbs["blobs"])
            self._zeroed[sha] = size
            return 0
        self.txn.put(key, BLOB.pack(count - 1, size), db=self.dbs["blobs"])
        return count - 1

    def check_zeroed_blobs(self) -> None:
        """Before the commit: a blob whose count reached zero in this transaction but
        that items still name had a count too low. It keeps its record (counted
        again), its checksums and so its file; otherwise its checksums go too."""
        for sha, size in self._zeroed.items():
            if self.blob(sha) is not None:
                continue  # counted again later in the same transaction
            named_by = self.holders(sha)
            if not named_by:
                self.txn.delete(bytes.fromhex(sha), db=self.dbs["sums"])
                continue
            self.set_blob(sha, len(named_by), size)
            log.warning("blob %s: its count reached zero but %d item(s) still name it (%s): counted again, "
                        "content kept", sha, len(named_by), ", ".join(map(str, named_by[:5])))

    def put_place(self, sha: str, packed: bytes) -> None:
        self.txn.put(bytes.fromhex(sha), packed, db=self.dbs["places"])

    def drop_place(self, sha: str) -> None:
        self.txn.delete(bytes.fromhex(sha), db=self.dbs["places"])

    def put_sums(self, sha: str, packed: bytes) -> None:
        self.txn.put(bytes.fromhex(sha), packed, db=self.dbs["sums"])

    def set_blob(self, sha: str, count: int, size: int) -> None:
        """Set a blob's count outright (recovery and fsck recount); 0 drops the record."""
        key = bytes.fromhex(sha)
        if count <= 0:
            self.txn.delete(key, db=self.dbs["blobs"])
        else:
            self.txn.put(key, BLOB.pack(count, size), db=self.dbs["blobs"])

    def index_name(self, item_id: int, name: str) -> None:
        put, grams = self.txn.put, self.dbs["grams"]
        for gram in grams_of(name.casefold()):
            put(gram_key(gram, item_id), b"", db=grams)

    def reindex_name(self, item_id: int, old: str, new: str) -> None:
        """A renamed item's postings: the grams it lost go, the new ones are written."""
        delete, grams = self.txn.delete, self.dbs["grams"]
        for gram in grams_of(old.casefold()) - grams_of(new.casefold()):
            delete(gram_key(gram, item_id), db=grams)
        self.index_name(item_id, new)

    def unindex_name(self, item_id: int, name: str) -> None:
        delete, grams = self.txn.delete, self.dbs["grams"]
        for gram in grams_of(name.casefold()):
            delete(gram_key(gram, item_id), db=grams)

    def set_members(self, group_id: int, old: list[int], new: list[int]) -> None:
        members, contents = self.dbs["members"], self.dbs["contents"]
        for member in old:
            self.txn.delete(u64(member) + u64(group_id), db=members)
            self.txn.delete(u64(group_id) + u64(member), db=contents)
        for member in new:
            self.txn.put(u64(member) + u64(group_id), b"", db=members)
            self.txn.put(u64(group_id) + u64(member), b"", db=contents)

    def _mark(self, db: str, key: bytes, present: bool) -> None:
        """Put or delete a key whose presence is the whole record."""
        if present:
            self.txn.put(key, b"", db=self.dbs[db])
        else:
            self.txn.delete(key, db=self.dbs[db])

    def set_source(self, folder_id: int, group_id: int, present: bool) -> None:
        self._mark("sources", u64(folder_id) + u64(group_id), present)

    def set_series(self, folder_id: int, series_uid: str, series_id: int | None) -> None:
        key = u64(folder_id) + series_uid.encode()
        if series_id is None:
            self.txn.delete(key, db=self.dbs["series"])
        else:
            self.txn.put(key, u64(series_id), db=self.dbs["series"])

    def mark_unsettled(self, node_id: int, unsettled: bool) -> None:
        if unsettled:
            self.txn.put(u64(node_id), u64(time.time_ns()), db=self.dbs["unsettled"])
        else:
            self.txn.delete(u64(node_id), db=self.dbs["unsettled"])

    def set_live_draft(self, item_id: int, name: str | None) -> None:
        if name is None:
            self.txn.delete(u64(item_id), db=self.dbs["live_drafts"])
        else:
            self.txn.put(u64(item_id), name.encode(), db=self.dbs["live_drafts"])

    def set_slice(self, folder_id: int, series_uid: str, sop_uid: str, item_id: int | None) -> None:
        key = u64(folder_id) + series_uid.encode() + b"\x00" + sop_uid.encode()
        if item_id is None:
            self.txn.delete(key, db=self.dbs["series"])
        else:
            self.txn.put(key, u64(item_id), db=self.dbs["series"])

    # ------------------------------------------------------------ Datasets and Projects

    def put_collection(self, collection: Dataset | Project) -> None:
        self.touched.collections.append(["d" if isinstance(collection, Dataset) else "p", collection.name])
        self.txn.put(u64(collection.id), encode_collection(collection), db=self.dbs["collections"])

    def delete_collection(self, collection_id: int) -> None:
        self.txn.delete(u64(collection_id), db=self.dbs["collections"])

    def name_collection(self, kind: bytes, name: str, collection_id: int | None) -> None:
        self.touched.collections.append([kind.decode(), name])
        if collection_id is None:
            self.txn.delete(kind + name.encode(), db=self.dbs["names"])
        else:
            self.txn.put(kind + name.encode(), u64(collection_id), db=self.dbs["names"])

    def put_link(self, dataset_id: int, item_id: int, by_sync: bool, view_name: str) -> None:
        pair = u64(dataset_id) + u64(item_id)
        self.touched.views.append([dataset_id, view_name, item_id, 1])
        self.txn.put(pair, (b"s" if by_sync else b"l") + view_name.encode(), db=self.dbs["links"])
        self.txn.put(u64(item_id) + u64(dataset_id), b"", db=self.dbs["linked"])
        self.txn.put(u64(dataset_id) + view_name.encode(), u64(item_id), db=self.dbs["views"])

    def delete_link(self, dataset_id: int, item_id: int) -> None:
        found = self.link_in(dataset_id, item_id)
        if found is None:
            return
        self.touched.views.append([dataset_id, found[1], item_id, 0])
        self.txn.delete(u64(dataset_id) + u64(item_id), db=self.dbs["links"])
        self.txn.delete(u64(item_id) + u64(dataset_id), db=self.dbs["linked"])
        self.txn.delete(u64(dataset_id) + found[1].encode(), db=self.dbs["views"])

    def set_synced(self, folder_id: int, dataset_id: int, present: bool) -> None:
        self._mark("synced", u64(folder_id) + u64(dataset_id), present)

    def set_attached(self, project_id: int, dataset_id: int, present: bool) -> None:
        self.touched.attachments.append([project_id, dataset_id])
        self._mark("attached", u64(project_id) + u64(dataset_id), present)
        self._mark("attachments", u64(dataset_id) + u64(project_id), present)

    def add_error(self, user: str, time_ns: int, line: str) -> None:
        db = self.dbs["errors"]
        prefix = user.encode() + b"\x00"
        self.txn.put(prefix + u64(time_ns), line.encode(), db=db)
        keys = [key for key, _ in self._scan("errors", prefix)]
        for key in keys[: max(0, len(keys) - ERRORS_KEPT)]:
            self.txn.delete(key, db=db)


class MetaStore:
    """One LMDB environment. Commits are not fsynced one by one: `sync()` makes
    everything committed so far durable, and the service calls it at fsync.

    Room (see room.py): a write that adds records first makes sure that the reserve
    is left in the map (growing it) and on the disk (preallocating the data file),
    and is refused with NoSpace otherwise; `write(reserve=True)` (deletes, refusal
    records) may use the reserve. LMDB's own "map full" and "disk full" become
    NoSpace too. The map is replaced only while no read of this process is under
    way: reads register in `_readers` and wait while `_remapping` is set."""

    def __init__(self, path: Path, create: bool = False, max_metadata: int = DEFAULT_MAX_METADATA) -> None:
        self.path = path
        self.max_metadata = max_metadata
        data = path / "data.mdb"
        data_size = data.stat().st_size if data.exists() else 0
        self.env = lmdb.open(
            str(path), map_size=first_map_size(data_size, max_metadata), max_dbs=len(_DBS), sync=False,
            max_readers=512, create=create, readahead=False, mode=0o600,
        )
        self.dbs = {name: self.env.open_db(name.encode(), dupsort=name in DUPLICATE_DBS,
                                           dupfixed=name in DUPLICATE_DBS) for name in _DBS}
        self._write_lock = threading.RLock()  # re-entered by a read that adopts a grown map
        self._readers: list[int] = []  # thread ids of the reads under way (list ops are atomic)
        self._remapping = False
        self._remapped = threading.Event()
        self._remapped.set()
        self._page = self.env.stat()["psize"]
        self._map_size = self.env.info()["map_size"]
        self._data_fd = os.open(data, os.O_RDWR | os.O_CLOEXEC)
        self._data_size = os.fstat(self._data_fd).st_size
        self._index_holders()
        self._index_names()

    def _index_holders(self) -> None:
        """Build the blob holders index of a store made before it existed (once)."""
        with self.read() as r:
            if r.txn.get(b"format", db=self.dbs["info"]) is None or holders.is_built(r.txn, self.dbs):
                return
        with self.write(reserve=True) as w:
            if holders.is_built(w.txn, self.dbs):
                return
            holders.clear(w.txn, self.dbs)
            for node_id, raw in w.node_records():
                try:
                    node = decode_node(raw)
                except Exception:  # a damaged record: fsck reports it
                    continue
                if isinstance(node, Item) and node.blob:
                    holders.hold(w.txn, self.dbs, node_id, node.blob)
            holders.mark_built(w.txn, self.dbs)
        log.info("indexed which items name each blob (a store made by an older encfs)")

    def _index_names(self) -> None:
        """Index every item's name again if the store's name index is of another kind
        (a store made by an older encfs: trigrams), in batches of NAME_BATCH items.

        The first transaction empties the index, lists the items and writes a token of
        this run; each batch goes on only while the token is still this run's, so a
        process that opens the store meanwhile takes over (and one that finds a run
        that died starts again). Items made or renamed meanwhile are indexed by their
        own change; the version is written last."""
        info = self.dbs["info"]
        with self.read() as r:
            if r.txn.get(b"format", db=info) is None or r.txn.get(b"name_index", db=info) == INDEX_VERSION:
                return
        token = b"building " + uuid.uuid4().hex.encode()
        with self.write(reserve=True) as w:
            if w.txn.get(b"name_index", db=info) == INDEX_VERSION:
                return
            w.txn.drop(self.dbs["grams"], delete=False)
            w.txn.put(b"name_index", token, db=info)
            ids = [node_id for node_id, _ in w.node_records()]
        indexed = 0
        for start in range(0, len(ids), NAME_BATCH):
            with self.write() as w:
                if w.txn.get(b"name_index", db=info) != token:
                    return  # another process took over
                indexed += _index_items(w, ids[start : start + NAME_BATCH])
        with self.write() as w:
            if w.txn.get(b"name_index", db=info) == token:
                w.txn.put(b"name_index", INDEX_VERSION, db=info)
        log.info("indexed the names of %d items for search again (a store made by an older encfs)", indexed)

    def initialise(self, root: Folder) -> None:
        with self.write() as w:
            if w.txn.get(b"format", db=self.dbs["info"]) is not None:
                return
            w.txn.put(b"format", FORMAT, db=self.dbs["info"])
            w.txn.put(b"store_id", str(uuid.uuid4()).encode(), db=self.dbs["info"])
            w.txn.put(b"next_id", u64(root.id + 1), db=self.dbs["info"])
            holders.mark_built(w.txn, self.dbs)
            w.txn.put(b"name_index", INDEX_VERSION, db=self.dbs["info"])
            w.put_node(root)
        self.sync()

    def format(self) -> bytes | None:
        with self.read() as r:
            return r.txn.get(b"format", db=self.dbs["info"])

    @contextmanager
    def read(self) -> Iterator[ReadTxn]:
        me = self._start_reading()
        try:
            with self._begin_read(me) as txn:
                yield ReadTxn(txn, self.dbs)
        finally:
            self._readers.remove(me)

    def _begin_read(self, me: int) -> lmdb.Transaction:
        try:
            return self.env.begin(buffers=False)
        except lmdb.MapResizedError:  # another process grew the map past ours: adopt its size
            self._readers.remove(me)
        try:
            with self._write_lock:
                self._remap(0)
        finally:
            self._start_reading()
        return self.env.begin(buffers=False)

    @contextmanager
    def write(self, reserve: bool = False) -> Iterator[WriteTxn]:
        """One write transaction. `reserve`: the change frees space (a delete) or
        records a refusal, and may use the room kept for those."""
        with self._write_lock:
            if not reserve:
                self._make_room()
            try:
                with self._begin_write() as txn:
                    w = WriteTxn(txn, self.dbs)
                    yield w
                    w.check_zeroed_blobs()
                    written = journal.append(txn, self.dbs, w.touched)
                journal.committed(written)
            except lmdb.MapFullError:
                raise self._map_full() from None
            except lmdb.DiskError:
                raise self._disk_full() from None

    def _begin_write(self) -> lmdb.Transaction:
        try:
            return self.env.begin(write=True, buffers=False)
        except lmdb.MapResizedError:
            self._remap(0)
            return self.env.begin(write=True, buffers=False)

    def _start_reading(self) -> int:
        """Register a read; while the map is being replaced, wait for that first (a
        thread already reading goes on: the replacement waits for it instead)."""
        me = threading.get_ident()
        while True:
            self._readers.append(me)
            if not self._remapping or self._readers.count(me) > 1:
                return me
            self._readers.remove(me)
            self._remapped.wait()

    def _remap(self, size: int) -> bool:
        """Replace the memory map (0: adopt the size another process gave it). The
        caller holds the write lock; waits for this process's reads to end, and gives
        up (False) if they do not within REMAP_WAIT_SECONDS or if this thread reads."""
        me = threading.get_ident()
        if me in self._readers:
            return False
        self._remapped.clear()
        self._remapping = True
        try:
            deadline = time.monotonic() + REMAP_WAIT_SECONDS
            while self._readers:
                if time.monotonic() > deadline:
                    return False
                time.sleep(0.0005)
            self.env.set_mapsize(size)
            self._map_size = self.env.info()["map_size"]
            return True
        finally:
            self._remapping = False
            self._remapped.set()

    def _used(self) -> int:
        """Bytes up to the last page LMDB has used (freed pages inside are not subtracted)."""
        return (self.env.info()["last_pgno"] + 1) * self._page

    def _make_room(self) -> None:
        """Before a change that adds records: leave the reserve in the map and on disk.
        A full disk refuses it even when the data file has room: that room is the
        reserve's (what is left of the disk is the blobs')."""
        vfs = os.fstatvfs(self._data_fd)
        if vfs.f_bavail * vfs.f_frsize < DISK_FULL_BELOW:
            raise self._disk_full()
        used = self._used()
        reserve = reserve_for(used, self.max_metadata)
        if used + reserve <= min(self._map_size, self._data_size):
            return
        if used + 2 * reserve > self._map_size and self._map_size < self.max_metadata:
            self._remap(grown_map_size(self._map_size, used + 2 * reserve, self.max_metadata))
        disk_full = self._preallocate(min(used + 2 * reserve, self.max_metadata))
        room = min(self._map_size, self._data_size) - used
        if room >= reserve:
            return
        if room + self._free_bytes() - reserve >= reserve:
            return  # pages that deletes freed, which LMDB reuses (less a reserve's worth: it cannot
            # reuse those the last changes freed while a read may still see them)
        if disk_full:
            raise self._disk_full()
        if self._map_size < self.max_metadata:
            raise NoSpace("the store's metadata map could not be enlarged while reads were under way; "
                          "nothing was changed: try again")
        raise NoSpace(f"the store's metadata has reached its maximum size ({human(self.max_metadata)}); "
                      "nothing was changed (delete files or folders to make room)")

    @staticmethod
    def _disk_full() -> NoSpace:
        return NoSpace("no space left on the store's disk; nothing was changed (delete files or "
                       "folders to make room)")

    def _preallocate(self, size: int) -> bool:
        """Make the data file hold `size` bytes of allocated disk; True if the disk is full."""
        self._data_size = os.fstat(self._data_fd).st_size  # other processes' writes grow it too
        if size <= self._data_size:
            return False
        try:
            os.posix_fallocate(self._data_fd, 0, min(round_up(size), self.max_metadata))
        except OSError as exc:
            if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
                self._data_size = 1 << 62  # a file system without fallocate: no disk reserve
                return False
            self._data_size = os.fstat(self._data_fd).st_size
            return True
        self._data_size = os.fstat(self._data_fd).st_size
        return False

    def _free_bytes(self) -> int:
        """Pages inside the data file that no database uses (freed, for LMDB to reuse)."""
        def pages(stat: dict[str, int]) -> int:
            return stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]

        with self.read() as r:
            in_use = 2 + pages(self.env.stat()) + sum(pages(r.txn.stat(db)) for db in self.dbs.values())
        return max(0, self._used() - in_use * self._page)

    def _map_full(self) -> NoSpace:
        """LMDB ran out of map inside a change (a change bigger than the reserve)."""
        if self._map_size < self.max_metadata and self._remap(
            grown_map_size(self._map_size, self._used(), self.max_metadata)
        ):
            return NoSpace("the store's metadata map was full and has been enlarged; nothing was "
                           "changed: try again")
        return NoSpace(f"the store's metadata has reached its maximum size ({human(self.max_metadata)}); "
                       "nothing was changed (delete files or folders to make room)")

    def sync(self) -> None:
        self.env.sync(True)

    def close(self) -> None:
        self.env.close()
        if self._data_fd >= 0:
            os.close(self._data_fd)
            self._data_fd = -1
