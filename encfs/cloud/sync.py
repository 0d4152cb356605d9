"""Cloud-synced folders: a folder that mirrors a bucket prefix, fixed at creation.

A sync lists the prefix and compares it with the folder's items that refer to it:

- an object not seen before becomes an item (kept in the folders of its key);
- an item whose object is gone becomes a tombstone (hidden from the tree, search and
  Datasets; `encfs ls --tombstones` lists it), and is restored if the object returns;
- an item whose object changed (ETag or size) refers to the new version, re-probed;
- `NAME.metadata.json` objects are NAME's client metadata, not items;
- DICOM files are refused, as in Encord (series, groups and sequences are not synced
  there); the rest of the sync goes on and the refusal is reported.

An item written through the mount since it was synced keeps the content written
(it is the store's own now) and is left alone.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from encfs.cloud.integrations import ObjectUrl, check, parse_url
from encfs.cloud.items import NewReference
from encfs.cloud.listing import Listed, list_objects, read_sidecar, split_sidecars
from encfs.cloud.probing import Found, examine
from encfs.errors import EncfsError, InvalidInput, NotPermitted
from encfs.meta import cloud as tables
from encfs.meta.store import ReadTxn
from encfs.model import Actor, Folder, Item, Kind
from encfs.names import check_name

if TYPE_CHECKING:
    from encfs.service import FilesService

log = logging.getLogger("encfs")
WORKERS = 16
NOT_SYNCED = {Kind.DICOM_FILE: "DICOM files", Kind.DICOM_SERIES: "DICOM series",
              Kind.IMAGE_GROUP: "image groups", Kind.IMAGE_SEQUENCE: "image sequences"}


@dataclass
class SyncOutcome:
    folder: str
    added: int = 0
    updated: int = 0
    tombstoned: int = 0
    restored: int = 0
    unchanged: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)  # (url, reason)


@dataclass
class Known:
    """An item of the folder that refers to an object of the prefix."""

    item: Item
    ref: dict[str, Any]
    tombstone_name: str | None  # its name while a tombstone


def create_synced_folder(service: FilesService, actor: Actor, path: str, url: str, integration_name: str,
                         description: str = "", metadata: dict[str, Any] | None = None) -> Folder:
    """A new folder that mirrors s3://BUCKET/PREFIX through the integration (checked first)."""
    integration = service.cloud.integration(integration_name)
    where = parse_url(url, "cloud-sync URL")
    prefix = where.key if not where.key or where.key.endswith("/") else where.key + "/"
    if not integration.covers(ObjectUrl(where.bucket, prefix)):
        raise InvalidInput(f"{url} is outside integration {integration.name} ({integration.url})", path)
    check(integration)
    with service.meta.write() as w:
        folder = service._make_folder(w, actor, path, 0o755, description, metadata)
        tables.put_cloud_sync(w, folder.id, {"integration": integration.name,
                                             "url": f"s3://{where.bucket}/{prefix}"})
    return folder


def cloud_sync_of(service: FilesService, folder: Folder) -> dict[str, Any] | None:
    with service.meta.read() as r:
        return tables.cloud_sync(r, folder.id)


def sync_folder(service: FilesService, actor: Actor, path: str) -> SyncOutcome:
    folder = service.lookup(actor, path)
    if not isinstance(folder, Folder):
        raise InvalidInput("not a folder", path)
    config = cloud_sync_of(service, folder)
    if config is None:
        raise InvalidInput("not a cloud-synced folder (create one with encfs folder create PATH "
                           "--cloud-sync s3://BUCKET/PREFIX --integration NAME)", path)
    return FolderSync(service, actor, path, folder, config).run()


def refuse_batch_in(service: FilesService, r: ReadTxn, folder_id: int, path: str) -> None:
    """Groups and sequences are not made inside a cloud-synced folder (as in Encord)."""
    current = folder_id
    while True:
        if tables.cloud_sync(r, current) is not None:
            raise NotPermitted("a cloud-synced folder holds images, videos, audio, PDF and text only; "
                               "image groups, sequences and DICOM series are not made there", path)
        node = r.node(current)
        if node is None or node.parent == current:
            return
        current = node.parent


class FolderSync:
    def __init__(self, service: FilesService, actor: Actor, path: str, folder: Folder,
                 config: dict[str, Any]) -> None:
        self.service = service
        self.actor = actor
        self.path = path
        self.folder = folder
        self.integration = service.cloud.integration(config["integration"])
        self.where = parse_url(config["url"])
        self.outcome = SyncOutcome(service.path_of(actor, folder.id))

    def run(self) -> SyncOutcome:
        listed = list(list_objects(self.integration, self.where))
        objects, sidecars = split_sidecars(listed)
        known = self._known()
        metadata = self._sidecar_metadata(sidecars)
        new, changed, back, same = [], [], [], []
        seen = set()
        for obj in objects:
            url = str(obj.url)
            seen.add(url)
            entry = known.get(url)
            if entry is None and self._nameable(obj):
                new.append(obj)
            elif entry is None:
                continue
            elif entry.item.blob is not None:
                self.outcome.unchanged += 1  # written through the mount: the store's own now
            elif entry.ref.get("etag") != obj.etag or entry.ref.get("size") != obj.size:
                changed.append((obj, entry))
            elif entry.tombstone_name is not None:
                back.append((obj, entry))
            else:
                same.append((obj, entry))
        found = self._examine([obj for obj in new] + [obj for obj, _ in changed])
        gone = [k for url, k in known.items() if url not in seen and k.tombstone_name is None
                and k.item.blob is None]
        self._add(new, found, metadata)
        self._apply(changed, back, same, gone, found, metadata)
        log.info("sync of %s: %d added, %d updated, %d tombstoned, %d restored, %d failed",
                 self.outcome.folder, self.outcome.added, self.outcome.updated, self.outcome.tombstoned,
                 self.outcome.restored, len(self.outcome.failures))
        return self.outcome

    def _nameable(self, obj: Listed) -> bool:
        try:
            for part in [*obj.folders, obj.name]:
                check_name(part)
        except EncfsError as exc:
            self._fail(str(obj.url), f"its key cannot be a name in Files: {exc.reason}")
            return False
        return True

    def _known(self) -> dict[str, Known]:
        """The folder's items (subfolders and tombstones included) that refer to objects."""
        found: dict[str, Known] = {}
        with self.service.meta.read() as r:
            stack = [self.folder.id]
            while stack:
                folder_id = stack.pop()
                for _, child_id, is_folder in r.children(folder_id):
                    if is_folder:
                        stack.append(child_id)
                        continue
                    ref = tables.reference(r, child_id)
                    item = r.node(child_id) if ref else None
                    if ref and isinstance(item, Item):
                        found[ref["url"]] = Known(item, ref, None)
                for name, item_id in tables.tombstones_in(r, folder_id):
                    ref = tables.reference(r, item_id)
                    item = r.node(item_id)
                    if ref and isinstance(item, Item):
                        found[ref["url"]] = Known(item, ref, name)
        return found

    def _sidecar_metadata(self, sidecars: dict[str, Listed]) -> dict[str, dict[str, Any]]:
        """Client metadata by the URL of the object each sidecar describes."""
        metadata = {}
        for relative, sidecar in sidecars.items():
            url = f"s3://{self.where.bucket}/{self.where.key}{relative}"
            try:
                metadata[url] = read_sidecar(self.integration, sidecar)
            except EncfsError as exc:
                self._fail(str(sidecar.url), exc.reason)
        return metadata

    def _examine(self, objects: list[Listed]) -> dict[str, Found]:
        results: dict[str, Found] = {}

        def one(obj: Listed) -> Found:
            found = examine(self.integration, obj.url, None, size=obj.size, etag=obj.etag)
            if found.media.kind in NOT_SYNCED:
                raise NotPermitted(f"{NOT_SYNCED[found.media.kind]} are not synced into a cloud-synced "
                                   "folder (as in Encord); import them with encfs import")
            return found

        with ThreadPoolExecutor(WORKERS) as pool:
            futures = [(obj, pool.submit(one, obj)) for obj in objects]
            for obj, future in futures:
                try:
                    results[str(obj.url)] = future.result()
                except EncfsError as exc:
                    self._fail(str(obj.url), exc.reason)
                except Exception as exc:
                    self._fail(str(obj.url), f"{type(exc).__name__}: {exc}")
        return results

    def _add(self, new: list[Listed], found: dict[str, Found], metadata: dict[str, dict[str, Any]]) -> None:
        planned = []
        for obj in new:
            result = found.get(str(obj.url))
            if result is not None:
                planned.append(NewReference(obj.folders, obj.name, self.integration.name, result.url,
                                            result.version, result.media, metadata.get(result.url, {}),
                                            None, obj.mtime_ns))
        for start in range(0, len(planned), 1000):
            self.service.cloud.add(self.actor, self.path, planned[start : start + 1000])
        self.outcome.added += len(planned)

    def _apply(self, changed: list[tuple[Listed, Known]], back: list[tuple[Listed, Known]],
               same: list[tuple[Listed, Known]], gone: list[Known], found: dict[str, Found],
               metadata: dict[str, dict[str, Any]]) -> None:
        """Updates, restores, tombstones and sidecar changes: one transaction."""
        cloud = self.service.cloud
        with self.service._changing() as (w, _):
            for obj, known in changed:
                result = found.get(str(obj.url))
                if result is None:
                    continue
                item = w.node(known.item.id)
                if not isinstance(item, Item):
                    continue
                if known.tombstone_name is not None:
                    item = cloud.restore(w, item, known.tombstone_name)
                    self.outcome.restored += 1
                item.size, item.media = result.version.size or 0, result.media
                item.mtime_ns = obj.mtime_ns
                item.ctime_ns = time.time_ns()
                item.client_metadata = metadata.get(str(obj.url), item.client_metadata)
                w.put_node(item)
                tables.put_reference(w, item.id, {**tables.reference(w, item.id),  # type: ignore[dict-item]
                                                  "etag": result.version.etag, "size": result.version.size})
                self.outcome.updated += 1
            for obj, known in back:
                item = w.node(known.item.id)
                if isinstance(item, Item):
                    item = cloud.restore(w, item, known.tombstone_name)  # type: ignore[arg-type]
                    self._take_metadata(w, item, metadata.get(str(obj.url)))
                    self.outcome.restored += 1
            for obj, known in same:
                item = w.node(known.item.id)
                if isinstance(item, Item) and self._take_metadata(w, item, metadata.get(str(obj.url))):
                    self.outcome.updated += 1
                else:
                    self.outcome.unchanged += 1
            for known in gone:
                item = w.node(known.item.id)
                if isinstance(item, Item):
                    cloud.tombstone(w, item)
                    self.outcome.tombstoned += 1

    @staticmethod
    def _take_metadata(w: Any, item: Item, metadata: dict[str, Any] | None) -> bool:
        if metadata is None or metadata == item.client_metadata:
            return False
        item.client_metadata = metadata
        item.ctime_ns = time.time_ns()
        w.put_node(item)
        return True

    def _fail(self, url: str, reason: str) -> None:
        self.outcome.failures.append((url, reason))
        log.warning("sync of %s: %s: %s", self.outcome.folder, url, reason)


def synced_folders(service: FilesService) -> list[str]:
    with service.meta.read() as r:
        ids = [folder_id for folder_id, _ in tables.cloud_synced_folders(r)]
    return [service.path_of(Actor.local(), folder_id) for folder_id in ids]


def sync_periodically(service: FilesService, seconds: float, stop: threading.Event) -> None:
    """The mount's --sync-every: sync every cloud-synced folder, then wait."""
    while not stop.wait(seconds):
        for path in synced_folders(service):
            try:
                sync_folder(service, Actor.from_ids(0, 0), path)
            except Exception as exc:
                log.error("sync of %s failed: %s", path, exc)


def parse_duration(text: str) -> float:
    """30s, 10m, 2h, 1d (or plain seconds)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value, unit = (text[:-1], text[-1]) if text and text[-1] in units else (text, "s")
    try:
        seconds = float(value) * units[unit]
    except ValueError:
        raise InvalidInput(f"{text!r} is not a duration (30s, 10m, 2h, 1d)") from None
    if seconds < 1:
        raise InvalidInput("the sync interval is at least 1s")
    return seconds




SYNC_EVERY_VARIABLE = "ENCFS_SYNC_EVERY"  # seconds; set by encfs mount --sync-every for its daemon
