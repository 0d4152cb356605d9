"""Items whose bytes stay in a bucket: how they are made, read, shown, tombstoned.

The service holds one `CloudItems` (`service.cloud`) and calls it where an item's
content or details are concerned; the importer and the folder sync call it to
change items, each change one write transaction through the service's helpers.

An item imported by reference has no blob: its record says its size and media, and
a `refs` row (meta/cloud.py) says which object, of which version (ETag, size),
through which integration. Writing to it stores the new content as the store's own
blob (the bucket object is never changed); the row stays, so `encfs info` can say
where the item came from.
"""

from __future__ import annotations

import logging
import stat
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from encfs.blobs.base import BlobReader
from encfs.cloud.cached import CachedObjectReader
from encfs.cloud.integrations import Integration, Integrations, parse_url
from encfs.cloud.objects import ObjectReader, S3Object, Version
from encfs.errors import NotAFolder
from encfs.meta import cloud as tables
from encfs.meta.store import ReadTxn, WriteTxn, u64
from encfs.model import Actor, Folder, Item, Media
from encfs.names import check_name, fit_name, split_path

if TYPE_CHECKING:
    from encfs.service import BlobChanges, FilesService

log = logging.getLogger("encfs")
ENCORD = "user.encord."


@dataclass
class NewReference:
    """One item to make: where (folders below the target, created as needed), its
    name, and the object it refers to."""

    folders: list[str]
    name: str
    integration: str
    url: str
    version: Version
    media: Media
    client_metadata: dict[str, Any] = field(default_factory=dict)
    dicom: dict[str, Any] | None = None
    mtime_ns: int | None = None


class CloudItems:
    def __init__(self, service: FilesService) -> None:
        self.service = service
        self.meta = service.meta
        self.integrations = Integrations(service.meta)

    # ------------------------------------------------------------- making items

    def add(self, actor: Actor, folder: str, planned: list[NewReference]) -> list[Item]:
        """Make the items in one transaction (a batch of an import or a sync)."""
        service = self.service
        made: list[Item] = []
        with service._changing() as (w, changes):
            base = service._resolve(w, split_path(folder))
            if not isinstance(base, Folder):
                raise NotAFolder("not a folder", folder)
            folders: dict[tuple[str, ...], Folder] = {(): base}
            touched: dict[int, Folder] = {}
            for new in planned:
                parent = self._folder_below(w, actor, folders, new.folders)
                touched[parent.id] = parent
                made.append(self._make(w, actor, parent, new, changes))
            now = time.time_ns()
            for folder_id in touched:  # each folder's record once, not once an item
                parent = w.node(folder_id)
                assert isinstance(parent, Folder)
                service._touch(parent, now)
                w.put_node(parent)
        return made

    def _folder_below(self, w: WriteTxn, actor: Actor, known: dict[tuple[str, ...], Folder],
                      parts: list[str]) -> Folder:
        key: tuple[str, ...] = ()
        folder = known[()]
        for part in parts:
            key = (*key, part)
            if key not in known:
                child_id = w.child_id(folder.id, part)
                child = w.node(child_id) if child_id is not None else None
                if not isinstance(child, Folder):
                    check_name(part)
                    name = part if child_id is None else self.free_name(w, folder, part)
                    path = self.service._path(w, folder.id, {}).rstrip("/") + "/" + name
                    child = self.service._make_folder(w, actor, path, 0o755, "", None)
                known[key] = child
            folder = known[key]
        return folder

    def free_name(self, r: ReadTxn, folder: Folder, name: str) -> str:
        """`name`, or `name (2).ext`… if a file, folder or tombstone has it."""
        stem, dot, ext = name.rpartition(".")
        if not stem:
            stem, dot, ext = name, "", ""
        candidate, n = name, 2
        while r.child_id(folder.id, candidate) is not None or tables.tombstone_id(r, folder.id, candidate):
            candidate = fit_name(stem, f" ({n}){dot}{ext}")
            n += 1
        return candidate

    def _make(self, w: WriteTxn, actor: Actor, parent: Folder, new: NewReference,
              changes: BlobChanges) -> Item:
        service = self.service
        check_name(new.name)
        name = self.free_name(w, parent, new.name)
        fields = service._new_node_fields(w, actor, parent, name, stat.S_IFREG | 0o644)
        if new.mtime_ns:
            fields["mtime_ns"] = new.mtime_ns
        item = Item(**fields, size=new.version.size or 0, media=new.media,
                    client_metadata=new.client_metadata)
        w.put_node(item)  # as service._insert_item, but the folder's record is written once a batch
        w.link(parent.id, item.name, item.id, False)
        w.index_name(item.id, item.name)
        service._resync_item(w, item)
        tables.put_reference(w, item.id, {"integration": new.integration, "url": new.url,
                                          "etag": new.version.etag, "size": new.version.size}, new=True)
        if new.dicom:
            item.dicom = new.dicom
            w.put_node(item)
            service._join_series(w, item, changes)
        return item

    def items_with_url(self, url: str) -> list[int]:
        with self.meta.read() as r:
            return [i for i in tables.items_with_url(r, url)
                    if not (tables.reference(r, i) or {}).get("tombstone")]

    def set_client_metadata(self, item_ids: list[int], metadata: dict[str, Any]) -> None:
        """upsert_metadata: existing items of a URL take the spec's client metadata."""
        with self.meta.write() as w:
            for item_id in item_ids:
                item = w.node(item_id)
                if isinstance(item, Item):
                    item.client_metadata = metadata
                    item.ctime_ns = time.time_ns()
                    w.put_node(item)

    # ------------------------------------------------------------- reading

    def reference(self, item_id: int) -> dict[str, Any] | None:
        with self.meta.read() as r:
            return tables.reference(r, item_id)

    def reader_for(self, item: Item) -> BlobReader | None:
        """A reader of the object an item without a blob refers to (None: an empty item)."""
        ref = self.reference(item.id)
        if ref is None:
            return None
        source = S3Object(self.integration(ref["integration"]), parse_url(ref["url"]),
                          Version(ref.get("etag"), ref.get("size", item.size)),
                          on_pinned=lambda etag: self._pin(item.id, etag))
        describe = self.service._describer(item)
        described = lambda: f"{describe()} from {ref['url']}"  # noqa: E731
        if source.version.etag:  # a known version: read through the store's block cache
            return CachedObjectReader(self.service.store.object_cache, source, described)
        return ObjectReader(source, item.size, described)  # its first answer pins the version

    def _pin(self, item_id: int, etag: str) -> None:
        """An item imported with its metadata given (nothing read) learns its object's
        ETag at its first read; every later read of any open must match it."""
        try:
            with self.meta.write() as w:
                ref = tables.reference(w, item_id)
                if ref is not None and not ref.get("etag"):
                    tables.put_reference(w, item_id, {**ref, "etag": etag})
        except Exception as exc:  # the read itself is good; the next open pins again
            log.warning("could not record the ETag of item %s: %s", item_id, exc)

    def integration(self, name: str) -> Integration:
        return self.integrations.get(name)

    # ------------------------------------------------------------- showing

    def where(self, r: ReadTxn, item: Item) -> dict[str, Any]:
        """Where an item's bytes are: in the bucket, or in the store (written since import)."""
        ref = tables.reference(r, item.id)
        if ref is None:
            return {"storage": "store"}
        if item.blob is not None:
            return {"storage": "store", "imported_from": ref["url"],
                    "storage_note": "written since it was imported by reference: the new content is in "
                                    "the store; the bucket object was not changed"}
        shown = {"storage": "bucket", "url": ref["url"], "integration": ref["integration"]}
        if ref.get("etag"):
            shown["etag"] = ref["etag"]
        if ref.get("tombstone"):
            shown["tombstone"] = True
        return shown

    def attributes(self, item: Item) -> dict[str, str]:
        """user.encord.storage (bucket or store) and user.encord.url."""
        with self.meta.read() as r:
            where = self.where(r, item)
        found = {ENCORD + "storage": where["storage"]}
        url = where.get("url") or where.get("imported_from")
        if url:
            found[ENCORD + "url"] = url
        return found

    def summary(self, r: ReadTxn, folder: Folder) -> dict[str, Any]:
        """For `encfs folder info`: where the files' bytes are, tombstones, and the
        folder's cloud sync (subfolders included)."""
        counts = {"in_bucket": 0, "tombstones": 0}
        self._count(r, folder.id, counts)
        shown: dict[str, Any] = {"tombstones": counts["tombstones"], "files_in_bucket": counts["in_bucket"]}
        sync = tables.cloud_sync(r, folder.id)
        if sync is not None:
            shown["cloud_sync"] = {"url": sync["url"], "integration": sync["integration"]}
        return shown

    def _count(self, r: ReadTxn, folder_id: int, counts: dict[str, int]) -> None:
        counts["tombstones"] += sum(1 for _ in tables.tombstones_in(r, folder_id))
        for _, child_id, is_folder in r.children(folder_id):
            if is_folder:
                self._count(r, child_id, counts)
            elif r.txn.get(u64(child_id), db=r.dbs["refs"]) is not None:
                item = r.node(child_id)
                counts["in_bucket"] += isinstance(item, Item) and item.blob is None

    def tombstones(self, actor: Actor, folder: str) -> list[tuple[str, Item]]:
        with self.meta.read() as r:
            node = self.service._resolve(r, split_path(folder))
            if not isinstance(node, Folder):
                raise NotAFolder("not a folder", folder)
            found = []
            for name, item_id in tables.tombstones_in(r, node.id):
                item = r.node(item_id)
                if isinstance(item, Item):
                    found.append((name, item))
            return found

    # ------------------------------------------------------------- removal

    def forget(self, w: WriteTxn, item_id: int) -> None:
        """An item is deleted: its reference goes with it."""
        tables.drop_reference(w, item_id)

    def drop_folder(self, w: WriteTxn, folder: Folder, changes: BlobChanges) -> None:
        """A folder is deleted: its tombstones and its cloud sync go with it."""
        for name, item_id in list(tables.tombstones_in(w, folder.id)):
            tables.drop_tombstone(w, folder.id, name)
            tables.drop_reference(w, item_id)
            item = w.node(item_id)
            w.delete_node(item_id)
            if isinstance(item, Item) and item.blob and w.drop_blob_ref(item.blob) == 0:
                changes.obsolete.append(item.blob)
        tables.drop_cloud_sync(w, folder.id)

    # ------------------------------------------------------------- tombstones (sync)

    def tombstone(self, w: WriteTxn, item: Item) -> None:
        """The object is gone from the bucket: the item leaves the tree, search and its
        Datasets (which are remembered), and is kept under its folder's tombstones."""
        service = self.service
        ref = tables.reference(w, item.id) or {}
        kept = [d for d in w.datasets_of(item.id) if not (w.link_in(d, item.id) or (False,))[0]]
        for dataset_id in w.datasets_of(item.id):
            service._unlink_item(w, dataset_id, item)
        w.unlink(item.parent, item.name)
        w.unindex_name(item.id, item.name)
        tables.put_tombstone(w, item.parent, item.name, item.id)
        tables.put_reference(w, item.id, {**ref, "tombstone": True, "datasets": kept})
        parent = w.node(item.parent)
        if isinstance(parent, Folder):
            service._touch(parent, time.time_ns())
            w.put_node(parent)

    def restore(self, w: WriteTxn, item: Item, name: str) -> Item:
        """The object is back: the item returns (under a free name) to its folder and Datasets."""
        service = self.service
        ref = tables.reference(w, item.id) or {}
        tables.drop_tombstone(w, item.parent, name)
        parent = w.node(item.parent)
        assert isinstance(parent, Folder)
        item.name = self.free_name(w, parent, name)
        item.ctime_ns = time.time_ns()
        w.put_node(item)
        w.link(parent.id, item.name, item.id, False)
        w.index_name(item.id, item.name)
        service._touch(parent, item.ctime_ns)
        w.put_node(parent)
        for dataset_id in ref.get("datasets", []):
            if w.collection(dataset_id) is not None:
                service._link_item(w, dataset_id, item, item.name, by_sync=False)
        service._resync_item(w, item)
        tables.put_reference(w, item.id, {k: v for k, v in ref.items() if k not in ("tombstone", "datasets")})
        return item
