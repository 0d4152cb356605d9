"""The Files service: every rule of the product, once.

The FUSE adapter and the CLI both call this class; neither decides anything itself.
Every method takes the acting user first. Every change is one LMDB write transaction,
and a refused change raises an `EncfsError` before anything is written; the refusal
is then recorded for the user (`/.encfs/errors`) and in the log.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from encfs.access.admin import AccessAdmin
from encfs.access.policy import ATTRIBUTES_NEED_VIEWER, AccessPolicy
from encfs.access.roles import Role
from encfs.actions import action
from encfs.activity import FOLDER_CONTROL_NAMES, refused_attempt
from encfs.blobs.base import BlobReader, MemoryBlobReader
from encfs.cloud.items import CloudItems
from encfs.datasets import DATASET, PROJECT, Datasets
from encfs.draft import MEMORY_LIMIT, Draft, Payload, TakenBlob
from encfs.errors import (
    AccessDenied,
    AlreadyExists,
    EncfsError,
    FolderNotEmpty,
    InvalidInput,
    IsAFolder,
    NameTooLong,
    NoAttribute,
    NoSpace,
    NotAFolder,
    NotFound,
    NotPermitted,
)
from encfs.finder import Finder
from encfs.grouping import Grouping
from encfs.integrity import READ_CHECKS, Sums, VerifiedBlobReader, Verifier, fingerprint_bytes
from encfs.live_drafts import LiveDrafts, LiveReader
from encfs.media import probe
from encfs.meta.codec import xattr_from_text, xattr_to_text
from encfs.meta.store import ReadTxn, WriteTxn
from encfs.metadata import (
    XATTR_MAX,
    check_client_metadata,
    check_description,
    check_user_attributes,
    metadata_text,
    parse_client_metadata,
)
from encfs.metadata_schema import MetadataSchema
from encfs.model import ROOT_ID, Actor, Attributes, Folder, Item, Kind, Media, Node, SearchHit, Special
from encfs.names import check_name, printable, split_path
from encfs.posix import new_ownership
from encfs.recovery import recover
from encfs.saving import hand_over, keeps_place
from encfs.search_query import Condition, Query, parse_segment, parse_terms
from encfs.special import SpecialEntries
from encfs.store import Store
from encfs.views import Views, is_view, is_view_entry, refuse_read_only

log = logging.getLogger("encfs")
T = TypeVar("T")

XATTR_CREATE, XATTR_REPLACE = 1, 2
ENCORD = "user.encord."
MEDIA_ATTRIBUTES = ("kind", "mime", "width", "height", "duration", "fps", "frames")
RESERVED_AT_ROOT = (".encfs", ".search", ".datasets", ".projects", ".access")
BATCH_ATTRIBUTE = "user.encord.batch"
ACCESS_FILE = ".access"  # FOLDER/.access: reachable in every folder, never listed
WRITABLE_ENCORD = {"user.encord.description", "user.encord.client_metadata"}



def root_folder() -> Folder:
    now = time.time_ns()
    return Folder(
        id=ROOT_ID, parent=ROOT_ID, name="", mode=stat.S_IFDIR | 0o755, uid=0, gid=0,
        owner="system", created_ns=now, mtime_ns=now, ctime_ns=now, atime_ns=now,
    )


@dataclass
class BlobChanges:
    """Blob files a transaction made unreferenced (deleted after it commits) or
    wrote (deleted if it fails), so that no change leaves an orphaned blob."""

    obsolete: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    dropped_drafts: list[str] = field(default_factory=list)  # live files no record names (live_drafts.py)


@dataclass
class FolderRemoval:
    """Where a folder's removal (remove_folder) stands between its transactions."""

    parts: list[str]
    path: str
    recursive: bool
    step: int = 2_000  # entries per transaction, halved when one does not fit
    was_empty: bool | None = None  # at the start: the rule for removing it depends on that
    generated_left: bool = True  # groups and series go first, so their frames are free
    removed: int = 0


@dataclass
class RemovalBudget:
    """How many more entries one step of a folder's removal may remove."""

    left: int


@dataclass(frozen=True)
class NewContent:
    """A draft's content as a commit stores it: its name, size and block checksums
    (None for a copy holding a stored blob), and whether the stored copy of the same
    content, if there is one, is whole."""

    sha: str
    size: int
    sums: Sums | None
    sound: bool


class FilesService(Grouping, Datasets, Views):
    def __init__(self, store: Store) -> None:
        self.store = store
        self.meta = store.meta
        self.blobs = store.blobs
        self.verifier = Verifier(self._sums_of, self._store_sums)
        self.specials = SpecialEntries()
        self.access = AccessPolicy()
        self.access_admin = AccessAdmin(self)
        self.cloud = CloudItems(self)  # items whose bytes stay in a bucket (cloud/)
        self.finder = Finder(self.meta, self.access, self._child_path)  # search (finder.py)
        self.metadata_schema = MetadataSchema(self.meta, self.access)  # declared metadata keys
        self.live = LiveDrafts(self.meta, self.blobs)  # unsettled content in spool files (live_drafts.py)

    # ----------------------------------------------------------------- lookups

    def lookup(self, actor: Actor, path: str) -> Folder | Item:
        parts = split_path(path)
        if is_view(parts) and not is_view_entry(parts):
            self.check_sees_view(actor, parts)
            return self.view_node(parts)
        return self._read_settled(actor, parts, lambda r, node_id: self._node_or_missing(r, node_id, parts))

    def _node_or_missing(self, r: ReadTxn, node_id: int, parts: list[str]) -> Folder | Item:
        node = r.node(node_id)
        if node is None:
            raise NotFound("no such file or folder", "/" + "/".join(parts))
        return node

    def _read_settled(self, actor: Actor, parts: list[str], read: Callable[[ReadTxn, int], T]) -> T:
        """`read` the node at `parts` in one read transaction, if the caller may see
        it; a series whose slices changed is first brought up to date (the mount's hot
        path: one path walk)."""
        with self.meta.read() as r:
            node_id = self._visible_id(r, actor, parts)
            if not r.is_unsettled(node_id):
                return read(r, node_id)
        self.settle_series(only=node_id)
        with self.meta.read() as r:
            return read(r, self._visible_id(r, actor, parts))

    def _visible_id(self, r: ReadTxn, actor: Actor, parts: list[str]) -> int:
        if is_view(parts):
            node_id = self._resolve_id(r, parts)
            self.check_sees_view_entry(r, actor, parts, node_id)
            return node_id
        if not parts or not self.access.organised(r):
            return self._resolve_id(r, parts)
        parent_id = self._resolve_id(r, parts[:-1])  # the same walk, the parent kept for the check
        node_id = r.child_id(parent_id, parts[-1])
        if node_id is None:
            raise NotFound("no such file or folder", "/" + "/".join(parts))
        self.access.check_sees_in(r, actor, parent_id, node_id, "/" + "/".join(parts))
        return node_id

    def open_item(self, actor: Actor, path: str, writable: bool) -> Folder | Item:
        """What `open` opens; the files a Project shows are read-only (EROFS)."""
        if writable:
            self._check_open_for_writing(actor, path)
        return self.lookup(actor, path)

    @action("open")
    def _check_open_for_writing(self, actor: Actor, path: str) -> None:
        parts = split_path(path)
        refuse_read_only(parts)
        with self.meta.read() as r:
            if self.access.organised(r) and not is_view(parts):
                node = self._resolve(r, parts)
                self.access.check_sees(r, actor, node.id, path)
                self.access.require_on(r, actor, node, Role.EDITOR, "writing a file", path)

    def stat(self, actor: Actor, path: str) -> Attributes:
        """What `stat` shows, without decoding the whole record (the mount's hot path).
        A name over 255 bytes is refused here for every call on the mount (the kernel
        looks each name up first), so the refusal is recorded here too."""
        try:
            parts = split_path(path)
        except NameTooLong as exc:
            self.record_refusal(actor, "lookup", exc)
            raise
        if is_view(parts) and not is_view_entry(parts):
            self.check_sees_view(actor, parts)
            return self.view_attributes(parts)
        return self._read_settled(actor, parts,
                                  lambda r, node_id: self._attributes_or_missing(r, node_id, path))

    def _attributes_or_missing(self, r: ReadTxn, node_id: int, path: str) -> Attributes:
        attributes = r.attributes(node_id)
        if attributes is None:
            raise NotFound("no such file or folder", path)
        return self.access.shown(r, attributes)

    def list_folder_stats(self, actor: Actor, path: str) -> list[tuple[str, Attributes]]:
        """A folder's entries with what `stat` shows of each: one prefix scan."""
        if is_view(split_path(path)):
            return self.view_listing(actor, split_path(path))
        self.settle_series()
        with self.meta.read() as r:
            folder_id = self._visible_id(r, actor, split_path(path))
            here = r.attributes(folder_id)
            if here is None or not stat.S_ISDIR(here.mode):
                raise NotAFolder("not a folder", path)
            entries = []
            shown, show = self.access.entry_filter(r, actor, folder_id), self.access.shown_by(r)
            for name, child_id, is_folder in r.children(folder_id):
                if shown is not None and not shown(child_id, is_folder):
                    continue
                attributes = r.attributes(child_id)
                if attributes is not None:
                    entries.append((name, show(attributes)))
            return entries

    def node(self, actor: Actor, node_id: int) -> Folder | Item | None:
        with self.meta.read() as r:
            return r.node(node_id)

    def list_folder(self, actor: Actor, path: str) -> list[Folder | Item]:
        with self.meta.read() as r:
            folder = r.node(self._visible_id(r, actor, split_path(path)))
            if not isinstance(folder, Folder):
                raise NotAFolder("not a folder", path)
            shown = self.access.entry_filter(r, actor, folder.id)
            return [r.node(child_id) for _, child_id, is_folder in r.children(folder.id)  # type: ignore[misc]
                    if shown is None or shown(child_id, is_folder)]

    def list_entries(self, actor: Actor, path: str) -> list[tuple[str, Folder | Item]]:
        """(name, node) of what a folder or a Dataset or Project view shows; a view
        shows files under their view names."""
        parts = split_path(path)
        if not is_view(parts):
            return [(node.name, node) for node in self.list_folder(actor, path)]
        base = path.rstrip("/")
        return [(name, self.lookup(actor, f"{base}/{name}")) for name, _ in self.view_listing(actor, parts)]

    def path_of(self, actor: Actor, node_id: int) -> str:
        with self.meta.read() as r:
            return self._path(r, node_id, {})

    def _resolve_id(self, r: ReadTxn, parts: list[str]) -> int:
        if is_view(parts):
            return self._view_entry_id(r, parts)
        node_id = ROOT_ID
        for depth, part in enumerate(parts):
            child = r.child_id(node_id, part)
            if child is None:
                raise NotFound("no such file or folder", "/" + "/".join(parts[: depth + 1]))
            node_id = child
        return node_id

    def _resolve(self, r: ReadTxn, parts: list[str]) -> Folder | Item:
        node_id = self._resolve_id(r, parts)
        node = r.node(node_id)
        if node is None:
            raise NotFound("no such file or folder", "/" + "/".join(parts))
        return node

    def _resolve_parent(self, r: ReadTxn, parts: list[str]) -> Folder:
        if not parts:
            raise InvalidInput("the root has no name and cannot be changed")
        parent = self._resolve(r, parts[:-1])
        if not isinstance(parent, Folder):
            raise NotAFolder("not a folder", "/" + "/".join(parts[:-1]))
        return parent

    def _path(self, r: ReadTxn, node_id: int, cache: dict[int, str]) -> str:
        """The node's path; `cache` remembers folder paths across calls (search)."""
        node = r.node(node_id)
        if node is None or node_id == ROOT_ID:
            return "/"
        return self._child_path(r, node.parent, node.name, cache)

    def _child_path(self, r: ReadTxn, parent_id: int, name: str, cache: dict[int, str]) -> str:
        return self._folder_path(r, parent_id, cache).rstrip("/") + "/" + name

    def _folder_path(self, r: ReadTxn, folder_id: int, cache: dict[int, str]) -> str:
        if folder_id == ROOT_ID:
            return "/"
        if folder_id not in cache:
            folder = r.node(folder_id)
            path = "/" if folder is None else self._child_path(r, folder.parent, folder.name, cache)
            cache[folder_id] = path
        return cache[folder_id]

    # ----------------------------------------------------------------- creation

    def _new_node_fields(self, w: WriteTxn, actor: Actor, parent: Folder, name: str, mode: int) -> dict:
        now = time.time_ns()
        uid, gid, mode = new_ownership(actor, parent, mode)
        return dict(
            id=w.next_id(), parent=parent.id, name=name, mode=mode, uid=uid, gid=gid,
            owner=actor.name, created_ns=now, mtime_ns=now, ctime_ns=now, atime_ns=now,
        )

    def _check_free(self, w: WriteTxn, parent: Folder, name: str, path: str) -> None:
        check_name(name)
        self._check_not_reserved(parent, name, path)
        if w.child_id(parent.id, name) is not None:
            raise AlreadyExists("a file or folder with this name exists", path)

    def _check_not_reserved(self, parent: Folder, name: str, path: str) -> None:
        if parent.id == ROOT_ID and name in RESERVED_AT_ROOT:
            raise AlreadyExists(f"{name} is reserved at the root for the mount's control entries", path)
        if name == ACCESS_FILE:
            raise AlreadyExists(f"{ACCESS_FILE} is every folder's access list; write it to change who may "
                                "do what here", path)
        if name in FOLDER_CONTROL_NAMES:
            raise AlreadyExists(f"{name} is reserved in every folder for the mount's control files", path)

    def _touch(self, folder: Folder, now: int) -> None:
        folder.mtime_ns = folder.ctime_ns = now

    @action("mkdir")
    def create_folder(
        self, actor: Actor, path: str, mode: int = 0o755, description: str = "",
        client_metadata: dict[str, Any] | None = None,
    ) -> Folder:
        parts = split_path(path)
        if is_view(parts):
            self.view_mkdir(actor, parts, description)
            return self.view_node(parts)
        with self.meta.write() as w:
            return self._make_folder(w, actor, path, mode, description, client_metadata)

    def _make_folder(self, w: WriteTxn, actor: Actor, path: str, mode: int, description: str,
                     client_metadata: dict[str, Any] | None) -> Folder:
        parts = split_path(path)
        check_description(description, path)
        if client_metadata is not None:
            check_client_metadata(client_metadata, path)
            self.metadata_schema.check(client_metadata, path, w)
        parent = self._resolve_parent(w, parts)
        self.access.check_sees(w, actor, parent.id, "/" + "/".join(parts[:-1]))
        self.access.require_in(w, actor, parent.id, Role.EDITOR, "creating a folder", path)
        self._check_free(w, parent, parts[-1], path)
        folder = Folder(
            **self._new_node_fields(w, actor, parent, parts[-1], stat.S_IFDIR | (mode & 0o7777)),
            description=description, client_metadata=client_metadata or {},
        )
        w.put_node(folder)
        w.link(parent.id, folder.name, folder.id, True)
        parent.subfolders += 1
        self._touch(parent, folder.created_ns)
        w.put_node(parent)
        self.access.folder_created(w, actor, folder)
        return folder

    @action("create")
    def create_item(self, actor: Actor, path: str, mode: int = 0o644, exclusive: bool = True) -> Item:
        """A new empty file. Not `exclusive` (open with O_CREAT but not O_EXCL), a file
        already there is returned as it is: the kernel asks to create a name it
        believes missing for up to a second after another mount or the CLI made it."""
        parts = split_path(path)
        with self.meta.write() as w:
            parent = self._resolve_parent(w, parts)
            self.access.check_sees(w, actor, parent.id, "/" + "/".join(parts[:-1]))
            if parent.id == ROOT_ID:
                raise NotPermitted("files cannot be stored at the root; put them in a folder", path)
            self.access.require_in(w, actor, parent.id, Role.EDITOR, "creating a file", path)
            existing_id = None if exclusive else w.child_id(parent.id, parts[-1])
            existing = None if existing_id is None else w.node(existing_id)
            if isinstance(existing, Item):
                return existing
            if isinstance(existing, Folder):
                raise IsAFolder("a folder with this name exists", path)
            self._check_free(w, parent, parts[-1], path)
            item = Item(**self._new_node_fields(w, actor, parent, parts[-1], stat.S_IFREG | (mode & 0o7777)))
            self._insert_item(w, parent, item)
        return item

    def _insert_item(self, w: WriteTxn, parent: Folder, item: Item) -> None:
        w.put_node(item)
        w.link(parent.id, item.name, item.id, False)
        w.index_name(item.id, item.name)
        self._touch(parent, item.ctime_ns)
        w.put_node(parent)
        self._resync_item(w, item)

    @action("link", where=lambda a: [a["path"], None if a["symbolic"] else a["target"]])
    def create_link(self, actor: Actor, path: str, target: str, symbolic: bool) -> None:
        """`ln TARGET PATH` adds a file to a Dataset; `ln -s TARGET PATH` syncs a new
        Dataset with a folder or attaches a Dataset to a Project. In a folder,
        `ln -s` makes a symbolic link; a hard link is refused (a file is in one folder)."""
        parts = split_path(path)
        if is_view(parts) and symbolic:
            self.view_symlink(actor, parts, target)
        elif is_view(parts):
            self.view_link(actor, parts, target)
        elif symbolic:
            self.specials.check_target(target, path)
            self._make_special(actor, path, stat.S_IFLNK | 0o777, target=target)
        else:
            raise NotPermitted("a file is in one folder, so hard links between folders are refused "
                               "(ln adds a file to a Dataset: ln FOLDER/FILE /.datasets/NAME/)", path)

    @action("mknod")
    def create_special(self, actor: Actor, path: str, mode: int, rdev: int = 0) -> Special:
        """A FIFO, socket or device node in a folder (`mkfifo`, `bind`, `mknod`)."""
        self.specials.check_mode(mode, path)
        return self._make_special(actor, path, mode, rdev=rdev)

    def _make_special(self, actor: Actor, path: str, mode: int, target: str = "", rdev: int = 0) -> Special:
        parts = split_path(path)
        if is_view(parts):
            raise NotPermitted(self._what_view_holds(parts[:-1]), path)
        with self.meta.write() as w:
            parent = self._resolve_parent(w, parts)
            self.access.check_sees(w, actor, parent.id, "/" + "/".join(parts[:-1]))
            if parent.id == ROOT_ID:
                raise NotPermitted("the root holds folders only; put links and special files in a folder",
                                   path)
            self.access.require_in(w, actor, parent.id, Role.EDITOR, "creating a link or special file", path)
            self._check_free(w, parent, parts[-1], path)
            fields = self._new_node_fields(w, actor, parent, parts[-1], mode)
            node = self.specials.new(fields, mode, target, rdev)
            w.put_node(node)
            w.link(parent.id, node.name, node.id, False)
            self._touch(parent, node.ctime_ns)
            w.put_node(parent)
        return node

    def read_link(self, actor: Actor, path: str) -> str:
        """A symbolic link's text as it was given; in /.datasets and /.projects, the
        folder a synced Dataset shows or the Dataset a Project holds."""
        parts = split_path(path)
        if is_view(parts):
            return super().read_link(actor, path)
        node = self.lookup(actor, path)
        if not isinstance(node, Special):
            raise InvalidInput("not a symbolic link", path)
        return self.specials.target_of(node, path)

    def _drop_special(self, w: WriteTxn, node: Special) -> None:
        w.unlink(node.parent, node.name)
        w.delete_node(node.id)

    # ----------------------------------------------------------------- removal

    @action("unlink")
    def remove_item(self, actor: Actor, path: str) -> None:
        parts = split_path(path)
        if parts and parts[-1] == ACCESS_FILE:
            raise NotPermitted(f"{ACCESS_FILE} is the folder's access list and cannot be removed; write it "
                               "to change who may do what here", path)
        if is_view(parts):
            self.view_unlink(actor, parts)
            return
        with self._changing(freeing=True) as (w, changes):
            node = self._resolve(w, parts)
            self.access.check_sees(w, actor, node.id, path)
            if isinstance(node, Folder):
                raise IsAFolder("is a folder; remove folders with rmdir", path)
            self.access.require_on(w, actor, node, Role.EDITOR, "deleting a file", path)
            self.access.require_sticky(w, actor, node.parent, node, path)
            if isinstance(node, Special):
                self._drop_special(w, node)
            else:
                self._drop_item(w, node, changes)
            parent = self._resolve_parent(w, parts)
            self._touch(parent, time.time_ns())
            w.put_node(parent)

    def _drop_item(self, w: WriteTxn, item: Item, changes: BlobChanges) -> None:
        self._before_drop(w, item, changes)
        self._delete_item_record(w, item, changes)

    def _delete_item_record(self, w: WriteTxn, item: Item, changes: BlobChanges) -> None:
        """The item leaves its folder, the search index and every Dataset; its blob
        loses a reference (and goes after the commit if that was the last)."""
        self._unlink_everywhere(w, item)
        w.unlink(item.parent, item.name)
        w.unindex_name(item.id, item.name)
        w.delete_node(item.id)
        self.cloud.forget(w, item.id)
        self.live.forget(w, item.id, changes.dropped_drafts)
        if item.blob and w.drop_blob_ref(item.blob) == 0:
            changes.obsolete.append(item.blob)

    @action("rmdir")
    def remove_folder(self, actor: Actor, path: str, recursive: bool = False) -> int:
        """Remove a folder (with everything in it if recursive); returns items removed.

        A big tree goes in steps of up to 2,000 entries, one transaction each; a
        step that does not fit in the room kept for deletes (the metadata at its
        maximum) is tried again with half as many, down to one entry, so a removal
        always works where single deletes do. Like `rm -r` on a disk, a removal
        stopped half way leaves the rest."""
        parts = split_path(path)
        if is_view(parts):
            self.view_rmdir(actor, parts)
            return 0
        removal = FolderRemoval(parts, path, recursive)
        while not self._remove_step(actor, removal):
            pass
        return removal.removed

    def _remove_step(self, actor: Actor, removal: FolderRemoval) -> bool:
        """One transaction of a folder's removal; True once the folder is gone. A step
        the reserve cannot hold is given half the entries (NoSpace at one entry)."""
        try:
            with self._changing(freeing=True) as (w, changes):
                folder = self._resolve(w, removal.parts)
                self.access.check_sees(w, actor, folder.id, removal.path)
                if not isinstance(folder, Folder):
                    raise NotAFolder("not a folder; remove files with unlink", removal.path)
                was_empty = not w.has_children(folder.id) if removal.was_empty is None else removal.was_empty
                self.access.require_removable(w, actor, folder, was_empty, removal.path)
                self.access.require_sticky(w, actor, folder.parent, folder, removal.path)
                if not removal.recursive and w.has_children(folder.id):
                    raise FolderNotEmpty("the folder is not empty", removal.path)
                budget, generated_left, removed = RemovalBudget(removal.step), removal.generated_left, 0
                if generated_left:
                    removed += self._drop_within(w, folder, changes, budget, generated=True)
                    generated_left = budget.left <= 0
                if not generated_left:
                    removed += self._drop_within(w, folder, changes, budget, generated=False)
                gone = not w.has_children(folder.id)
                if gone:
                    self._drop_empty_folder(w, folder, changes)
                    parent = self._resolve_parent(w, removal.parts)
                    parent.subfolders -= 1
                    self._touch(parent, time.time_ns())
                    w.put_node(parent)
        except NoSpace:
            if removal.step == 1:
                raise
            removal.step //= 2
            return False
        removal.was_empty, removal.generated_left = was_empty, generated_left
        removal.removed += removed
        return gone

    def _drop_within(self, w: WriteTxn, folder: Folder, changes: BlobChanges, budget: RemovalBudget,
                     generated: bool) -> int:
        """Remove what a folder holds, up to the budget of entries; returns items
        removed. The `generated` pass removes only groups and series (reading every
        entry), so that their frames are free by the time the plain pass removes
        them, entries in name order, reading no more than it removes; it also removes
        the subfolders it empties."""
        removed = 0
        entries = w.children(folder.id)
        for _, child_id, _ in list(entries) if generated else list(itertools.islice(entries, budget.left)):
            child = w.node(child_id)
            if budget.left <= 0:
                break
            if isinstance(child, Folder):
                removed += self._drop_within(w, child, changes, budget, generated)
                if not generated and not w.has_children(child.id):
                    self._drop_empty_folder(w, child, changes)
                    folder.subfolders -= 1
                    w.put_node(folder)
                    budget.left -= 1
            elif generated and not (isinstance(child, Item) and child.is_generated):
                continue
            elif isinstance(child, Special):
                self._drop_special(w, child)
                budget.left -= 1
            elif isinstance(child, Item):
                self._drop_item(w, child, changes)
                removed += 1
                budget.left -= 1
        return removed

    def _drop_empty_folder(self, w: WriteTxn, folder: Folder, changes: BlobChanges) -> None:
        self._unsync_deleted_folder(w, folder)
        self.access.removed(w, folder.id)
        self.cloud.drop_folder(w, folder, changes)
        w.unlink(folder.parent, folder.name)
        w.delete_node(folder.id)

    @contextmanager
    def _changing(self, freeing: bool = False) -> Iterator[tuple[WriteTxn, BlobChanges]]:
        """One write transaction, with the blob files it frees or writes handled;
        `freeing` (a delete) may use the metadata's reserve, so it works on a full disk."""
        changes = BlobChanges()
        try:
            with self.meta.write(reserve=freeing) as w:
                yield w, changes
        except BaseException:
            self._delete_uncounted_blobs(changes.written)
            raise
        self._delete_uncounted_blobs(changes.obsolete)
        self.live.remove_files(changes.dropped_drafts)

    def _delete_uncounted_blobs(self, shas: list[str]) -> None:
        """Delete blob files that no record counts. The check and the unlink share a
        write transaction: between our commit and the unlink, another writer (a
        thread, or another process) may have counted the same content again."""
        if not shas:
            return
        with self.meta.write(reserve=True) as w:
            for sha in shas:
                if w.blob(sha) is None:
                    self.blobs.delete(sha)

    # ----------------------------------------------------------------- moves

    @action("rename", where=lambda a: [a["source"], a["target"]])
    def move(self, actor: Actor, source: str, target: str, replace: bool = True) -> Folder | Item:
        """Rename or move a file or folder; an existing target file (or empty folder)
        is replaced in the same transaction unless `replace` is False."""
        src_parts, dst_parts = split_path(source), split_path(target)
        if is_view(src_parts) or is_view(dst_parts):
            self.view_rename(actor, src_parts, dst_parts)
            return self.lookup(actor, target)
        with self._changing() as (w, changes):
            src_parent = self._resolve_parent(w, src_parts)
            node_id = w.child_id(src_parent.id, src_parts[-1])
            node = None if node_id is None else w.node(node_id)
            if node is None:
                raise NotFound("no such file or folder", "/" + "/".join(src_parts))
            self.access.check_sees(w, actor, node.id, source)
            same_folder = dst_parts[:-1] == src_parts[:-1]  # a rename in place: one folder record
            dst_parent = src_parent if same_folder else self._resolve_parent(w, dst_parts)
            name = dst_parts[-1]
            check_name(name)
            self._check_not_reserved(dst_parent, name, target)
            if not isinstance(node, Folder) and dst_parent.id == ROOT_ID:
                raise NotPermitted("files cannot be stored at the root; put them in a folder", target)
            self.access.check_sees(w, actor, dst_parent.id, "/" + "/".join(dst_parts[:-1]))
            self.access.require_move(w, actor, node, src_parent.id, dst_parent.id, target)
            if isinstance(node, Folder) and self._is_within(w, dst_parent, node.id):
                raise InvalidInput("a folder cannot be moved into itself or its own subfolder", target)
            existing_id = w.child_id(dst_parent.id, name)
            if existing_id == node.id:
                return node
            self.access.require_sticky(w, actor, src_parent.id, node, source)
            if existing_id is not None:
                self.access.require_sticky(w, actor, dst_parent.id, w.node(existing_id), target)
            if not isinstance(node, Special):
                self._before_move(w, node, dst_parent, name, target)
            if existing_id is not None:
                self._replace_target(w, node, w.node(existing_id), replace, target, changes)
                dst_parent = w.node(dst_parent.id)  # type: ignore[assignment]
                src_parent = w.node(src_parent.id)  # type: ignore[assignment]
                if src_parent.id == dst_parent.id:
                    src_parent = dst_parent
            old_parent = node.parent
            self._relink(w, node, src_parent, dst_parent, name)
            self._after_move(w, node, old_parent, changes)
            if old_parent != node.parent and isinstance(node, Item):
                self._resync_item(w, node, why="moved")
            elif old_parent != node.parent and isinstance(node, Folder):
                self._resync_folder(w, node, old_parent, why="moved")
                self.access.folder_moved(w)
        return node

    def _is_within(self, r: ReadTxn, folder: Folder, ancestor_id: int) -> bool:
        current: Node | None = folder
        while current is not None:
            if current.id == ancestor_id:
                return True
            if current.id == ROOT_ID:
                return False
            current = r.node(current.parent)
        return False

    def _replace_target(
        self, w: WriteTxn, node: Node, existing: Node | None, replace: bool, target: str,
        changes: BlobChanges,
    ) -> None:
        if existing is None:
            return
        if not replace:
            raise AlreadyExists("the target exists", target)
        if isinstance(node, Folder) and not isinstance(existing, Folder):
            raise NotAFolder("cannot replace a file with a folder", target)
        if not isinstance(node, Folder) and isinstance(existing, Folder):
            raise IsAFolder("cannot replace a folder with a file", target)
        if isinstance(existing, Special):
            self._drop_special(w, existing)
            return
        if keeps_place(node, existing):
            self._keep_place(w, node, existing, target)  # type: ignore[arg-type]
        if isinstance(existing, Folder):
            if w.has_children(existing.id):
                raise FolderNotEmpty("the target folder is not empty", target)
            self._drop_empty_folder(w, existing, changes)
            parent = w.node(existing.parent)
            assert isinstance(parent, Folder)
            parent.subfolders -= 1
            w.put_node(parent)
        elif isinstance(existing, Item):
            self._drop_item(w, existing, changes)

    def _keep_place(self, w: WriteTxn, source: Item, replaced: Item, target: str) -> None:
        """An atomic save (saving.py): the file taking the name takes its Datasets."""
        handed = hand_over(w, source, replaced)
        if handed:
            names = [getattr(w.collection(d), "name", str(d)) for d in handed]
            log.info("rename over %s: the new file keeps its place in Dataset(s) %s", target,
                     ", ".join(names))

    def _relink(self, w: WriteTxn, node: Folder | Item, src: Folder, dst: Folder, name: str) -> None:
        now = time.time_ns()
        w.unlink(src.id, node.name)
        if isinstance(node, Item):
            w.reindex_name(node.id, node.name, name)
        w.link(dst.id, name, node.id, isinstance(node, Folder))
        node.parent, node.name, node.ctime_ns = dst.id, name, now
        w.put_node(node)
        if isinstance(node, Folder) and src.id != dst.id:
            src.subfolders -= 1
            dst.subfolders += 1
        self._touch(src, now)
        w.put_node(src)
        if dst.id != src.id:
            self._touch(dst, now)
            w.put_node(dst)

    # ----------------------------------------------------------------- attributes of a node

    def _change(self, actor: Actor, path: str, change: Callable[[Node], None]) -> Node:
        parts = split_path(path)
        refuse_read_only(parts)
        with self.meta.write() as w:
            node = self._resolve(w, parts)
            if is_view(parts):
                self.check_sees_view_entry(w, actor, parts, node.id)
            else:
                self.access.check_sees(w, actor, node.id, path)
            self.access.require_on(w, actor, node, Role.EDITOR, "changing attributes", path)
            change(node)
            node.ctime_ns = time.time_ns()
            w.put_node(node)
        return node

    @action("chmod")
    def set_mode(self, actor: Actor, path: str, mode: int) -> Node:
        def change(node: Node) -> None:
            node.mode = stat.S_IFMT(node.mode) | (mode & 0o7777)

        return self._change(actor, path, change)

    @action("chown")
    def set_owner(self, actor: Actor, path: str, uid: int, gid: int) -> Node:
        def change(node: Node) -> None:
            if uid >= 0:
                node.uid = uid
            if gid >= 0:
                node.gid = gid

        return self._change(actor, path, change)

    @action("utimens")
    def set_times(self, actor: Actor, path: str, atime_ns: int | None, mtime_ns: int | None) -> Node:
        """Set access and modification times; None keeps the stored one."""

        def change(node: Node) -> None:
            if atime_ns is not None:
                node.atime_ns = atime_ns
            if mtime_ns is not None:
                node.mtime_ns = mtime_ns

        return self._change(actor, path, change)

    # ----------------------------------------------------------------- extended attributes

    def list_attributes(self, actor: Actor, path: str) -> list[str]:
        node = self.lookup(actor, path)
        with self.meta.read() as r:
            if not self.access.attributes_readable(r, actor, node):
                return []
        return [*self._encord_attributes(node), *node.xattrs]

    def get_attribute(self, actor: Actor, path: str, name: str) -> bytes:
        node = self.lookup(actor, path)
        with self.meta.read() as r:
            readable = self.access.attributes_readable(r, actor, node)
        if not readable:  # a folder seen only on the way down: its name, nothing more
            refusal = AccessDenied(ATTRIBUTES_NEED_VIEWER, path)
            self.record_refusal(actor, "getxattr", refusal)
            raise refusal
        if name == ENCORD + "datasets" and isinstance(node, Item):
            with self.meta.read() as r:
                return "\n".join(self.linked_to(r, node.id, actor)[0]).encode()  # one a line
        encord = self._encord_attributes(node)
        if name in encord:
            return encord[name].encode()
        if name in node.xattrs:
            return xattr_from_text(node.xattrs[name])
        raise NoAttribute(f"no attribute {name}", path)

    def _encord_attributes(self, node: Node) -> dict[str, str]:
        identity = node.identity if isinstance(node, Item) and node.identity is not None else node.id
        attrs: dict[str, str] = {ENCORD + "id": str(identity)}
        if isinstance(node, Folder):
            attrs[ENCORD + "description"] = node.description
        elif isinstance(node, Item):
            for field in MEDIA_ATTRIBUTES:
                value = getattr(node.media, field)
                if value is not None:
                    attrs[ENCORD + field] = str(value)
            prefix = "dicom." if node.media.kind in (Kind.DICOM_FILE, Kind.DICOM_SERIES) else ""
            for key, value in node.media.extra.items():
                attrs[f"{ENCORD}{prefix}{key}"] = value
            attrs[ENCORD + "datasets"] = ""  # "Linked to": read from the links when asked
            attrs.update(self.cloud.attributes(node))
        attrs[ENCORD + "client_metadata"] = metadata_text(node.client_metadata)
        return attrs

    @action("setxattr")
    def set_attribute(self, actor: Actor, path: str, name: str, value: bytes, flags: int = 0) -> Node:
        parts = split_path(path)
        if is_view(parts) and not is_view_entry(parts):
            return self._describe_collection(actor, parts, name, value, path)
        if name == BATCH_ATTRIBUTE:
            return self._batch_by_attribute(actor, path, value)
        if not name.startswith("user."):
            raise NotPermitted(f"only user.* attributes can be set, not {name}", path)
        if len(value) > XATTR_MAX:
            raise InvalidInput(f"attribute values are at most {XATTR_MAX} bytes", path)
        if name.startswith(ENCORD) and name not in WRITABLE_ENCORD:
            raise NotPermitted(f"{name} is computed by encfs and cannot be set", path)
        parsed = self._parse_encord_value(name, value, path)

        def change(node: Node) -> None:
            exists = name in WRITABLE_ENCORD or name in node.xattrs
            if flags & XATTR_CREATE and exists:
                raise AlreadyExists(f"attribute {name} exists", path)
            if flags & XATTR_REPLACE and not exists:
                raise NoAttribute(f"no attribute {name}", path)
            self._apply_attribute(node, name, value, parsed, path)

        return self._change(actor, path, change)

    def _describe_collection(self, actor: Actor, parts: list[str], name: str, value: bytes,
                             path: str) -> Node:
        """`setfattr -n user.encord.description` on /.datasets/D or /.projects/P."""
        refuse_read_only(parts)
        if name != ENCORD + "description" or len(parts) != 2:
            raise NotPermitted("Datasets and Projects take user.encord.description only", path)
        description = self._parse_encord_value(name, value, path)
        kind = DATASET if parts[0] == ".datasets" else PROJECT
        self.set_collection_description(actor, kind, parts[1], description)
        return self.view_node(parts)

    def _batch_by_attribute(self, actor: Actor, path: str, value: bytes) -> Node:
        """`setfattr -n user.encord.batch -v image_group|image_sequence FOLDER/NAME`."""
        kinds = {"image_group": Kind.IMAGE_GROUP, "image_sequence": Kind.IMAGE_SEQUENCE}
        kind = kinds.get(value.decode(errors="replace").strip())
        if kind is None:
            raise InvalidInput("user.encord.batch takes image_group or image_sequence", path)
        result = self.batch_folder(actor, path, kind)
        if result.note:
            log.info("batch %s: %s", path, result.note)
        return result.items[0]

    def _parse_encord_value(self, name: str, value: bytes, path: str) -> Any:
        if name == ENCORD + "client_metadata":
            metadata = parse_client_metadata(value, path)
            self.metadata_schema.check(metadata, path)
            return metadata
        if name == ENCORD + "description":
            try:
                description = value.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidInput("a description must be UTF-8 text", path) from exc
            check_description(description, path)
            return description
        return None

    def _apply_attribute(self, node: Node, name: str, value: bytes, parsed: Any, path: str) -> None:
        if name == ENCORD + "client_metadata":
            node.client_metadata = parsed
        elif name == ENCORD + "description":
            if not isinstance(node, Folder):
                raise NotPermitted("only folders have a description", path)
            node.description = parsed
        else:
            current = {key: xattr_from_text(text) for key, text in node.xattrs.items()}
            check_user_attributes(current, name, value, path)
            node.xattrs[name] = xattr_to_text(value)

    @action("removexattr")
    def remove_attribute(self, actor: Actor, path: str, name: str) -> Node:
        if name.startswith(ENCORD) and name not in WRITABLE_ENCORD:
            raise NotPermitted(f"{name} is computed by encfs and cannot be removed", path)

        def change(node: Node) -> None:
            if name == ENCORD + "client_metadata":
                node.client_metadata = {}
            elif name == ENCORD + "description" and isinstance(node, Folder):
                node.description = ""
            elif name in node.xattrs:
                del node.xattrs[name]
            else:
                raise NoAttribute(f"no attribute {name}", path)

        return self._change(actor, path, change)

    # ----------------------------------------------------------------- content

    def open_reader(self, actor: Actor, item: Item, known_content: bytes | None = None) -> BlobReader | None:
        """A reader of the item's committed content (None for an empty item), whose
        reads are checked (integrity.py); `known_content` is that content when the
        caller just wrote it. A blob file missing from the store is damage (EIO)."""
        if known_content is not None:
            return MemoryBlobReader(known_content)
        for _ in range(3):
            try:
                if item.blob is None:  # unsettled, imported by reference, or empty
                    return self.live.reader(item.id) or self.cloud.reader_for(item)
                return self._checked_reader(item)
            except FileNotFoundError:
                fresh = self.node(actor, item.id)  # replaced between lookup and open
                if not isinstance(fresh, Item):
                    raise NotFound("the file was removed", item.name) from None
                if fresh.blob == item.blob and item.blob is not None:  # a live file: settled meanwhile
                    self.verifier.report(item.blob, self._describer(item), "the blob file is missing")
                item = fresh
        raise NotFound("the file's content changed too often to be opened", item.name)

    def _checked_reader(self, item: Item) -> BlobReader:
        assert item.blob is not None
        inner = self.blobs.open_reader(item.blob)
        if self.blobs.checks_reads or not READ_CHECKS:  # a bucket's reader checks each range itself
            return inner
        return VerifiedBlobReader(inner, item.blob, item.size, self.verifier, self._describer(item),
                                  item.block_sum_hint())

    def _describer(self, item: Item) -> Callable[[], str]:
        """How a log line names an item: its id and path (looked up only when needed)."""

        def describe() -> str:
            try:
                where = self.path_of(Actor.from_ids(0, 0), item.id)
            except Exception:  # the line must be written all the same
                where = item.name
            return f"item {item.id} ({where})"

        return describe

    def _sums_of(self, sha: str) -> Sums | None:
        with self.meta.read() as r:
            raw = r.sums(sha)
        return None if raw is None else Sums.unpack(raw)

    def _store_sums(self, sha: str, sums: Sums) -> None:
        """Checksums of a blob stored before them, computed at its first full check."""
        with self.meta.write() as w:
            if w.blob(sha) is not None and w.sums(sha) is None:
                w.put_sums(sha, sums.pack())

    def start_draft(self, actor: Actor, item: Item | None, keep_content: bool,
                    current: BlobReader | None = None) -> Draft:
        """A draft of the item's next content: its current bytes, or empty. `current`
        is the reader an open file holds on those bytes; it still has them when the
        item was removed while open (its blob may be gone from the store)."""
        if keep_content and item is not None:  # in place when it can be: no copy (live_drafts.py)
            in_place = self.live.reopen(item.id) or self.live.take_over(item, current, self._take_over_blob)
            if in_place is not None:
                return in_place
        draft = Draft(self.blobs.spool_dir(), self.blobs.new_upload())
        if not keep_content or item is None:
            return draft
        try:
            reader = current or (self._checked_reader(item) if item.blob else self.live.reader(item.id))
            if reader is None:
                return draft
            size = reader.size() if isinstance(reader, LiveReader) else item.size  # grown by fsyncs
            try:
                if size <= MEMORY_LIMIT:
                    draft.load(reader.pread(size, 0))
                else:
                    draft.fill_from(reader, size)
            finally:
                if reader is not current:
                    reader.close()
        except OSError as exc:
            draft.discard()
            raise self._os_refusal(exc, item.name) from exc
        except BaseException:
            draft.discard()
            raise
        return draft

    @action("write")
    def write(self, actor: Actor, path: str, draft: Draft, data: bytes | Payload, offset: int) -> int:
        try:
            return draft.write(data, offset)
        except OSError as exc:
            raise self._os_refusal(exc, path) from exc

    @action("truncate")
    def truncate_draft(self, actor: Actor, path: str, draft: Draft, length: int) -> None:
        try:
            draft.truncate(length)
        except OSError as exc:
            raise self._os_refusal(exc, path) from exc

    def take_content(self, actor: Actor, path: str, draft: Draft, source: Item, size: int) -> bool:
        """Let an empty draft hold the first `size` bytes of `source`'s stored content
        without copying them (a file copied within the mount); a whole copy's commit
        then counts the same blob again. False if that version is gone from the store."""
        if source.blob is None:
            return False
        try:
            reader = self._checked_reader(source)
        except FileNotFoundError:
            return False
        draft.take_content_of(TakenBlob(source.blob, source.size, reader), size)
        return True

    @action("fallocate")
    def allocate_draft(self, actor: Actor, path: str, draft: Draft, offset: int, length: int,
                       mode: int = 0) -> None:
        try:
            if mode:
                draft.change_range(mode, offset, length)
            else:
                draft.allocate(offset, length)
        except OSError as exc:
            raise self._os_refusal(exc, path) from exc

    def _os_refusal(self, exc: OSError, path: str) -> EncfsError:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return NoSpace("no space left on the store's disk; the file keeps its previous content",
                           path)
        error = EncfsError(f"storage error: {exc.strerror}", path)
        error.errno = exc.errno or errno.EIO
        return error

    @action("close")
    def commit(
        self, actor: Actor, path: str, item_id: int, draft: Draft, durable: bool,
        mtime_ns: int | None = None,
    ) -> Item | None:
        """Make a draft the item's content: hash, store the blob once, update the record,
        all in one transaction; the draft is consumed. If the item was removed
        meanwhile, nothing is stored and None is returned with the draft left to the
        caller: a file removed while open goes on living in its descriptors."""
        live = self.live.should_record(draft, durable) and self.cloud.reference(item_id) is None
        try:
            self._check_may_commit(actor, item_id, path)
            commit = self._commit_live if live else self._commit
            committed = commit(item_id, draft, durable, mtime_ns, path)
        except BaseException as exc:
            draft.discard()  # a refusal frees its space now (a live file stays: its record names it)
            if isinstance(exc, OSError):
                raise self._os_refusal(exc, path) from exc
            raise
        if committed is not None and not live:
            draft.live_name = None  # stored as a blob: the file is no item's content any more
            draft.discard(in_background=True)  # stored: a duplicate's spool may go a moment later
        return committed

    def _check_may_commit(self, actor: Actor, item_id: int, path: str) -> None:
        with self.meta.read() as r:
            item = r.node(item_id)
            if isinstance(item, Item):
                self.access.require_on(r, actor, item, Role.EDITOR, "writing a file", path)

    def _commit(
        self, item_id: int, draft: Draft, durable: bool, mtime_ns: int | None, path: str,
    ) -> Item | None:
        sha, sums = draft.fingerprint()
        size, head = draft.size, draft.head()
        with self.meta.read() as r:
            if r.attributes(item_id) is None:
                return None
            counted = sums is not None and r.blob(sha) is not None
            stored_sums = r.sums(sha) if counted else None
        sound = not counted or self._stored_copy_sound(sha, size, stored_sums)
        if not counted:
            draft.upload_ahead(sha)  # a bucket store: up now, outside the transaction
        content = NewContent(sha, size, sums, sound)
        try:
            return self._commit_checked(item_id, draft, content, head, durable, mtime_ns, path)
        except EncfsError:
            self._forget_unwritten(item_id)
            raise

    def _commit_checked(
        self, item_id: int, draft: Draft, content: NewContent, head: bytes, durable: bool,
        mtime_ns: int | None, path: str,
    ) -> Item | None:
        dicom = self._dicom_header(draft.source(), path.rsplit("/", 1)[-1], head, path)
        media = self._dicom_media(dicom) if dicom else probe(draft.source(), head)
        if durable:
            draft.fsync()
        emptied = content.size == 0  # emptying a file works on a full disk, like deleting
        with self._changing(freeing=emptied) as (w, changes):
            item = w.node(item_id)
            if not isinstance(item, Item):
                return None
            self._check_writable(w, item, path)
            if dicom:
                self._check_duplicate_slice(w, item, dicom, path)
            self._store_draft(w, changes, draft, content, durable)
            self.live.forget(w, item.id, changes.dropped_drafts, keep=draft.live_name)
            self._replace_content(w, changes, item, content.sha, content.size, media, dicom, mtime_ns)
        if durable:
            self.meta.sync()
        return item

    def _replace_content(self, w: WriteTxn, changes: BlobChanges, item: Item, blob: str | None, size: int,
                         media: Media, dicom: dict | None, mtime_ns: int | None) -> None:
        if item.blob and w.drop_blob_ref(item.blob) == 0:
            changes.obsolete.append(item.blob)
        item.blob, item.size, item.media = blob, size, media
        item.mtime_ns = mtime_ns if mtime_ns is not None else time.time_ns()
        item.ctime_ns = time.time_ns()
        self._update_series_of(w, item, dicom, changes)
        self._resync_item(w, item)

    def _commit_live(
        self, item_id: int, draft: Draft, durable: bool, mtime_ns: int | None, path: str,
    ) -> Item | None:
        """Keep the draft's spool file as the item's content (live_drafts.py): an fsync
        makes it durable and records it once; a close records size, times and kind."""
        with self.meta.read() as r:
            item = r.node(item_id)
            if not isinstance(item, Item):
                return None
            recorded = r.live_draft(item_id)
        name = draft.make_live()
        if durable:
            draft.sync_data()
            if recorded == name:
                return item  # the record names it already: size and times follow at close
        dicom, media = None, item.media
        if not durable:
            head = draft.head()
            dicom = self._dicom_header(draft.source(), path.rsplit("/", 1)[-1], head, path)
            media = self._dicom_media(dicom) if dicom else probe(draft.source(), head)
        with self._changing() as (w, changes):
            item = w.node(item_id)
            if not isinstance(item, Item):
                return None
            self._check_writable(w, item, path)
            if dicom:
                self._check_duplicate_slice(w, item, dicom, path)
            new = self.live.record(w, item, name, changes.dropped_drafts)
            self._replace_content(w, changes, item, None, draft.size, media, dicom, mtime_ns)
        if durable and new:
            self.meta.sync()
        return item

    def _take_over_blob(self, item_id: int, sha: str, name: str) -> bool:
        """Make the live file `name` (a hard link of the blob `sha`, which only this
        item counts) the item's content. Synced before the blob's own name goes, so
        that no crash can leave the record naming a blob that is gone."""
        with self.meta.write() as w:
            item = w.node(item_id)
            counted = w.blob(sha)
            if not isinstance(item, Item) or item.blob != sha or counted is None or counted[0] != 1:
                return False
            w.drop_blob_ref(sha)
            w.set_live_draft(item_id, name)
            item.blob = None
            w.put_node(item)
        self.meta.sync()
        self._delete_uncounted_blobs([sha])
        return True

    def settle_now(self, item: Item) -> Item | None:
        """The item with its content settled now (a copy within the mount shares
        stored content only): None if a writer holds its live file."""
        name = self.live.name_of(item.id)
        if name is not None and not self.live.settle(item.id, name, self._settle_as_blob):
            return None
        with self.meta.read() as r:
            fresh = r.node(item.id)
        return fresh if isinstance(fresh, Item) else None

    def settle_drafts(self, quiet_for: float) -> int:
        """Store as blobs the live files no writer holds that have been unchanged for
        `quiet_for` seconds (live_drafts.py); returns how many settled."""
        settled = sum(self.live.settle(item_id, name, self._settle_as_blob)
                      for item_id, name in self.live.quiet(quiet_for))
        self.live.remove_strays()
        return settled

    def _settle_as_blob(self, item_id: int, name: str, sha: str, sums: Sums, size: int) -> bool:
        """Switch an item from its live file to the blob `sha` of the same bytes: stored
        once, shared if stored already, unless that stored copy is damaged (the live
        file then replaces it, as a commit's draft would)."""
        with self.meta.read() as r:
            counted = r.blob(sha) is not None
            stored_sums = r.sums(sha) if counted else None
        sound = not counted or self._stored_copy_sound(sha, size, stored_sums)
        with self._changing() as (w, changes):
            item = w.node(item_id)
            if not isinstance(item, Item) or w.live_draft(item_id) != name:
                return False
            w.set_live_draft(item_id, None)
            fresh = w.add_blob_ref(sha, size) == 1
            if fresh or not sound:
                if fresh:
                    changes.written.append(sha)
                self._put_place(w, sha, self.blobs.adopt(sha, self.live.hard_link(name), durable=True))
                w.put_sums(sha, sums.pack())
                self.verifier.forget(sha)
            item.blob, item.size = sha, size
            w.put_node(item)
        self.meta.sync()
        return True

    def _store_draft(self, w: WriteTxn, changes: BlobChanges, draft: Draft, content: NewContent,
                     durable: bool) -> None:
        """Count the content once more and store its bytes if they are new. Content
        stored already is shared, unless its stored copy is damaged: deduplication
        never adopts a damaged blob, the draft's good copy replaces (repairs) it."""
        sha = content.sha
        if w.add_blob_ref(sha, content.size) == 1:
            changes.written.append(sha)
            self._put_place(w, sha, draft.save_as_blob(self.blobs, sha, durable))
            sums = content.sums or draft.fingerprint()[1]  # a copy of a blob removed meanwhile
            assert sums is not None
            w.put_sums(sha, sums.pack())
        elif not content.sound and content.sums is not None:
            self._put_place(w, sha, draft.save_as_blob(self.blobs, sha, durable=True))  # others rely on it
            w.put_sums(sha, content.sums.pack())
            self.verifier.forget(sha)
            log.warning("repaired blob %s: its damaged stored copy was replaced by identical content "
                        "just written", sha)
        elif durable:  # stored already by a commit that was not fsynced: fsync it now
            self.blobs.sync(sha)

    @staticmethod
    def _put_place(w: WriteTxn, sha: str, place: bytes | None) -> None:
        """Where a bucket store put the blob's bytes (a local store needs no record)."""
        if place is not None:
            w.put_place(sha, place)

    def _stored_copy_sound(self, sha: str, size: int, raw_sums: bytes | None) -> bool:
        """Whether the stored copy of content about to be shared (it is counted) is
        whole; a damaged or missing one is logged."""
        problem = self.verifier.stored_copy_damage(self.blobs, sha, size, raw_sums)
        if problem:
            log.warning("the stored copy of blob %s is damaged (%s): the content just written "
                        "replaces it", sha, problem)
        return problem is None

    def _store_generated(self, w: WriteTxn, changes: BlobChanges, content: bytes) -> str:
        """Store a generated item's content (a manifest, an encoded video) in the
        transaction, like a draft's: once, with its checksums, never onto a damaged copy."""
        sha, sums = fingerprint_bytes(content)
        fresh = w.add_blob_ref(sha, len(content)) == 1
        if fresh or not self._stored_copy_sound(sha, len(content), w.sums(sha)):
            self._put_place(w, sha, self.blobs.write(sha, content, durable=not fresh))
            w.put_sums(sha, sums.pack())
            self.verifier.forget(sha)
            if fresh:
                changes.written.append(sha)
        return sha

    def _update_series_of(self, w: WriteTxn, item: Item, dicom: dict | None, changes: BlobChanges) -> None:
        """Record the item (with its DICOM header) and keep its series in step."""
        old_series = item.dicom["series_uid"] if item.dicom else None
        new_series = dicom["series_uid"] if dicom else None
        if old_series is not None and old_series != new_series:
            item.dicom = None
            w.put_node(item)
            self._leave_series(w, item, changes)
        item.dicom = dicom
        w.put_node(item)
        if dicom:
            self._join_series(w, item, changes)

    def _forget_unwritten(self, item_id: int) -> None:
        """A refused first version: the empty item made at create goes too, so that
        nothing of the refused file is stored (an item with content keeps it)."""
        with self._changing(freeing=True) as (w, changes):
            current = w.node(item_id)
            if isinstance(current, Item) and current.blob is None and w.live_draft(current.id) is None:
                self._drop_item(w, current, changes)

    def sync(self) -> None:
        """Make every committed change durable."""
        self.meta.sync()

    def make_durable(self, item: Item) -> None:
        """fsync of a file with nothing pending: its stored content (committed by a close
        that did not fsync, maybe) and every committed change."""
        if item.blob is not None:
            with contextlib.suppress(FileNotFoundError):  # replaced meanwhile: its writer's to sync
                self.blobs.sync(item.blob)
        self.live.sync(item.id)
        self.meta.sync()

    @action("upload", where=lambda a: [upload_target(a)])
    def upload(self, actor: Actor, folder: str, source: Path, name: str | None = None,
               replace: bool = False) -> Item:
        """Copy a local file into a folder as a new item (or a new version with replace)."""
        name = name or source.name
        check_name(name)
        target = "/" + "/".join([*split_path(folder), name])
        if not source.is_file():
            raise NotFound(f"local file {source} does not exist or is not a file", target)
        try:
            draft = Draft.from_local_file(self.blobs.spool_dir(), source, self.blobs.new_upload())
        except OSError as exc:
            raise self._os_refusal(exc, target) from exc
        try:
            existing = self._existing_item(actor, target) if replace else None
            item = existing or self.create_item(actor, target, 0o644)
        except BaseException:
            draft.discard()
            raise
        committed = self.commit(actor, target, item.id, draft, durable=False)
        if committed is None:
            draft.discard()
            raise NotFound("the file was removed while it was uploaded", target)
        return committed

    def _existing_item(self, actor: Actor, path: str) -> Item | None:
        try:
            node = self.lookup(actor, path)
        except NotFound:
            return None
        if isinstance(node, Folder):
            raise IsAFolder("a folder has this name", path)
        return node

    # ----------------------------------------------------------------- search and details

    @action("search", where=lambda a: ["/.search/" + a["query"]])
    def search(self, actor: Actor, query: str, kind: Kind | None = None, in_dataset: bool | None = None,
               limit: int | None = None) -> list[SearchHit]:
        """Items matching `query` in its path form (name text, or expressions such as
        `kind=image,width>=1024`: search_query.py), by path; `in_dataset` keeps only
        those in some Dataset (True) or in none (False); `limit`: the first found."""
        parsed = parse_segment(query)
        if kind is not None:
            parsed.conditions.append(Condition("kind", "=", kind))
        hits = self._found(actor, parsed, in_dataset, limit)
        return sorted(hits, key=lambda hit: hit.path)

    @action("search", where=lambda a: ["/.search/" + (a["text"] or ",".join(a["expressions"]))])
    def find(self, actor: Actor, text: str | None, expressions: list[str], in_dataset: bool | None = None,
             limit: int | None = None) -> Iterator[SearchHit]:
        """The CLI's search: name `text` and --where `expressions`, streamed as found."""
        return self._found(actor, parse_terms(text, expressions), in_dataset, limit)

    def _found(self, actor: Actor, query: Query, in_dataset: bool | None,
               limit: int | None) -> Iterator[SearchHit]:
        hits = self.finder.hits(actor, query, None if in_dataset is not None else limit)
        if in_dataset is not None:
            hits = (hit for hit in hits if (hit.item.datasets > 0) == in_dataset)
            hits = itertools.islice(hits, limit) if limit is not None else hits
        return hits

    def info(self, actor: Actor, path: str) -> dict[str, Any]:
        parts = split_path(path)
        if is_view(parts) and len(parts) == 2:
            return self.collection_info(actor, parts)
        node = self.lookup(actor, path)
        with self.meta.read() as r:
            self.access.require_on(r, actor, node, Role.VIEWER, "a folder's details", path)
            details: dict[str, Any] = {
                "id": node.id, "path": self._path(r, node.id, {}), "name": node.name,
                "owner": node.owner, "created": _iso(node.created_ns), "modified": _iso(node.mtime_ns),
                "mode": oct(stat.S_IMODE(node.mode)), "client_metadata": node.client_metadata,
                "attributes": {k: _show(v) for k, v in node.xattrs.items()},
            }
            if isinstance(node, Folder):
                details.update(self._folder_details(r, node))
            elif isinstance(node, Special):
                details.update(self.specials.details(node))
            elif isinstance(node, Item):
                details.update(self._item_details(node))
                details["settled"] = r.live_draft(node.id) is None  # stored as a blob (live_drafts.py)
                if node.identity is not None:
                    details["identity"] = node.identity  # handed over by a save (saving.py)
                details.update(self.cloud.where(r, node))
                details.update(self.group_details(r, node))
                details["datasets"], details["projects"] = self.linked_to(r, node.id, actor)
        return details

    def folder_summary(self, actor: Actor, path: str) -> dict[str, Any]:
        """Like Encord's folder summary: files per kind and total size, subfolders included."""
        with self.meta.read() as r:
            folder = r.node(self._visible_id(r, actor, split_path(path)))
            if not isinstance(folder, Folder):
                raise NotAFolder("not a folder", path)
            self.access.require_on(r, actor, folder, Role.VIEWER, "a folder's summary", path)
            kinds: dict[str, int] = {}
            totals = {"files": 0, "folders": 0, "size": 0}
            self._summarise(r, folder.id, kinds, totals)
            return {"path": self._path(r, folder.id, {}), "description": folder.description, **totals,
                    **self.cloud.summary(r, folder),
                    "kinds": dict(sorted(kinds.items())),
                    "synced_datasets": self.synced_datasets_of_folder(r, folder.id)}

    def _summarise(self, r: ReadTxn, folder_id: int, kinds: dict[str, int], totals: dict[str, int]) -> None:
        for _, child_id, is_folder in r.children(folder_id):
            if is_folder:
                totals["folders"] += 1
                self._summarise(r, child_id, kinds, totals)
                continue
            item = r.node(child_id)
            if isinstance(item, Item):
                kinds[item.media.kind.value] = kinds.get(item.media.kind.value, 0) + 1
                totals["files"] += 1
                totals["size"] += item.size

    def _folder_details(self, r: ReadTxn, folder: Folder) -> dict[str, Any]:
        entries = list(r.children(folder.id))
        return {
            "type": "folder", "description": folder.description, "subfolders": folder.subfolders,
            "files": sum(1 for _, _, is_folder in entries if not is_folder),
            "synced_datasets": self.synced_datasets_of_folder(r, folder.id),
        }

    def _item_details(self, item: Item) -> dict[str, Any]:
        fields = MEDIA_ATTRIBUTES[1:]
        media = {f: getattr(item.media, f) for f in fields if getattr(item.media, f) is not None}
        details: dict[str, Any] = {
            "type": "file", "kind": item.media.kind.value, "size": item.size, "sha256": item.blob, **media,
        }
        if item.media.extra:
            details["dicom" if item.media.kind in (Kind.DICOM_FILE, Kind.DICOM_SERIES) else "extra"] = (
                item.media.extra
            )
        if item.media.note:
            details["note"] = item.media.note
        return details

    # ----------------------------------------------------------------- refusals, space, upkeep

    def record_refusal(self, actor: Actor, operation: str, exc: EncfsError) -> None:
        now = time.time_ns()
        line = printable(f"{_iso(now)} {operation} {exc.path or '-'}: {exc.reason}")
        log.warning("refused %s by %s: %s", operation, actor.name, line)
        try:
            with self.meta.write(reserve=True) as w:
                w.add_error(actor.name, now, line)
                refused_attempt(w, actor, operation, exc.path or "", exc.reason)
        except Exception:  # the refusal itself must still reach the caller
            log.exception("could not record a refusal")

    def refusals(self, actor: Actor) -> list[str]:
        with self.meta.read() as r:
            return r.errors(actor.name)

    def space(self) -> os.statvfs_result:
        return os.statvfs(self.store.path)

    def recover(self) -> tuple[int, int]:
        """Clear what a killed process left (recovery.py): (drafts removed, uncounted
        blob files deleted); nothing any item names is ever deleted."""
        done = recover(self.meta, self.blobs)
        return done.drafts, len(done.deleted)


def upload_target(arguments: dict[str, Any]) -> str:
    """The Files path an upload writes (for its refusals' lines)."""
    source = arguments["source"]
    name = arguments.get("name") or getattr(source, "name", "")
    return f"{arguments['folder'].rstrip('/')}/{name}"



def _iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / 1e9, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _show(text: str) -> str:
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
