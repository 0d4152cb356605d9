"""Datasets and Projects: the rules of "Linked to" (mixed into FilesService).

- A Dataset is a list of links to items, each under a view name that is unique in
  the Dataset and stable: it is chosen when the file joins (the file's name, or the
  name given to `ln`; a taken name gets the item id before its extension) and does
  not change while the file stays. One item may be in many Datasets; `st_nlink` is
  1 + their number.
- A synced Dataset's files are its folder's files, subfolders included. Its links are
  kept by the service: a file created in or moved into the folder joins, one moved
  out of it or deleted leaves. DICOM slices are never linked on their own: their
  series item is. A mirrored Dataset is a synced one made together with its folder;
  upgrading it leaves a plain folder and a standard Dataset with the same files.
- A Project has Datasets attached, holds nothing else, and shows their files read-only.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from encfs.access.roles import Role
from encfs.actions import action, dataset_path, listed, project_path
from encfs.errors import AlreadyExists, Busy, FolderNotEmpty, InvalidInput, NotAFolder, NotFound, NotPermitted
from encfs.meta.store import ReadTxn, WriteTxn
from encfs.metadata import check_description
from encfs.model import ROOT_ID, Actor, Dataset, Folder, Item, Kind, Project
from encfs.names import check_name, split_path, tagged_name

if TYPE_CHECKING:
    from encfs.service import FilesService

log = logging.getLogger("encfs")

DATASET, PROJECT = b"d", b"p"
LABELS = {DATASET: ("Dataset", "/.datasets"), PROJECT: ("Project", "/.projects")}
DUPLICATE_POLICIES = ("skip", "fail")


def view_name_for(name: str, item_id: int, n: int = 2) -> str:
    """A second file called `chicken.mp4` in one view is `chicken~17.mp4` (and if that is
    taken too, `chicken~17~3.mp4`), never longer than a name can be."""
    return tagged_name(name, f"~{item_id}" if n == 2 else f"~{item_id}~{n}")


def is_slice(item: Item) -> bool:
    """DICOM slices are linked through their series, never on their own."""
    return item.media.kind == Kind.DICOM_FILE and item.dicom is not None


class Datasets:
    """Mixed into FilesService: uses its store, resolution and transactions."""

    # ------------------------------------------------------------------ reading

    def _collection(self: FilesService, r: ReadTxn, kind: bytes, name: str) -> Dataset | Project:
        found = r.collection_id(kind, name)
        collection = r.collection(found) if found is not None else None
        if collection is None:
            label, root = LABELS[kind]
            raise NotFound(f"no {label} is named '{name}'", f"{root}/{name}")
        return collection

    def _dataset(self: FilesService, r: ReadTxn, name: str) -> Dataset:
        return self._collection(r, DATASET, name)  # type: ignore[return-value]

    def _project(self: FilesService, r: ReadTxn, name: str) -> Project:
        return self._collection(r, PROJECT, name)  # type: ignore[return-value]

    def _named(self: FilesService, r: ReadTxn, ids: Iterable[int]) -> list[str]:
        names = [c.name for c in (r.collection(i) for i in ids) if c is not None]
        return sorted(names)

    def linked_to(self: FilesService, r: ReadTxn, item_id: int, actor: Actor) -> tuple[list[str], list[str]]:
        """The names of the Datasets holding the item, and of the Projects they reach,
        that the caller has a role on."""
        dataset_ids = self.access.visible_collections(r, actor, r.datasets_of(item_id))
        project_ids = {p for d in dataset_ids for p in r.projects_of(d)}
        projects = self.access.visible_collections(r, actor, list(project_ids))
        return self._named(r, dataset_ids), self._named(r, projects)

    def _shown_collection(self: FilesService, r: ReadTxn, actor: Actor, kind: bytes, name: str,
                          needed: Role = Role.VIEWER, doing: str = "this") -> Dataset | Project:
        """A Dataset or Project the caller has `needed` on (NotFound when they have no role)."""
        collection = self._collection(r, kind, name)
        label, root = LABELS[kind]
        self.access.require_collection(r, actor, collection.id, needed, label, doing, f"{root}/{name}")
        return collection

    def list_datasets(self: FilesService, actor: Actor) -> list[dict[str, Any]]:
        with self.meta.read() as r:
            return [
                self._dataset_summary(r, self._dataset(r, name))
                for name, found in r.collection_names(DATASET) if self.access.sees_collection(r, actor, found)
            ]

    def dataset_summary(self: FilesService, actor: Actor, name: str) -> dict[str, Any]:
        with self.meta.read() as r:
            return self._dataset_summary(r, self._shown_collection(r, actor, DATASET, name))  # type: ignore[arg-type]

    def _dataset_summary(self: FilesService, r: ReadTxn, dataset: Dataset) -> dict[str, Any]:
        folder = self._path(r, dataset.synced_folder, {}) if dataset.synced_folder is not None else None
        return {"name": dataset.name, "description": dataset.description,
                "files": sum(1 for _ in r.links_of(dataset.id)), "synced_folder": folder,
                "mirrored": dataset.mirrored, "projects": self._named(r, r.projects_of(dataset.id))}

    def collection_info(self: FilesService, actor: Actor, parts: list[str]) -> dict[str, Any]:
        """`encfs info /.datasets/D` or `/.projects/P`."""
        with self.meta.read() as r:
            self._check_sees_view(r, actor, parts)
            if parts[0] == ".datasets":
                return {"type": "dataset", **self._dataset_summary(r, self._dataset(r, parts[1]))}
            project = self._project(r, parts[1])
            return {"type": "project", "name": project.name, "description": project.description,
                    "datasets": self._named(r, r.attached_to(project.id))}

    def dataset_files(self: FilesService, actor: Actor, name: str) -> list[tuple[str, str]]:
        """(view name, Files path) of the Dataset's files, by view name."""
        with self.meta.read() as r:
            dataset = self._shown_collection(r, actor, DATASET, name)
            paths: dict[int, str] = {}
            return [
                (view, self._path_cached(r, item_id, paths)) for view, item_id in r.view_entries(dataset.id)
                if self.access.sees_file(r, actor, r.node(item_id))  # type: ignore[arg-type]
            ]

    def _path_cached(self: FilesService, r: ReadTxn, item_id: int, folders: dict[int, str]) -> str:
        item = r.node(item_id)
        return "?" if item is None else self._child_path(r, item.parent, item.name, folders)

    def list_projects(self: FilesService, actor: Actor) -> list[dict[str, Any]]:
        with self.meta.read() as r:
            projects = [self._project(r, name) for name, found in r.collection_names(PROJECT)
                        if self.access.sees_collection(r, actor, found)]
            return [{"name": p.name, "description": p.description,
                     "datasets": self._named(r, r.attached_to(p.id))} for p in projects]

    def datasets_under(self: FilesService, actor: Actor, path: str) -> list[str]:
        """The Datasets holding the file, or any file under the folder."""
        with self.meta.read() as r:
            node = self._node_at(r, path, actor, "seeing which Datasets hold it")
            items = self._items_below(r, node.id) if isinstance(node, Folder) else [node]
            seen = [item for item in items if self.access.sees_file(r, actor, item)]
            found = {d for item in seen for d in r.datasets_of(item.id)}
            return self._named(r, self.access.visible_collections(r, actor, list(found)))

    def synced_datasets_of_folder(self: FilesService, r: ReadTxn, folder_id: int) -> list[str]:
        return self._named(r, r.synced_with(folder_id))

    # ------------------------------------------------------------------ Datasets

    def _new_collection_fields(
        self: FilesService, w: WriteTxn, actor: Actor, kind: bytes, name: str, description: str
    ) -> dict[str, Any]:
        self._check_name_free(w, kind, name)
        check_description(description, f"{LABELS[kind][1]}/{name}")
        now = time.time_ns()
        return dict(id=w.next_id(), name=name, description=description, owner=actor.name, uid=actor.uid,
                    gid=actor.gid, created_ns=now, mtime_ns=now)

    def _check_name_free(self: FilesService, r: ReadTxn, kind: bytes, name: str) -> None:
        label, root = LABELS[kind]
        path = f"{root}/{name}"
        check_name(name)
        if name.startswith("."):
            raise InvalidInput("Dataset and Project names cannot start with '.'", path)
        if r.collection_id(kind, name) is not None:
            raise AlreadyExists(f"a {label} named '{name}' exists", path)

    @action("dataset create", where=lambda a: [
        dataset_path(a["name"]), *listed(a.get("add")),
        a.get("sync") or ("/" + a["name"] if a.get("mirrored") else None)])
    def create_dataset(
        self: FilesService, actor: Actor, name: str, description: str = "", add: Iterable[str] = (),
        sync: str | None = None, mirrored: bool = False, duplicates: str = "skip",
    ) -> Dataset:
        """A new Dataset: standard (optionally with files added), synced with an existing
        folder, or mirrored (made together with its folder `/NAME` or `sync`)."""
        with self.meta.write() as w:
            self.access.require_member(w, actor, "create a Dataset", f"/.datasets/{name}")
            dataset = Dataset(**self._new_collection_fields(w, actor, DATASET, name, description))
            self.access.collection_created(w, actor, dataset.id)
            w.name_collection(DATASET, name, dataset.id)
            if mirrored:
                folder = self._make_folder(w, actor, sync or "/" + name, 0o755, description, None)
                self._start_sync(w, dataset, folder)
                dataset.mirrored = True
            elif sync is not None:
                self._start_sync(w, dataset, self._folder_at(w, sync, name, actor))
            if add:
                if dataset.synced_folder is not None:
                    raise InvalidInput("a synced Dataset holds its folder's files; files cannot be added too",
                                       f"/.datasets/{name}")
                self._add_items(w, dataset, self._items_at(w, add, actor), duplicates)
            w.put_collection(dataset)
        return dataset

    def _node_at(self: FilesService, r: ReadTxn, path: str, actor: Actor,
                 doing: str = "linking files into a Dataset") -> Folder | Item:
        """The file or folder at a Files path, which the caller may view; a missing one
        is named whole."""
        try:
            node = self._resolve(r, split_path(path))
            self.access.check_sees(r, actor, node.id, path)
        except NotFound as exc:
            raise NotFound(f"{path} is not a file or folder in Files", exc.path) from None
        self.access.require_on(r, actor, node, Role.VIEWER, doing, path)
        return node

    def _folder_at(self: FilesService, r: ReadTxn, path: str, dataset_name: str, actor: Actor) -> Folder:
        """The folder a Dataset is to be synced with."""
        node = self._node_at(r, path, actor)
        if not isinstance(node, Folder):
            raise NotAFolder(f"{path} is not a folder; a synced Dataset follows a folder",
                             f"/.datasets/{dataset_name}")
        if node.id == ROOT_ID:
            raise InvalidInput("the root cannot be synced with a Dataset; choose a folder",
                               f"/.datasets/{dataset_name}")
        return node

    @action("dataset rename", where=lambda a: [dataset_path(a["name"]), dataset_path(a["new_name"])])
    def rename_dataset(self: FilesService, actor: Actor, name: str, new_name: str) -> Dataset:
        return self._rename_collection(actor, DATASET, name, new_name)  # type: ignore[return-value]

    def _rename_collection(self: FilesService, actor: Actor, kind: bytes, name: str,
                           new_name: str) -> Dataset | Project:
        with self.meta.write() as w:
            collection = self._shown_collection(w, actor, kind, name, Role.ADMIN, "renaming it")
            if new_name == name:
                return collection
            self._check_name_free(w, kind, new_name)
            w.name_collection(kind, name, None)
            w.name_collection(kind, new_name, collection.id)
            collection.name, collection.mtime_ns = new_name, time.time_ns()
            w.put_collection(collection)
        return collection

    @action("dataset rm", where=lambda a: [dataset_path(a["name"])])
    def delete_dataset(
        self: FilesService, actor: Actor, name: str, force: bool = False, only_if_empty: bool = False
    ) -> int:
        """Delete a Dataset; its files stay in Files. Refused while a Project uses it,
        unless forced (it is then detached). Returns the number of links dropped."""
        path = f"/.datasets/{name}"
        with self.meta.write(reserve=True) as w:
            dataset = self._shown_collection(w, actor, DATASET, name, Role.ADMIN, "deleting it")
            projects = self._named(w, w.projects_of(dataset.id))
            if projects and not force:
                raise Busy(f"Dataset '{name}' is attached to Project {', '.join(projects)}; detach it first "
                           "or delete it with encfs dataset rm --force", path)
            if only_if_empty and dataset.synced_folder is None and next(w.links_of(dataset.id), None):
                raise FolderNotEmpty(f"Dataset '{name}' holds files; remove them, or delete it with "
                                     "encfs dataset rm (the files stay in their folders)", path)
            for project_id in w.projects_of(dataset.id):
                w.set_attached(project_id, dataset.id, False)
            dropped = self._drop_links(w, dataset)
            if dataset.synced_folder is not None:
                w.set_synced(dataset.synced_folder, dataset.id, False)
            w.name_collection(DATASET, name, None)
            w.delete_collection(dataset.id)
            self.access.removed(w, dataset.id)
        return dropped

    def _drop_links(self: FilesService, w: WriteTxn, dataset: Dataset) -> int:
        links = list(w.links_of(dataset.id))
        for item_id, _, _ in links:
            item = w.node(item_id)
            if isinstance(item, Item):
                self._unlink_item(w, dataset.id, item)
        return len(links)

    @action("dataset add", where=lambda a: [dataset_path(a["name"]), *listed(a.get("paths"))])
    def add_to_dataset(
        self: FilesService, actor: Actor, name: str, paths: Iterable[str], duplicates: str = "skip"
    ) -> tuple[int, int]:
        """Link files (folders: everything in them) into a Dataset in one transaction.
        Returns (added, already there)."""
        with self.meta.write() as w:
            dataset = self._shown_collection(w, actor, DATASET, name, Role.ADMIN, "adding files")
            added, skipped = self._add_items(w, dataset, self._items_at(w, paths, actor), duplicates)
            dataset.mtime_ns = time.time_ns()
            w.put_collection(dataset)
        return added, skipped

    def _items_at(self: FilesService, r: ReadTxn, paths: Iterable[str], actor: Actor) -> list[Item]:
        """The items named, folders taken recursively (a DICOM series stands for its
        slices there); a slice named on its own is refused."""
        items: list[Item] = []
        for path in paths:
            node = self._node_at(r, path, actor)
            if isinstance(node, Folder):
                items.extend(i for i in self._items_below(r, node.id) if not is_slice(i))
            else:
                self._check_linkable(node, path)
                items.append(node)
        return items

    def _items_below(self: FilesService, r: ReadTxn, folder_id: int) -> Iterator[Item]:
        for _, child_id, is_folder in list(r.children(folder_id)):
            if is_folder:
                yield from self._items_below(r, child_id)
            else:
                item = r.node(child_id)
                if isinstance(item, Item):
                    yield item

    def _check_linkable(self: FilesService, item: Item, path: str) -> None:
        if not isinstance(item, Item):
            raise NotPermitted("only files join Datasets; symbolic links, FIFOs, sockets and devices "
                               "stay in their folder", path)
        if is_slice(item):
            raise NotPermitted("a DICOM slice is linked through its series: link the folder's "
                               ".dcmseries file", path)

    def _add_items(
        self: FilesService, w: WriteTxn, dataset: Dataset, items: list[Item], duplicates: str
    ) -> tuple[int, int]:
        path = f"/.datasets/{dataset.name}"
        if duplicates not in DUPLICATE_POLICIES:
            raise InvalidInput(f"duplicates policy is one of {', '.join(DUPLICATE_POLICIES)}", path)
        self._check_not_synced(dataset, "add files to it")
        unique = list({item.id: item for item in items}.values())
        present = [item for item in unique if w.link_in(dataset.id, item.id) is not None]
        if present and duplicates == "fail":
            raise AlreadyExists(f"{len(present)} of the files are already in Dataset '{dataset.name}' "
                                f"(first: {self._path(w, present[0].id, {})}); nothing was added", path)
        for item in unique:
            self._link_item(w, dataset.id, item, item.name, by_sync=False)
        return len(unique) - len(present), len(present)

    def _check_not_synced(self: FilesService, dataset: Dataset, doing: str) -> None:
        if dataset.synced_folder is not None:
            raise NotPermitted(f"Dataset '{dataset.name}' is synced with a folder: to {doing}, change the "
                               "folder's files, or turn sync off (encfs dataset unsync)",
                               f"/.datasets/{dataset.name}")

    def link_into_dataset(
        self: FilesService, actor: Actor, source: str, dataset_name: str, view_name: str
    ) -> None:
        """`ln FOLDER/FILE /.datasets/NAME/VIEW`: the same item joins the Dataset."""
        path = f"/.datasets/{dataset_name}/{view_name}"
        check_name(view_name)
        with self.meta.write() as w:
            dataset = self._shown_collection(w, actor, DATASET, dataset_name, Role.ADMIN, "adding files")
            node = self._node_at(w, source, actor)
            if isinstance(node, Folder):
                raise NotPermitted("a folder cannot be hard-linked; link its files, or use encfs dataset add "
                                   "(folders are taken whole) or a synced Dataset (ln -s)", source)
            self._check_linkable(node, source)
            self._check_not_synced(dataset, "add files to it")
            if w.link_in(dataset.id, node.id) is not None:
                raise AlreadyExists(f"the file is already in Dataset '{dataset_name}'", path)
            self._link_item(w, dataset.id, node, view_name, by_sync=False)
            dataset.mtime_ns = time.time_ns()
            w.put_collection(dataset)

    @action("dataset remove", where=lambda a: [dataset_path(a["name"]), *listed(a.get("paths"))])
    def remove_from_dataset(self: FilesService, actor: Actor, name: str, paths: Iterable[str]) -> int:
        """Take files out of one Dataset (they stay in Files and other Datasets);
        every path must be in the Dataset, or nothing is removed."""
        with self.meta.write(reserve=True) as w:
            dataset = self._shown_collection(w, actor, DATASET, name, Role.ADMIN, "removing files")
            self._check_not_synced(dataset, "remove files from it")
            items = []
            for path in paths:
                node = self._resolve(w, split_path(path))
                if not isinstance(node, Item) or w.link_in(dataset.id, node.id) is None:
                    raise NotFound(f"not in Dataset '{name}'", path)
                items.append(node)
            for item in items:
                fresh = w.node(item.id)
                if isinstance(fresh, Item):
                    self._unlink_item(w, dataset.id, fresh)
            dataset.mtime_ns = time.time_ns()
            w.put_collection(dataset)
        return len(items)

    def _link_item(
        self: FilesService, w: WriteTxn, dataset_id: int, item: Item, wanted: str, by_sync: bool
    ) -> bool:
        """Put the item in the Dataset under a free view name; False if it was there."""
        found = w.link_in(dataset_id, item.id)
        if found is not None:
            if found[0] != by_sync:
                w.put_link(dataset_id, item.id, by_sync, found[1])
            return False
        name, n = wanted, 2
        while w.view_item(dataset_id, name) is not None:
            name = view_name_for(wanted, item.id, n)
            n += 1
        w.put_link(dataset_id, item.id, by_sync, name)
        item.datasets += 1
        item.ctime_ns = time.time_ns()
        w.put_node(item)
        return True

    def _unlink_item(self: FilesService, w: WriteTxn, dataset_id: int, item: Item) -> None:
        if w.link_in(dataset_id, item.id) is None:
            return
        w.delete_link(dataset_id, item.id)
        item.datasets = max(0, item.datasets - 1)
        item.ctime_ns = time.time_ns()
        w.put_node(item)

    def relink_in_datasets(
        self: FilesService, w: WriteTxn, source: Dataset, item: Item, target: Dataset, view_name: str,
        path: str,
    ) -> None:
        """`mv /.datasets/A/x /.datasets/B/y`: a new view name, or the link moves to B."""
        check_name(view_name)
        self._check_not_synced(source, "change its files")
        self._check_not_synced(target, "add files to it")
        holder = w.view_item(target.id, view_name)
        if holder is not None and holder != item.id:
            raise AlreadyExists(f"Dataset '{target.name}' already shows another file as '{view_name}'", path)
        if target.id != source.id and w.link_in(target.id, item.id) is not None:
            raise AlreadyExists(f"the file is already in Dataset '{target.name}'", path)
        self._unlink_item(w, source.id, item)
        self._link_item(w, target.id, item, view_name, by_sync=False)

    # ------------------------------------------------------------------ sync

    @action("dataset sync", where=lambda a: [dataset_path(a["name"]), a.get("folder")])
    def set_sync(self: FilesService, actor: Actor, name: str, folder: str | None) -> Dataset:
        """Sync a Dataset with a folder (its files become the folder's), or with None
        turn sync off: the files stay, as ordinary links."""
        path = f"/.datasets/{name}"
        with self.meta.write() as w:
            dataset = self._shown_collection(w, actor, DATASET, name, Role.ADMIN, "changing its sync")
            if folder is None:
                if dataset.mirrored:
                    raise NotPermitted(f"Dataset '{name}' is mirrored; encfs dataset upgrade turns it into a "
                                       "plain folder and a standard Dataset", path)
                self._stop_sync(w, dataset)
            else:
                self._sync_existing(w, dataset, self._folder_at(w, folder, name, actor), path)
            w.put_collection(dataset)
        return dataset

    def _sync_existing(self: FilesService, w: WriteTxn, dataset: Dataset, folder: Folder, path: str) -> None:
        if dataset.synced_folder == folder.id:
            return
        if dataset.synced_folder is not None:
            raise AlreadyExists(f"Dataset '{dataset.name}' is synced with "
                                f"{self._path(w, dataset.synced_folder, {})}; turn sync off first", path)
        inside = {i.id for i in self._items_below(w, folder.id)}
        outside = [item_id for item_id, _, _ in w.links_of(dataset.id) if item_id not in inside]
        if outside:
            raise FolderNotEmpty(f"Dataset '{dataset.name}' holds {len(outside)} files outside "
                                 f"{self._path(w, folder.id, {})} (first: {self._path(w, outside[0], {})}); "
                                 "a synced Dataset holds its folder's files only", path)
        self._start_sync(w, dataset, folder)

    def _start_sync(self: FilesService, w: WriteTxn, dataset: Dataset, folder: Folder) -> None:
        dataset.synced_folder = folder.id
        dataset.mtime_ns = time.time_ns()
        w.set_synced(folder.id, dataset.id, True)
        for item in self._items_below(w, folder.id):
            if not is_slice(item):
                self._link_item(w, dataset.id, item, item.name, by_sync=True)

    def _stop_sync(self: FilesService, w: WriteTxn, dataset: Dataset) -> None:
        if dataset.synced_folder is None:
            return
        w.set_synced(dataset.synced_folder, dataset.id, False)
        for item_id, _, view in list(w.links_of(dataset.id)):
            w.put_link(dataset.id, item_id, False, view)
        dataset.synced_folder, dataset.mirrored, dataset.mtime_ns = None, False, time.time_ns()

    @action("dataset upgrade", where=lambda a: [dataset_path(a["name"])])
    def upgrade_dataset(self: FilesService, actor: Actor, name: str) -> Dataset:
        """A mirrored Dataset becomes a plain folder and a standard Dataset of the same files."""
        with self.meta.write() as w:
            dataset = self._shown_collection(w, actor, DATASET, name, Role.ADMIN, "upgrading it")
            if not dataset.mirrored:
                raise InvalidInput(f"Dataset '{name}' is not mirrored; only mirrored Datasets are upgraded",
                                   f"/.datasets/{name}")
            dataset.mirrored = False
            self._stop_sync(w, dataset)
            w.put_collection(dataset)
        return dataset

    def _synced_above(self: FilesService, r: ReadTxn, folder_id: int) -> set[int]:
        """The Datasets synced with this folder or any folder above it."""
        found: set[int] = set()
        current = folder_id
        while True:
            found.update(r.synced_with(current))
            node = r.node(current) if current != ROOT_ID else None
            if node is None:
                return found
            current = node.parent

    def _resync_item(self: FilesService, w: WriteTxn, item: Item, why: str = "") -> None:
        """Make the item's sync links match the synced folders above it (after it was
        created, moved, or became a DICOM slice)."""
        if not w.any_synced():
            return
        wanted = set() if is_slice(item) else self._synced_above(w, item.parent)
        current = {d for d in w.datasets_of(item.id) if (w.link_in(d, item.id) or (False,))[0]}
        for dataset_id in current - wanted:
            self._unlink_item(w, dataset_id, item)
            if why:
                dataset = w.collection(dataset_id)
                log.info("%s %s: it left synced Dataset '%s'", why, self._path(w, item.id, {}),
                         dataset.name if dataset else dataset_id)
        for dataset_id in wanted - current:
            self._link_item(w, dataset_id, item, item.name, by_sync=True)

    def _resync_folder(self: FilesService, w: WriteTxn, folder: Folder, old_parent: int, why: str) -> None:
        """A moved folder's files follow the synced folders above its new place; when
        those are the same as above the old place (most moves), nothing is walked."""
        if not w.any_synced() or self._synced_above(w, old_parent) == self._synced_above(w, folder.parent):
            return
        for item in self._items_below(w, folder.id):
            self._resync_item(w, item, why)

    def _unlink_everywhere(self: FilesService, w: WriteTxn, item: Item) -> None:
        """A deleted item leaves every Dataset."""
        for dataset_id in w.datasets_of(item.id):
            w.delete_link(dataset_id, item.id)

    def _unsync_deleted_folder(self: FilesService, w: WriteTxn, folder: Folder) -> None:
        """A deleted synced folder leaves its Dataset standard (and empty)."""
        for dataset_id in w.synced_with(folder.id):
            dataset = w.collection(dataset_id)
            w.set_synced(folder.id, dataset_id, False)
            if isinstance(dataset, Dataset):
                dataset.synced_folder, dataset.mirrored, dataset.mtime_ns = None, False, time.time_ns()
                w.put_collection(dataset)
                log.info("folder %s was deleted: Dataset '%s' is no longer synced", folder.name, dataset.name)

    def datasets_left_by_move(self: FilesService, actor: Actor, source: str, target_folder: str) -> list[str]:
        """The synced Datasets that the files under `source` would leave if it moved
        into `target_folder` (the CLI asks before such a move). Folders synced inside
        a moved folder move with it, so only the folders above count."""
        with self.meta.read() as r:
            if not r.any_synced():
                return []
            node = self._resolve(r, split_path(source))
            self.access.check_sees(r, actor, node.id, source)
            target = self._resolve(r, split_path(target_folder))
            if not isinstance(target, Folder):
                return []
            return self._named(r, self._synced_above(r, node.parent) - self._synced_above(r, target.id))

    # ------------------------------------------------------------------ Projects

    @action("project create", where=lambda a: [
        project_path(a["name"]), *(dataset_path(d) for d in listed(a.get("datasets")))])
    def create_project(
        self: FilesService, actor: Actor, name: str, description: str = "", datasets: Iterable[str] = ()
    ) -> Project:
        with self.meta.write() as w:
            self.access.require_member(w, actor, "create a Project", f"/.projects/{name}")
            project = Project(**self._new_collection_fields(w, actor, PROJECT, name, description))
            self.access.collection_created(w, actor, project.id)
            w.name_collection(PROJECT, name, project.id)
            w.put_collection(project)
            for dataset_name in datasets:
                w.set_attached(project.id, self._shown_collection(w, actor, DATASET, dataset_name).id, True)
        return project

    @action("project rename", where=lambda a: [project_path(a["name"]), project_path(a["new_name"])])
    def rename_project(self: FilesService, actor: Actor, name: str, new_name: str) -> Project:
        return self._rename_collection(actor, PROJECT, name, new_name)  # type: ignore[return-value]

    @action("project rm", where=lambda a: [project_path(a["name"])])
    def delete_project(self: FilesService, actor: Actor, name: str, only_if_empty: bool = False) -> None:
        """Delete a Project; its Datasets and files stay."""
        with self.meta.write(reserve=True) as w:
            project = self._shown_collection(w, actor, PROJECT, name, Role.ADMIN, "deleting it")
            attached = w.attached_to(project.id)
            if attached and only_if_empty:
                raise FolderNotEmpty(f"Project '{name}' has Datasets attached "
                                     f"({', '.join(self._named(w, attached))}); detach them first, or use "
                                     "encfs project rm", f"/.projects/{name}")
            for dataset_id in attached:
                w.set_attached(project.id, dataset_id, False)
            w.name_collection(PROJECT, name, None)
            w.delete_collection(project.id)
            self.access.removed(w, project.id)

    @action("project attach", where=lambda a: [f"/.projects/{a['project_name']}/{a['dataset_name']}"])
    def attach_dataset(self: FilesService, actor: Actor, project_name: str, dataset_name: str) -> None:
        self._set_attachment(actor, project_name, dataset_name, attached=True)

    @action("project detach", where=lambda a: [f"/.projects/{a['project_name']}/{a['dataset_name']}"])
    def detach_dataset(self: FilesService, actor: Actor, project_name: str, dataset_name: str) -> None:
        self._set_attachment(actor, project_name, dataset_name, attached=False)

    def _set_attachment(self: FilesService, actor: Actor, project_name: str, dataset_name: str,
                        attached: bool) -> None:
        path = f"/.projects/{project_name}/{dataset_name}"
        with self.meta.write(reserve=not attached) as w:
            project = self._shown_collection(w, actor, PROJECT, project_name, Role.ADMIN,
                                             "attaching Datasets")
            dataset = self._shown_collection(w, actor, DATASET, dataset_name)
            if (dataset.id in w.attached_to(project.id)) == attached:
                state = "already attached" if attached else "not attached"
                error = AlreadyExists if attached else NotFound
                raise error(f"Dataset '{dataset_name}' is {state} to Project '{project_name}'", path)
            w.set_attached(project.id, dataset.id, attached)
            project.mtime_ns = time.time_ns()
            w.put_collection(project)

    def set_collection_description(self: FilesService, actor: Actor, kind: bytes, name: str,
                                   description: str) -> None:
        with self.meta.write() as w:
            collection = self._shown_collection(w, actor, kind, name, Role.ADMIN, "describing it")
            collection.description, collection.mtime_ns = description, time.time_ns()
            w.put_collection(collection)
