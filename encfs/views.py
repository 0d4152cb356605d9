"""How Datasets and Projects look as a tree (mixed into FilesService).

    /.datasets/                   one entry per Dataset (reachable by name, not listed at /)
    /.datasets/D/                 a standard Dataset: its files by view name, the same items
    /.datasets/S -> ../FOLDER     a synced or mirrored Dataset: a symlink to its folder
    /.datasets/.readonly/D/       the same files, read-only (hidden; what Projects show)
    /.projects/P/                 one entry per attached Dataset:
    /.projects/P/D -> ../../.datasets/.readonly/D

Each system call on these paths becomes one Dataset or Project action: `mkdir` and
`rmdir` create and delete, `ln` adds a file, `rm` takes it out of the Dataset, `ln -s`
syncs a new Dataset with a folder or attaches a Dataset to a Project (and `rm` of
that link turns it back), `mv` renames. An attachment is a symlink because the
kernel requires `symlink(2)` to make one; it points at the read-only view, so that a
Project shows its Datasets' files read-only (EROFS).
"""

from __future__ import annotations

import stat
import time
import zlib
from typing import TYPE_CHECKING

from encfs.access.roles import Role
from encfs.datasets import DATASET, PROJECT
from encfs.errors import InvalidInput, NotFound, NotPermitted, ReadOnly
from encfs.meta.store import ReadTxn
from encfs.model import ROOT_ID, Actor, Attributes, Collection, Folder, Item
from encfs.names import split_path

if TYPE_CHECKING:
    from encfs.service import FilesService

VIEW_ROOTS = (".datasets", ".projects")
READ_ONLY = ".readonly"  # /.datasets/.readonly/D: a Dataset's files, read-only (names cannot start with ".")
READ_ONLY_DIRECTORY = stat.S_IFDIR | 0o555
IN_PROJECT = "a Project shows its Datasets' files read-only; change them in their folders or Datasets"
VIEW_INODES = 1 << 59  # inode numbers of the view entries that are not a Dataset or Project
DIRECTORY = stat.S_IFDIR | 0o755
SYMLINK = stat.S_IFLNK | 0o777


def is_view(parts: list[str]) -> bool:
    return bool(parts) and parts[0] in VIEW_ROOTS


def is_read_only(parts: list[str]) -> bool:
    return parts[:2] == [".datasets", READ_ONLY]


def writable_parts(parts: list[str]) -> list[str]:
    """/.datasets/.readonly/D/x as /.datasets/D/x (the same Dataset, the same file)."""
    return [parts[0], *parts[2:]] if is_read_only(parts) else parts


def is_view_entry(parts: list[str]) -> bool:
    """A file in a Dataset's view (rather than a directory or link of the views)."""
    plain = writable_parts(parts)
    return len(plain) == 3 and plain[0] == ".datasets"


def refuse_read_only(parts: list[str]) -> None:
    if is_read_only(parts):
        raise ReadOnly(IN_PROJECT, "/" + "/".join(parts))


def view_inode(parts: list[str]) -> int:
    return VIEW_INODES | zlib.crc32("/".join(parts).encode())


def _shown_as(node_id: int, name: str, mode: int, owner: Collection | None, at: int) -> Folder:
    """What lookup hands out for a view directory or link."""
    return Folder(
        id=node_id, parent=ROOT_ID, name=name, mode=mode, owner=owner.owner if owner else "system",
        uid=owner.uid if owner else 0, gid=owner.gid if owner else 0, created_ns=at, mtime_ns=at, ctime_ns=at,
        atime_ns=at, description=owner.description if owner else "",
    )


class Views:
    """Mixed into FilesService."""

    started_ns = time.time_ns()

    # ------------------------------------------------------------------ resolving

    def _view_entry_id(self: FilesService, r: ReadTxn, parts: list[str]) -> int:
        """The item a Dataset view shows under a name; other view paths are refused
        with what they are for (so `cp` into a Dataset explains itself)."""
        path = "/" + "/".join(parts)
        plain = writable_parts(parts)
        if not is_view_entry(parts):
            if len(plain) > 3:
                raise NotFound("no such file in this view", path)
            self._view_node(r, parts)  # NotFound if it does not exist
            refuse_read_only(parts)
            raise NotPermitted(self._what_view_holds(parts), path)
        dataset = self._dataset(r, plain[1])
        item_id = r.view_item(dataset.id, plain[2])
        if item_id is None:
            raise NotFound(f"no file named '{plain[2]}' in Dataset '{dataset.name}'", path)
        return item_id

    def _what_view_holds(self: FilesService, parts: list[str]) -> str:
        if parts[0] == ".datasets" and len(parts) == 2:
            return ("a Dataset holds links to files that live in folders: add one with ln FOLDER/FILE "
                    f"/.datasets/{parts[1]}/")
        if parts[0] == ".projects" and len(parts) >= 2:
            return ("a Project holds Datasets only: attach one with ln -s ../../.datasets/NAME "
                    f"/.projects/{parts[1]}/NAME")
        return f"{parts[0]} holds one entry per {'Dataset' if parts[0] == '.datasets' else 'Project'}"

    def _view_node(self: FilesService, r: ReadTxn, parts: list[str]) -> Folder:
        if is_read_only(parts):
            if len(parts) == 2:
                return _shown_as(view_inode(parts), READ_ONLY, READ_ONLY_DIRECTORY, None, self.started_ns)
            dataset = self._dataset(r, parts[2])
            if len(parts) > 3:
                raise NotFound("no such Dataset view", "/" + "/".join(parts))
            return _shown_as(view_inode(parts), dataset.name, READ_ONLY_DIRECTORY, dataset, dataset.mtime_ns)
        if len(parts) == 1:
            return _shown_as(view_inode(parts), parts[0], DIRECTORY, None, self.started_ns)
        if parts[0] == ".datasets":
            dataset = self._dataset(r, parts[1])
            mode = DIRECTORY if dataset.synced_folder is None else SYMLINK
            return _shown_as(dataset.id, dataset.name, mode, dataset, dataset.mtime_ns)
        project = self._project(r, parts[1])
        if len(parts) == 2:
            return _shown_as(project.id, project.name, DIRECTORY, project, project.mtime_ns)
        dataset = self._dataset(r, parts[2])
        if len(parts) > 3 or dataset.id not in r.attached_to(project.id):
            raise NotFound(f"Dataset '{parts[2]}' is not attached to Project '{project.name}'",
                           "/" + "/".join(parts))
        return _shown_as(view_inode(parts), dataset.name, SYMLINK, project, project.mtime_ns)

    def check_sees_view(self: FilesService, actor: Actor, parts: list[str]) -> None:
        with self.meta.read() as r:
            self._check_sees_view(r, actor, parts)

    def _check_sees_view(self: FilesService, r: ReadTxn, actor: Actor, parts: list[str]) -> None:
        """The Datasets and Projects a view path names exist only for those with a role on them."""
        if not self.access.organised(r):
            return
        plain = writable_parts(parts)
        kinds = [(DATASET, 1)] if plain[0] == ".datasets" else [(PROJECT, 1), (DATASET, 2)]
        for kind, index in kinds:
            if len(plain) > index:
                found = r.collection_id(kind, plain[index])
                if found is not None and not self.access.sees_collection(r, actor, found):
                    raise NotFound("no such Dataset or Project", "/" + "/".join(parts))

    def check_sees_view_entry(self: FilesService, r: ReadTxn, actor: Actor, parts: list[str],
                              item_id: int) -> None:
        """A file in a Dataset view: the caller must see the Dataset and the file's folder."""
        self._check_sees_view(r, actor, parts)
        item = r.node(item_id)
        if isinstance(item, Item) and not self.access.sees_file(r, actor, item):
            raise NotFound("no such file in this view", "/" + "/".join(parts))

    def view_node(self: FilesService, parts: list[str]) -> Folder:
        with self.meta.read() as r:
            return self._view_node(r, parts)

    def view_attributes(self: FilesService, parts: list[str]) -> Attributes:
        with self.meta.read() as r:
            return self._view_attributes(r, parts)

    def _view_attributes(self: FilesService, r: ReadTxn, parts: list[str]) -> Attributes:
        node = self._view_node(r, parts)
        link = stat.S_ISLNK(node.mode)
        size = len(self._link_text(r, parts).encode()) if link else 4096
        return self.access.shown(r, Attributes(node.id, node.mode, node.uid, node.gid, size, node.atime_ns,
                                               node.mtime_ns, node.ctime_ns, 1 if link else 2))

    def view_listing(self: FilesService, actor: Actor, parts: list[str]) -> list[tuple[str, Attributes]]:
        """What a view directory lists: to each caller, the Datasets and Projects they
        have a role on, and the files they may see."""
        with self.meta.read() as r:
            self._check_sees_view(r, actor, parts)
            self._view_node(r, parts)
            plain = writable_parts(parts)
            if len(plain) == 1:
                kind = DATASET if parts[0] == ".datasets" else PROJECT
                names = [name for name, found in r.collection_names(kind)
                         if self.access.sees_collection(r, actor, found)]
            elif parts[0] == ".projects":
                project = self._project(r, parts[1])
                attached = self.access.visible_collections(r, actor, r.attached_to(project.id))
                names = self._named(r, attached)
            else:
                return self._dataset_listing(r, actor, plain[1])
            return [(name, self._view_attributes(r, [*parts, name])) for name in names]

    def _dataset_listing(self: FilesService, r: ReadTxn, actor: Actor,
                         name: str) -> list[tuple[str, Attributes]]:
        entries = []
        organised, show = self.access.organised(r), self.access.shown_by(r)
        for view_name, item_id in r.view_entries(self._dataset(r, name).id):
            if organised and not self.access.sees_file(r, actor, r.node(item_id)):  # type: ignore[arg-type]
                continue
            attributes = r.attributes(item_id)
            if attributes is not None:
                entries.append((view_name, show(attributes)))
        return entries

    def _link_text(self: FilesService, r: ReadTxn, parts: list[str]) -> str:
        if parts[0] == ".projects":
            return f"../../.datasets/{READ_ONLY}/{parts[2]}"
        dataset = self._dataset(r, parts[1])
        assert dataset.synced_folder is not None
        return ".." + self._path(r, dataset.synced_folder, {})

    def read_link(self: FilesService, actor: Actor, path: str) -> str:
        """A synced Dataset's link shows its folder; a Project's, the Dataset."""
        parts = split_path(path)
        with self.meta.read() as r:
            if is_view(parts) and len(parts) > 1 and stat.S_ISLNK(self._view_node(r, parts).mode):
                return self._link_text(r, parts)
        raise InvalidInput("not a symbolic link", path)

    # ------------------------------------------------------------------ changes made with system calls

    def view_mkdir(self: FilesService, actor: Actor, parts: list[str], description: str = "") -> None:
        refuse_read_only(parts)
        if len(parts) == 2 and parts[0] == ".datasets":
            self.create_dataset(actor, parts[1], description)
        elif len(parts) == 2:
            self.create_project(actor, parts[1], description)
        elif len(parts) == 1:
            raise NotPermitted(f"{parts[0]} is always there", "/" + parts[0])
        else:
            raise NotPermitted(self._what_view_holds(parts[:-1]), "/" + "/".join(parts))

    def view_rmdir(self: FilesService, actor: Actor, parts: list[str]) -> None:
        refuse_read_only(parts)
        if len(parts) == 2 and parts[0] == ".datasets":
            self.delete_dataset(actor, parts[1], only_if_empty=True)
        elif len(parts) == 2:
            self.delete_project(actor, parts[1], only_if_empty=True)
        else:
            raise NotPermitted(f"/{'/'.join(parts)} cannot be removed", "/" + "/".join(parts))

    def view_unlink(self: FilesService, actor: Actor, parts: list[str]) -> None:
        refuse_read_only(parts)
        path = "/" + "/".join(parts)
        if parts[0] == ".projects" and len(parts) == 3:
            self.detach_dataset(actor, parts[1], parts[2])
        elif is_view_entry(parts):
            self.remove_from_dataset(actor, parts[1], [path])
        elif len(parts) == 2 and parts[0] == ".datasets":
            with self.meta.read() as r:
                synced = self._dataset(r, parts[1]).synced_folder is not None
            if not synced:
                raise NotPermitted("a standard Dataset is a directory: remove it with rmdir (when empty) or "
                                   "encfs dataset rm", path)
            self.delete_dataset(actor, parts[1])  # its link goes: the Dataset goes, the folder stays
        else:
            raise NotPermitted(f"{path} cannot be removed", path)

    def view_rename(self: FilesService, actor: Actor, source: list[str], target: list[str]) -> None:
        src, dst = "/" + "/".join(source), "/" + "/".join(target)
        refuse_read_only(source)
        refuse_read_only(target)
        if not is_view(source) or not is_view(target) or source[0] != target[0]:
            raise NotPermitted("files live in folders and Datasets hold links to them: ln adds a file to a "
                               "Dataset, rm takes it out", dst)
        if len(source) == len(target) == 2 and source[0] == ".projects":
            self.rename_project(actor, source[1], target[1])
        elif len(source) == len(target) == 2:
            self.rename_dataset(actor, source[1], target[1])
        elif is_view_entry(source) and is_view_entry(target):
            self.move_in_datasets(actor, src, dst)
        else:
            raise NotPermitted(self._what_view_holds(target[:-1]), dst)

    def view_link(self: FilesService, actor: Actor, link_path: list[str], source: str) -> None:
        """`ln SOURCE LINK`: a file joins a Dataset."""
        refuse_read_only(link_path)
        if is_view_entry(link_path):
            self.link_into_dataset(actor, source, link_path[1], link_path[2])
            return
        parent = link_path[:-1] if len(link_path) > 1 else link_path
        raise NotPermitted(self._what_view_holds(parent), "/" + "/".join(link_path))

    def view_symlink(self: FilesService, actor: Actor, link_path: list[str], target: str) -> None:
        """`ln -s ../FOLDER /.datasets/S` syncs a new Dataset with the folder;
        `ln -s ../../.datasets/D /.projects/P/D` attaches D to P."""
        path = "/" + "/".join(link_path)
        refuse_read_only(link_path)
        pointed = writable_parts(_target_parts(link_path, target, path))
        if link_path[0] == ".datasets" and len(link_path) == 2:
            if is_view(pointed):
                raise NotPermitted("a synced Dataset follows a folder; this target is not one", path)
            self.create_dataset(actor, link_path[1], sync="/" + "/".join(pointed))
        elif link_path[0] == ".projects" and len(link_path) == 3:
            if pointed[:1] != [".datasets"] or len(pointed) != 2:
                raise NotPermitted(self._what_view_holds(link_path), path)
            if pointed[1] != link_path[2]:
                raise InvalidInput(f"name the link after the Dataset: /.projects/{link_path[1]}/{pointed[1]}",
                                   path)
            self.attach_dataset(actor, link_path[1], pointed[1])
        else:
            raise NotPermitted(self._what_view_holds(link_path[:-1] or link_path), path)

    def move_in_datasets(self: FilesService, actor: Actor, source: str, target: str) -> None:
        """`mv /.datasets/A/x /.datasets/B/y`: a new view name, or the link moves to B."""
        src, dst = split_path(source), split_path(target)
        with self.meta.write() as w:
            item = w.node(self._view_entry_id(w, src))
            if not isinstance(item, Item):
                raise NotFound("no such file", source)
            self.check_sees_view_entry(w, actor, src, item.id)
            source_dataset = self._shown_collection(w, actor, DATASET, src[1], Role.ADMIN, "moving its files")
            target_dataset = self._shown_collection(w, actor, DATASET, dst[1], Role.ADMIN, "adding files")
            self.relink_in_datasets(w, source_dataset, item, target_dataset, dst[2], target)


def _target_parts(link_path: list[str], target: str, path: str) -> list[str]:
    """A symlink's text as Files path parts, read from the link's directory."""
    parts = link_path[:-1]
    for component in target.split("/") if not target.startswith("/") else [None]:
        if component is None or (component == ".." and not parts):
            raise InvalidInput(f"the target {target} is outside this mount", path)
        if component == "..":
            parts = parts[:-1]
        elif component not in ("", "."):
            parts = [*parts, component]
    return parts
