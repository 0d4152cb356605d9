"""Unsettled content: an item whose content is a spool file, not a blob yet.

A file changed in place (written out of order, or fsynced) would cost a whole new
blob at every fsync or close: hashing all its bytes, and copying them again at the
next write. Instead, in a store whose blobs are local files, its draft's spool file
becomes the item's content: the draft is renamed `live-…` and the `live_drafts`
table names it (item id -> file name). An fsync is then an fdatasync of that file
(the record is written, and the metadata synced, only when it names another file);
a close records the size, times and kind. Writers open the file again in place
(`Draft.reopen_live`), so editing a big unsettled file copies nothing.

Once no writer holds the file (every writer `flock`s its spool file) and it has not
changed for `quiet_seconds`, `settle` hashes it and makes it a blob like any commit's:
stored once, with its block checksums; the file is hard-linked into the blob store
and the record switched in one transaction, so a process killed at any point leaves
either the live file named by its record or the blob named by the item.

At start-up, recovery (`adopt_after_crash`) keeps every recorded file as its item's
content (its size on disk is the content's size: `Draft.sync_data` keeps them equal)
and removes `live-` files no record names and no process holds.

A bucket store keeps no content on this disk: its drafts are stored at every fsync
and close as before (`applies` is False).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from encfs.blobs.base import BlobReader, BlobStore
from encfs.blobs.local import LocalBlobReader, LocalBlobStore
from encfs.draft import LIVE_PREFIX, MEMORY_LIMIT, NEW_PREFIX, Draft
from encfs.integrity import Sums, fingerprint_fd
from encfs.meta.store import MetaStore, WriteTxn
from encfs.model import Item

log = logging.getLogger("encfs")

QUIET_SECONDS = 30.0  # a closed file settles once unchanged this long
QUIET_VARIABLE = "ENCFS_SETTLE_SECONDS"
STRAY_AGE_SECONDS = 5.0  # an unrecorded live file this old and unheld is left over


class LiveReader(LocalBlobReader):
    """A reader of a live file: unchecked (it has no block checksums until it
    settles), and it reads what writers write into it after it was opened."""

    shares_lock = False  # a live file's lock is its writer's

    def size(self) -> int:
        return os.fstat(self.fd).st_size


def quiet_seconds() -> float:
    """How long a closed file stays unchanged before it settles (the environment
    variable ENCFS_SETTLE_SECONDS overrides the default)."""
    return max(0.0, float(os.environ.get(QUIET_VARIABLE, QUIET_SECONDS)))


class LiveDrafts:
    """The `live_drafts` records and their spool files."""

    def __init__(self, meta: MetaStore, blobs: BlobStore) -> None:
        self.meta = meta
        self.blobs = blobs
        self.applies = isinstance(blobs, LocalBlobStore)

    def path(self, name: str) -> Path:
        return self.blobs.spool_dir() / name

    def should_record(self, draft: Draft, durable: bool) -> bool:
        """Whether a commit keeps the draft as the item's content instead of storing a
        blob, when its hash is not known already (written out of order, or reopened
        in place): at fsync always; at close when it is a spool file that started
        from the item's existing bytes (hashing it would cost more than what
        changed; a new file's bytes are all new, and hashed at close as before).
        Content hashed as it was written (in order), and a copy holding a stored
        blob, are stored as a blob as before: that costs no pass over the bytes."""
        if not self.applies or draft.hashed_whole() or draft.holds_blob():
            return False
        return durable or (draft.is_spooled() and draft.edits_existing)

    def name_of(self, item_id: int) -> str | None:
        with self.meta.read() as r:
            return r.live_draft(item_id)

    def record(self, w: WriteTxn, item: Item, name: str, dropped: list[str]) -> bool:
        """Name `name` as the item's content in the transaction; the item's blob loses
        its reference (the caller drops it), a file named before is `dropped` (removed
        after the commit). True when the record is new."""
        before = w.live_draft(item.id)
        if before == name:
            return False
        if before is not None:
            dropped.append(before)
        w.set_live_draft(item.id, name)
        return True

    def forget(self, w: WriteTxn, item_id: int, dropped: list[str], keep: str | None = None) -> None:
        """The item's content is no longer a live file (stored as a blob, or the item
        goes): its record goes, and its file after the commit (unless it is `keep`,
        which became the blob)."""
        before = w.live_draft(item_id)
        if before is None:
            return
        w.set_live_draft(item_id, None)
        if before != keep:
            dropped.append(before)

    def remove_files(self, names: list[str]) -> None:
        """Remove live files no record names any more, unless a writer still holds one
        (it writes on in place, and records it again at its next fsync or close)."""
        for name in names:
            with self._held(name) as fd:
                if fd is not None:
                    self.path(name).unlink(missing_ok=True)

    def reader(self, item_id: int) -> LiveReader | None:
        """A reader of the item's live file, or None when the item has settled."""
        name = self.name_of(item_id)
        return None if name is None else LiveReader(str(self.path(name)))

    def reopen(self, item_id: int) -> Draft | None:
        """The item's live file as a draft to write on in place, or None."""
        name = self.name_of(item_id) if self.applies else None
        if name is None:
            return None
        return Draft.reopen_live(self.blobs.spool_dir(), name, lambda: self.name_of(item_id) == name)

    def take_over(self, item: Item, current: BlobReader | None,
                  switch: Callable[[int, str, str], bool]) -> Draft | None:
        """The item's stored blob as a draft to write in place, without copying it:
        only for a big blob that no other item counts and nobody else reads (every
        blob reader holds a shared `flock`; ours, `current`, lets go of its own),
        once its bytes are checked against its block checksums.
        The blob file is hard-linked as a live file and locked, then `switch(item id,
        sha, name)` makes that file the item's content in one transaction. None when
        any of that does not hold: the caller copies as before."""
        sha = item.blob
        if not self.applies or sha is None or item.size <= MEMORY_LIMIT or current is None:
            return None
        current.verify(0, item.size)  # damaged bytes are refused (EIO), as a copy of them is
        with self.meta.read() as r:
            counted = r.blob(sha)
        if counted is None or counted[0] != 1:
            return None
        name = f"{LIVE_PREFIX}{uuid.uuid4().hex}"
        assert isinstance(self.blobs, LocalBlobStore)
        try:
            os.link(self.blobs.path(sha), self.path(name))
        except FileNotFoundError:
            return None
        fd = os.open(self.path(name), os.O_RDWR | os.O_CLOEXEC)
        taken = False
        try:
            own = current.fileno() if current is not None else None
            if own is not None:
                fcntl.flock(own, fcntl.LOCK_UN)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            taken = switch(item.id, sha, name)
        except BlockingIOError:
            pass
        finally:
            if not taken:
                os.close(fd)
                self.path(name).unlink(missing_ok=True)
        return Draft.from_live_file(self.blobs.spool_dir(), fd, name) if taken else None

    def sync(self, item_id: int) -> None:
        """fsync of an unsettled file with nothing pending: its live file to disk."""
        name = self.name_of(item_id)
        if name is None:
            return
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self.path(name), os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fdatasync(fd)
            finally:
                os.close(fd)

    # ----------------------------------------------------------------- settling

    def quiet(self, quiet_for: float) -> list[tuple[int, str]]:
        """Recorded files unchanged for `quiet_for` seconds (held ones are skipped later)."""
        with self.meta.read() as r:
            recorded = r.live_drafts()
        now = time.time()
        return [(item_id, name) for item_id, name in recorded if now - _mtime(self.path(name)) >= quiet_for]

    def settle(self, item_id: int, name: str,
               store_blob: Callable[[int, str, str, Sums, int], bool]) -> bool:
        """Make the live file a blob if no writer holds it: hashed here, outside any
        transaction, then `store_blob(item_id, name, sha, sums, size)` switches the
        record (False if it changed meanwhile). True when it settled."""
        with self._held(name) as fd:
            if fd is None:
                return False
            size = os.fstat(fd).st_size
            sha, sums = fingerprint_fd(fd, size)
            os.fsync(fd)
            if not store_blob(item_id, name, sha, sums, size):
                return False
            self.path(name).unlink(missing_ok=True)  # the blob is a link of it, or was stored before
            return True

    def hard_link(self, name: str) -> Path:
        """A second name of the live file for the blob store to adopt (a rename of
        it would leave the record naming nothing if the transaction failed)."""
        link = self.blobs.spool_dir() / f"{NEW_PREFIX}{uuid.uuid4().hex}"
        os.link(self.path(name), link)
        return link

    def remove_strays(self, recorded: set[str] | None = None) -> int:
        """Remove `live-` files no record names and nobody holds (a writer killed
        between naming its file and recording it, or a record replaced meanwhile)."""
        if recorded is None:
            with self.meta.read() as r:
                recorded = {name for _, name in r.live_drafts()}
        spool = self.blobs.spool_dir()
        removed = 0
        for entry in spool.iterdir() if spool.exists() else ():
            if not entry.name.startswith(LIVE_PREFIX) or entry.name in recorded:
                continue
            if time.time() - _mtime(entry) < STRAY_AGE_SECONDS:
                continue
            with self._held(entry.name) as fd:
                if fd is not None and entry.name not in self._recorded_now():
                    entry.unlink(missing_ok=True)
                    removed += 1
        return removed

    def _recorded_now(self) -> set[str]:
        with self.meta.read() as r:
            return {name for _, name in r.live_drafts()}

    @contextlib.contextmanager
    def _held(self, name: str) -> Iterator[int | None]:
        """The live file opened and locked (no writer holds it), or None."""
        try:
            fd = os.open(self.path(name), os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            yield None
            return
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield None
                return
            yield fd
        finally:
            os.close(fd)

    # ----------------------------------------------------------------- recovery

    def adopt_after_crash(self, w: WriteTxn) -> tuple[int, list[str]]:
        """At start-up: every recorded file stays its item's content, with its size
        on disk as the item's size; records of gone items are dropped. Returns how
        many items were corrected, and the recorded names."""
        corrected = 0
        names = []
        for item_id, name in w.live_drafts():
            item = w.node(item_id)
            if not isinstance(item, Item):
                w.set_live_draft(item_id, None)
                continue
            names.append(name)
            try:
                size = os.stat(self.path(name)).st_size
            except FileNotFoundError:
                log.error("recovery: the unsettled content of item %d (%s) is missing from the spool",
                          item_id, item.name)
                continue
            if size != item.size:
                item.size = size
                w.put_node(item)
                corrected += 1
        return corrected, names


def _mtime(path: Path) -> float:
    try:
        return os.stat(path).st_mtime
    except FileNotFoundError:
        return 0.0
