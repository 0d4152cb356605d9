"""The service as a non-root caller's CLI command sees it through a mount.

On the mount the kernel checks every call against the modes (`default_permissions`).
A command the daemon runs for a non-root caller (remote.py) has no kernel in between,
so `CallerGate` stands in front of the service and applies the same POSIX rules
(posix.py) before each call it lets through; in an organisation the modes shown are
open and the service's role checks decide, as on the mount. What it does not list is
refused: a new service method is closed to such callers until its rule is written here.

Commands whose work goes deep into the service (activity, import, sync, integrations)
are admitted as a whole (`admitted`): the caller's right to the command is checked
once, before it starts; the service's own role checks still apply to every change.
Users, groups and grants go through `access_admin`, whose every action checks the
caller's role itself (org admins manage users and groups, folder admins grants).
"""

from __future__ import annotations

import contextlib
import stat
from pathlib import Path
from typing import Any

from encfs.access.roles import Role
from encfs.errors import AccessDenied, EncfsError, NotFound
from encfs.model import Actor, Attributes, Folder
from encfs.names import split_path
from encfs.posix import READ, SEARCH, WRITE, Credentials, findable, may, may_remove

REFUSED = "not available to a user other than the store's owner through a mount"
LOCAL_FILES = ("is not available through a mount for files named here (it would read local files with the "
               "daemon's rights); copy the files into the mount instead (cp FILES MOUNTPOINT/FOLDER/)")
# Methods that only report, or act on the caller's own refusals: no path rule.
UNCHECKED = ("path_of", "refusals", "record_refusal", "settle_series", "store")
MANAGING_INTEGRATIONS = "managing integrations is for org admins and root (they use the mount's credentials)"
DATASETS, PROJECTS = "/.datasets", "/.projects"


def parent_of(path: str) -> str:
    parts = split_path(path)
    return "/" + "/".join(parts[:-1])


class CallerGate:
    """Wraps a FilesService: the calls a CLI command makes, each checked first."""

    def __init__(self, service: Any, who: Credentials) -> None:
        self.service = service
        self.who = who

    def __getattr__(self, name: str) -> Any:
        if name == "access_admin":
            return AccessAdminGate(self)
        if name in UNCHECKED:
            return getattr(self.service, name)
        if name == "batch_local_images":
            return self._refusing(name, f"encfs batch {LOCAL_FILES}")
        return self._refusing(name, f"{name.replace('_', ' ')} is {REFUSED}")

    def _refusing(self, operation: str, reason: str) -> Any:
        def refuse(actor: Actor, *args: Any, **kwargs: Any) -> Any:
            self._deny(actor, operation, AccessDenied(reason))

        return refuse

    def _deny(self, actor: Actor, operation: str, exc: EncfsError) -> None:
        self.service.record_refusal(actor, operation, exc)
        raise exc

    # ------------------------------------------------------------ the rules

    def _attributes(self, actor: Actor, path: str) -> Attributes:
        return self.service.stat(actor, path)

    def _reach(self, actor: Actor, operation: str, path: str) -> None:
        """Search (x) on every folder above `path`, as a path walk needs."""
        parts = split_path(path)
        for depth in range(len(parts)):
            folder = "/" + "/".join(parts[:depth])
            if not may(self.who, self._attributes(actor, folder), SEARCH):
                self._deny(actor, operation, AccessDenied("permission denied (a folder on the way may "
                                                              "not be searched)", folder))

    def _need(self, actor: Actor, operation: str, path: str, wanted: int, what: str) -> Attributes:
        attributes = self._attributes(actor, path)
        if not may(self.who, attributes, wanted):
            self._deny(actor, operation, AccessDenied(f"permission denied ({what})", path))
        return attributes

    def _removable(self, actor: Actor, operation: str, path: str) -> Attributes:
        folder = parent_of(path)
        node = self._attributes(actor, path)
        if not may_remove(self.who, self._attributes(actor, folder), node):
            reason = "permission denied (removing or moving a name needs write permission on its folder; " \
                     "in a sticky folder, owning the file or the folder)"
            self._deny(actor, operation, AccessDenied(reason, path))
        return node

    def _removable_tree(self, actor: Actor, operation: str, path: str) -> None:
        """`rm -r`: every folder below is read, searched and written."""
        for name, node in self.service.list_entries(actor, path):
            child = f"{path.rstrip('/')}/{name}"
            self._removable(actor, operation, child)
            if isinstance(node, Folder):
                self._need(actor, operation, child, READ | WRITE | SEARCH, "emptying a folder needs read, "
                           "write and search permission on it")
                self._removable_tree(actor, operation, child)

    # ------------------------------------------------------------ reads

    def lookup(self, actor: Actor, path: str) -> Any:
        self._reach(actor, "lookup", path)
        return self.service.lookup(actor, path)

    def info(self, actor: Actor, path: str) -> Any:
        self._reach(actor, "info", path)
        return self.service.info(actor, path)

    def list_entries(self, actor: Actor, path: str) -> Any:
        self._reach(actor, "list", path)
        self._need(actor, "list", path, READ, "listing a folder needs read permission on it")
        return self.service.list_entries(actor, path)

    def list_folder(self, actor: Actor, path: str) -> Any:
        self._reach(actor, "list", path)
        self._need(actor, "list", path, READ, "listing a folder needs read permission on it")
        return self.service.list_folder(actor, path)

    def folder_summary(self, actor: Actor, path: str) -> Any:
        self._reach(actor, "folder info", path)
        self._need(actor, "folder info", path, READ | SEARCH, "needs read and search permission on it")
        return self.service.folder_summary(actor, path)

    def datasets_under(self, actor: Actor, path: str) -> Any:
        self._reach(actor, "lookup", path)
        return self.service.datasets_under(actor, path)

    def datasets_left_by_move(self, actor: Actor, source: str, target_folder: str) -> Any:
        self._reach(actor, "rename", source)
        return self.service.datasets_left_by_move(actor, source, target_folder)

    def search(self, actor: Actor, *args: Any, **kwargs: Any) -> Any:
        """Only the files a walk could find: every folder above searchable, the
        file's own folder readable."""
        hits = self.service.search(actor, *args, **kwargs)
        return [hit for hit in hits if findable(self.who, self.service.stat, actor, hit.path)]

    def find(self, actor: Actor, *args: Any, **kwargs: Any) -> Any:
        """As search, streamed."""
        hits = self.service.find(actor, *args, **kwargs)
        return (hit for hit in hits if findable(self.who, self.service.stat, actor, hit.path))

    # ------------------------------------------------------------ changes

    def create_folder(self, actor: Actor, path: str, *args: Any, **kwargs: Any) -> Any:
        self._reach(actor, "mkdir", path)
        self._need(actor, "mkdir", parent_of(path), WRITE | SEARCH, "creating needs write permission on "
                   "the folder")
        return self.service.create_folder(actor, path, *args, **kwargs)

    def remove_item(self, actor: Actor, path: str) -> Any:
        self._reach(actor, "unlink", path)
        self._removable(actor, "unlink", path)
        return self.service.remove_item(actor, path)

    def remove_folder(self, actor: Actor, path: str, recursive: bool = False) -> Any:
        self._reach(actor, "rmdir", path)
        self._removable(actor, "rmdir", path)
        if recursive:
            self._need(actor, "rmdir", path, READ | WRITE | SEARCH, "emptying a folder needs read, write "
                       "and search permission on it")
            self._removable_tree(actor, "rmdir", path)
        return self.service.remove_folder(actor, path, recursive=recursive)

    def move(self, actor: Actor, source: str, target: str, replace: bool = True) -> Any:
        self._reach(actor, "rename", source)
        self._reach(actor, "rename", target)
        node = self._removable(actor, "rename", source)
        self._need(actor, "rename", parent_of(target), WRITE | SEARCH, "moving into a folder needs write "
                   "permission on it")
        with contextlib.suppress(NotFound):
            self._removable(actor, "rename", target)
        if stat.S_ISDIR(node.mode) and parent_of(source) != parent_of(target):
            self._need(actor, "rename", source, WRITE, "moving a folder elsewhere needs write permission on "
                       "it")
        return self.service.move(actor, source, target, replace=replace)

    def upload(self, actor: Actor, folder: str, source: Path, name: str | None = None,
               replace: bool = False) -> Any:
        """Only a file the caller's own command opened and passed (remote.caller_files);
        write permission on the folder, and on the file it replaces."""
        from encfs.remote import passed_by_caller

        if not passed_by_caller(source):
            self._deny(actor, "upload", AccessDenied(f"encfs upload {LOCAL_FILES}"))
        self._reach(actor, "upload", folder)
        self._need(actor, "upload", folder, WRITE | SEARCH, "uploading needs write permission on the folder")
        if replace:
            with contextlib.suppress(NotFound):
                self._need(actor, "upload", f"{folder.rstrip('/')}/{name or Path(source).name}", WRITE,
                           "replacing a file needs write permission on it")
        return self.service.upload(actor, folder, source, name=name, replace=replace)

    def batch_folder(self, actor: Actor, source: str, *args: Any, **kwargs: Any) -> Any:
        self._reach(actor, "batch", source)
        self._need(actor, "batch", source, READ | SEARCH, "batching needs read permission on the folder")
        self._need(actor, "batch", parent_of(source), WRITE | SEARCH, "batching writes next to the folder")
        return self.service.batch_folder(actor, source, *args, **kwargs)

    # ------------------------------------------------------------ Datasets and Projects
    # On the mount /.datasets and /.projects are root's (0755) and each Dataset or
    # Project its creator's (0755): the same modes decide here before users exist; in
    # an organisation they are shown open and the service checks the caller's roles.

    def _collection_change(self, actor: Actor, operation: str, root: str, name: str) -> None:
        self._need(actor, operation, f"{root}/{name}", WRITE | SEARCH, "changing a Dataset or Project needs "
                   "write permission on it")

    def _collections_change(self, actor: Actor, operation: str, root: str) -> None:
        self._need(actor, operation, root, WRITE | SEARCH, f"making, renaming or removing one needs write "
                   f"permission on {root}")

    def _linkable(self, actor: Actor, operation: str, paths: Any) -> None:
        for path in paths:
            self._reach(actor, operation, path)
            self._need(actor, operation, path, READ, "linking a file needs read permission on it")

    def list_datasets(self, actor: Actor) -> Any:
        return self.service.list_datasets(actor)

    def list_projects(self, actor: Actor) -> Any:
        return self.service.list_projects(actor)

    def dataset_summary(self, actor: Actor, name: str) -> Any:
        return self.service.dataset_summary(actor, name)

    def dataset_files(self, actor: Actor, name: str) -> Any:
        """Only the files a walk could find (as the Dataset's view shows them)."""
        return [(view, path) for view, path in self.service.dataset_files(actor, name)
                if findable(self.who, self.service.stat, actor, path)]

    def create_dataset(self, actor: Actor, name: str, description: str = "", add: Any = (),
                       sync: str | None = None, **kwargs: Any) -> Any:
        add = list(add)
        self._collections_change(actor, "dataset create", DATASETS)
        self._linkable(actor, "dataset create", add + ([sync] if sync is not None else []))
        return self.service.create_dataset(actor, name, description, add, sync=sync, **kwargs)

    def add_to_dataset(self, actor: Actor, name: str, paths: Any, *args: Any, **kwargs: Any) -> Any:
        paths = list(paths)
        self._collection_change(actor, "dataset add", DATASETS, name)
        self._linkable(actor, "dataset add", paths)
        return self.service.add_to_dataset(actor, name, paths, *args, **kwargs)

    def remove_from_dataset(self, actor: Actor, name: str, paths: Any) -> Any:
        self._collection_change(actor, "dataset remove", DATASETS, name)
        return self.service.remove_from_dataset(actor, name, paths)

    def set_sync(self, actor: Actor, name: str, folder: str | None) -> Any:
        self._collection_change(actor, "dataset sync", DATASETS, name)
        if folder is not None:
            self._linkable(actor, "dataset sync", [folder])
        return self.service.set_sync(actor, name, folder)

    def upgrade_dataset(self, actor: Actor, name: str) -> Any:
        self._collection_change(actor, "dataset upgrade", DATASETS, name)
        return self.service.upgrade_dataset(actor, name)

    def rename_dataset(self, actor: Actor, name: str, new_name: str) -> Any:
        self._collections_change(actor, "dataset rename", DATASETS)
        return self.service.rename_dataset(actor, name, new_name)

    def delete_dataset(self, actor: Actor, name: str, *args: Any, **kwargs: Any) -> Any:
        self._collections_change(actor, "dataset rm", DATASETS)
        return self.service.delete_dataset(actor, name, *args, **kwargs)

    def create_project(self, actor: Actor, name: str, *args: Any, **kwargs: Any) -> Any:
        self._collections_change(actor, "project create", PROJECTS)
        return self.service.create_project(actor, name, *args, **kwargs)

    def delete_project(self, actor: Actor, name: str, *args: Any, **kwargs: Any) -> Any:
        self._collections_change(actor, "project rm", PROJECTS)
        return self.service.delete_project(actor, name, *args, **kwargs)

    def attach_dataset(self, actor: Actor, project: str, dataset: str) -> Any:
        self._collection_change(actor, "project attach", PROJECTS, project)
        return self.service.attach_dataset(actor, project, dataset)

    def detach_dataset(self, actor: Actor, project: str, dataset: str) -> Any:
        self._collection_change(actor, "project detach", PROJECTS, project)
        return self.service.detach_dataset(actor, project, dataset)

    def set_attribute(self, actor: Actor, path: str, *args: Any, **kwargs: Any) -> Any:
        """A description (`dataset describe`, `folder describe`...): write permission, as setxattr."""
        self._reach(actor, "setxattr", path)
        self._need(actor, "setxattr", path, WRITE, "changing a description needs write permission")
        return self.service.set_attribute(actor, path, *args, **kwargs)

    # ------------------------------------------------------------ whole commands

    def admit(self, actor: Actor, command: str, path: str | None = None) -> Any:
        """The service itself, for a command checked as a whole first: `activity`
        (read on the folder; the service asks viewer), `import` and `sync` (write on
        the folder, and editor on it in an organisation), `integration` changes (org
        admins and root: they use the mount's credentials) and `integration ls`
        (names and bucket URLs: anyone)."""
        if command == "integration":
            self._org_admin(actor, command)
        elif command == "activity" and path is not None:
            self._reach(actor, command, path)
            self._need(actor, command, path, READ, "reading a folder's activity needs read permission")
        elif command in ("import", "sync") and path is not None:
            self._reach(actor, command, path)
            self._need(actor, command, path, WRITE | SEARCH, f"{command} needs write permission on the "
                       "folder")
            self._role(actor, command, path, Role.EDITOR)
        elif command != "integration ls":
            self._deny(actor, command, AccessDenied(f"{command} is {REFUSED}"))
        return self.service

    def local_file(self, actor: Actor, command: str, what: str) -> None:
        """A command that would read or write a local file named on its command line."""
        reason = f"encfs {command} {what} is not available through a mount (the daemon would open it with " \
                 "its own rights)"
        self._deny(actor, command, AccessDenied(reason))

    def _org_admin(self, actor: Actor, operation: str) -> None:
        with self.service.meta.read() as r:
            organised = self.service.access.organised(r)
            admin = organised and self.service.access.person(r, actor).admin
        if not admin:
            self._deny(actor, operation, AccessDenied(MANAGING_INTEGRATIONS))

    def _role(self, actor: Actor, operation: str, path: str, needed: Role) -> None:
        node = self.service.lookup(actor, path)
        try:
            with self.service.meta.read() as r:
                self.service.access.require_on(r, actor, node, needed, operation, path)
        except EncfsError as exc:
            self._deny(actor, operation, exc)


class AccessAdminGate:
    """`service.access_admin` for a caller through a mount: every action checks the
    caller's role itself; a folder named must also be reachable by a path walk."""

    PATHS = ("listing", "text", "grant", "revoke")
    OPEN = ("add_user", "set_user", "remove_user", "users", "add_group", "remove_group", "change_members",
            "groups")

    def __init__(self, gate: CallerGate) -> None:
        self.gate = gate
        self.admin = gate.service.access_admin

    def __getattr__(self, name: str) -> Any:
        if name in self.OPEN:
            return getattr(self.admin, name)
        if name in self.PATHS:
            return self._reaching(name)
        return self.gate._refusing(name, f"{name.replace('_', ' ')} is {REFUSED}")

    def _reaching(self, name: str) -> Any:
        def call(actor: Actor, path: str, *args: Any, **kwargs: Any) -> Any:
            if not path.startswith((DATASETS + "/", PROJECTS + "/")):
                self.gate._reach(actor, f"access {name}", path)
            return getattr(self.admin, name)(actor, path, *args, **kwargs)

        return call


def admitted(service: Any, actor: Actor, command: str, path: str | None = None) -> Any:
    """The service for a command checked as a whole (CallerGate.admit); the service
    itself for the store's owner."""
    return service.admit(actor, command, path) if isinstance(service, CallerGate) else service


def local_file_refused(service: Any, actor: Actor, command: str, what: str) -> None:
    """Refuse a local file named on the command line of a caller through a mount."""
    if isinstance(service, CallerGate):
        service.local_file(actor, command, what)
