"""LMDB tables of the cloud part (encfs/cloud/): integrations, items that refer to
bucket objects, tombstones and cloud-synced folders. Nothing here knows a rule.

    integrations  name:utf8 -> JSON record (bucket, prefix, endpoint, profile, region)
    refs          item:u64 -> JSON record of the object an item refers to
                  (integration, url, etag, size, tombstone, datasets)
    urls          sha256(url):32 + item:u64 -> b"" (the items that refer to a URL)
    tombstones    folder:u64 + name:utf8 -> item:u64 (items whose object is gone)
    cloudsync     folder:u64 -> JSON record (integration, url of the synced prefix)
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

from encfs.meta.store import U64, ReadTxn, WriteTxn, u64

TABLES = ("integrations", "refs", "urls", "tombstones", "cloudsync")


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode()


def url_key(url: str) -> bytes:
    return hashlib.sha256(url.encode()).digest()


# ----------------------------------------------------------------- integrations

def integration(r: ReadTxn, name: str) -> dict[str, Any] | None:
    raw = r.txn.get(name.encode(), db=r.dbs["integrations"])
    return None if raw is None else json.loads(raw)


def integrations(r: ReadTxn) -> Iterator[tuple[str, dict[str, Any]]]:
    for key, value in r._scan("integrations", b""):
        yield key.decode(), json.loads(value)


def put_integration(w: WriteTxn, name: str, record: dict[str, Any]) -> None:
    w.txn.put(name.encode(), _json(record), db=w.dbs["integrations"])


def delete_integration(w: WriteTxn, name: str) -> bool:
    return w.txn.delete(name.encode(), db=w.dbs["integrations"])


# ----------------------------------------------------------------- references

def reference(r: ReadTxn, item_id: int) -> dict[str, Any] | None:
    raw = r.txn.get(u64(item_id), db=r.dbs["refs"])
    return None if raw is None else json.loads(raw)


def references(r: ReadTxn) -> Iterator[tuple[int, dict[str, Any]]]:
    for key, value in r._scan("refs", b""):
        yield U64.unpack(key)[0], json.loads(value)


def put_reference(w: WriteTxn, item_id: int, record: dict[str, Any], new: bool = False) -> None:
    """`new`: the item was just made (no earlier row to replace)."""
    old = None if new else reference(w, item_id)
    if old is not None and old["url"] != record["url"]:
        w.txn.delete(url_key(old["url"]) + u64(item_id), db=w.dbs["urls"])
    w.txn.put(u64(item_id), _json(record), db=w.dbs["refs"])
    w.txn.put(url_key(record["url"]) + u64(item_id), b"", db=w.dbs["urls"])


def drop_reference(w: WriteTxn, item_id: int) -> None:
    old = reference(w, item_id)
    if old is None:
        return
    w.txn.delete(u64(item_id), db=w.dbs["refs"])
    w.txn.delete(url_key(old["url"]) + u64(item_id), db=w.dbs["urls"])


def items_with_url(r: ReadTxn, url: str) -> list[int]:
    return r._ids_after("urls", url_key(url))


# ----------------------------------------------------------------- tombstones

def tombstones_in(r: ReadTxn, folder_id: int) -> Iterator[tuple[str, int]]:
    for key, value in r._scan("tombstones", u64(folder_id)):
        yield key[8:].decode(), U64.unpack(value)[0]


def tombstone_id(r: ReadTxn, folder_id: int, name: str) -> int | None:
    raw = r.txn.get(u64(folder_id) + name.encode(), db=r.dbs["tombstones"])
    return None if raw is None else U64.unpack(raw)[0]


def put_tombstone(w: WriteTxn, folder_id: int, name: str, item_id: int) -> None:
    w.txn.put(u64(folder_id) + name.encode(), u64(item_id), db=w.dbs["tombstones"])


def drop_tombstone(w: WriteTxn, folder_id: int, name: str) -> None:
    w.txn.delete(u64(folder_id) + name.encode(), db=w.dbs["tombstones"])


def all_tombstoned(r: ReadTxn) -> set[int]:
    return {U64.unpack(value)[0] for _, value in r._scan("tombstones", b"")}


# ----------------------------------------------------------------- cloud-synced folders

def cloud_sync(r: ReadTxn, folder_id: int) -> dict[str, Any] | None:
    raw = r.txn.get(u64(folder_id), db=r.dbs["cloudsync"])
    return None if raw is None else json.loads(raw)


def cloud_synced_folders(r: ReadTxn) -> Iterator[tuple[int, dict[str, Any]]]:
    for key, value in r._scan("cloudsync", b""):
        yield U64.unpack(key)[0], json.loads(value)


def put_cloud_sync(w: WriteTxn, folder_id: int, record: dict[str, Any]) -> None:
    w.txn.put(u64(folder_id), _json(record), db=w.dbs["cloudsync"])


def drop_cloud_sync(w: WriteTxn, folder_id: int) -> None:
    w.txn.delete(u64(folder_id), db=w.dbs["cloudsync"])
