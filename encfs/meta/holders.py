"""Which items name each blob: the index that makes a blob's count checkable.

A blob's count (`blobs`) is kept by the service as items gain and lose content. If a
count is ever too low (a bug, a damaged table, an interrupted repair), the last drop
would delete content another item still names. So every item record written also
keeps this index in step (`WriteTxn.put_node`/`delete_node`), and a count that reaches
zero is checked against it before the transaction commits: if items still name the
blob, its count is set to their number, its checksums stay, and a warning is logged.
The blob file is then kept, because the service deletes only blob files that no
record counts after the commit.

Keys (sub-dbs):
    holders  sha256:32 bytes + item:u64 -> b""   (the items naming a blob)
    held     item:u64 -> sha256:32 bytes          (the blob an item names)

A store made before the index existed gets it built once, the first time it is
opened for writing (`build`), marked by b"holders" in `info`.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator

import lmdb

HOLDERS_DBS = ("holders", "held")
BUILT_MARK = b"holders"
U64 = struct.Struct(">Q")
log = logging.getLogger("encfs.meta")


def hold(txn: lmdb.Transaction, dbs: dict[str, lmdb._Database], item_id: int, sha: str | None) -> None:
    """Record that `item_id` now names blob `sha` (None: no blob, or the item is gone)."""
    key = U64.pack(item_id)
    old = txn.get(key, db=dbs["held"])
    new = None if not sha else bytes.fromhex(sha)
    if old == new:
        return
    if old is not None:
        txn.delete(old + key, db=dbs["holders"])
    if new is None:
        txn.delete(key, db=dbs["held"])
        return
    txn.put(new + key, b"", db=dbs["holders"])
    txn.put(key, new, db=dbs["held"])


def holders(txn: lmdb.Transaction, dbs: dict[str, lmdb._Database], sha: str) -> Iterator[int]:
    """The ids of the items naming blob `sha`, in id order: one seek, then a prefix scan."""
    prefix = bytes.fromhex(sha)
    with txn.cursor(db=dbs["holders"]) as cur:
        if not cur.set_range(prefix):
            return
        for key in cur.iternext(keys=True, values=False):
            if not key.startswith(prefix):
                return
            yield U64.unpack_from(key, 32)[0]


def is_held(txn: lmdb.Transaction, dbs: dict[str, lmdb._Database], sha: str) -> bool:
    return next(holders(txn, dbs, sha), None) is not None


def is_built(txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]) -> bool:
    return txn.get(BUILT_MARK, db=dbs["info"]) is not None


def mark_built(txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]) -> None:
    txn.put(BUILT_MARK, b"1", db=dbs["info"])


def clear(txn: lmdb.Transaction, dbs: dict[str, lmdb._Database]) -> None:
    """Empty both sub-dbs (before a rebuild)."""
    for name in HOLDERS_DBS:
        txn.drop(dbs[name], delete=False)
