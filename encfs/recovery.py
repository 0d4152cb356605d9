"""What a killed process leaves in the store, and clearing it without losing content.

`recover` runs when a mount starts: it keeps every recorded live file as its item's
unsettled content (live_drafts.py), removes drafts nobody holds, finishes the
removals a killed process left in `trash/`, and settles blob files that the `blobs`
table does not count. Such a file is deleted only if no item's record names it and
it is older than every live draft; one an item names is counted again (the table
lost it); and when the table looks damaged (it is empty while files exist, many
files are uncounted at once, or an item's record cannot be read) the uncounted files
are moved to `STORE/quarantine/` with a log line instead. The common case, no
uncounted file, costs one lookup per blob file.

A store whose blobs are in a bucket has no blob files here: its objects that no
record names are left to the bucket's collector (blobs/s3.py), which `empty_trash`
starts in the background, with its grace period.

`clear_abandoned_drafts` runs also at the start of every CLI command and now and
then in a running mount, so a CLI upload killed with kill -9 leaves nothing behind
for long.
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from encfs.blobs.base import BlobStore
from encfs.blobs.local import LocalBlobStore
from encfs.draft import DRAFT_PREFIX, LIVE_PREFIX
from encfs.live_drafts import LiveDrafts
from encfs.meta.codec import decode_node
from encfs.meta.store import MetaStore, ReadTxn, WriteTxn
from encfs.model import Item

log = logging.getLogger("encfs")

UNLOCKED_GRACE_SECONDS = 5.0  # a spool file not yet named draft- may be a second from its lock
MANY_ORPHANS = 16  # more uncounted blob files than this (and over 1/10 of all) is suspicious


@dataclass
class Recovery:
    """What `recover` did."""

    drafts: int = 0
    live: int = 0  # unsettled items whose size was taken from their live file
    trash: int = 0
    deleted: list[str] = field(default_factory=list)
    recounted: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)


def recover(meta: MetaStore, blobs: BlobStore) -> Recovery:
    done = Recovery(drafts=clear_abandoned_drafts(blobs))
    uncounted: list[str] = []
    if isinstance(blobs, LocalBlobStore):
        live = LiveDrafts(meta, blobs)
        with meta.write() as w:
            done.live, recorded = live.adopt_after_crash(w)
        done.drafts += live.remove_strays(set(recorded))
        with meta.write() as w:
            files = list(blobs.list())
            uncounted = [sha for sha in files if w.blob(sha) is None]
            if uncounted:
                _settle_uncounted(w, blobs, uncounted, len(files), done)
    done.trash = blobs.empty_trash()
    if done.drafts or done.trash or uncounted:
        log.info("recovery: removed %d abandoned drafts and %d files left in trash; of %d uncounted "
                 "blob files, %d deleted, %d counted again, %d quarantined", done.drafts, done.trash,
                 len(uncounted), len(done.deleted), len(done.recounted), len(done.quarantined))
    return done


def clear_abandoned_drafts(blobs: BlobStore) -> int:
    """Remove spool files no live process holds (each writer `flock`s its draft);
    returns how many."""
    spool = blobs.spool_dir()
    removed = 0
    for entry in spool.iterdir() if spool.exists() else ():
        if entry.name.startswith(LIVE_PREFIX):
            continue  # an item's unsettled content (live_drafts.py), or left over: only recovery judges
        if not entry.name.startswith(DRAFT_PREFIX) and _age(entry) < UNLOCKED_GRACE_SECONDS:
            continue
        if _unowned(entry):
            entry.unlink(missing_ok=True)
            removed += 1
    return removed


def referenced_blobs(r: ReadTxn) -> tuple[Counter[str], dict[str, int], int]:
    """How many items name each blob, each blob's size by its items, and how many
    records could not be read."""
    counts: Counter[str] = Counter()
    sizes: dict[str, int] = {}
    unreadable = 0
    for _, raw in r.node_records():
        try:
            node = decode_node(raw)
        except Exception:
            unreadable += 1
            continue
        if isinstance(node, Item) and node.blob:
            counts[node.blob] += 1
            sizes[node.blob] = node.size
    return counts, sizes, unreadable


def _settle_uncounted(w: WriteTxn, blobs: LocalBlobStore, uncounted: list[str], files: int,
                      done: Recovery) -> None:
    table_empty = next(w.all_blobs(), None) is None
    many = len(uncounted) > MANY_ORPHANS and len(uncounted) * 10 > files
    counts, sizes, unreadable = referenced_blobs(w)
    suspicious = table_empty or many or unreadable > 0
    for sha in uncounted:
        if counts[sha]:
            w.set_blob(sha, counts[sha], sizes[sha])
            done.recounted.append(sha)
    if done.recounted:
        log.warning("recovery: %d blob files named by items were missing from the blobs table and are "
                    "counted again", len(done.recounted))
    loose = [sha for sha in uncounted if not counts[sha]]
    newest_allowed = _oldest_live_draft(blobs)
    for sha in loose:
        path = blobs.path(sha)
        if newest_allowed is not None and _mtime(path) >= newest_allowed:
            continue  # perhaps a live writer's: left for a later recovery
        if suspicious:
            why = ("no item names this blob, but the store's metadata looks damaged (an empty blobs table, "
                   "unreadable records or many uncounted files): set aside by recovery, not deleted")
            if blobs.quarantine(sha, why) is not None:
                done.quarantined.append(sha)
                log.warning("recovery: quarantined blob %s: %s", sha, why)
        else:
            blobs.delete(sha)
            done.deleted.append(sha)


def _oldest_live_draft(blobs: LocalBlobStore) -> float | None:
    spool = blobs.spool_dir()
    entries = spool.iterdir() if spool.exists() else ()
    times = [_mtime(str(entry)) for entry in entries if not _unowned(entry)]
    return min(times) if times else None


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0


def _age(path: Path) -> float:
    return time.time() - _mtime(str(path))


def _unowned(path: Path) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
