"""The service as a non-root caller's CLI command sees it through a mount.

On the mount the kernel checks every call against the modes (`default_permissions`).
A command the daemon runs for a non-root caller (remote.py) has no kernel in between,
so `CallerGate` stands in front of the service and applies the same POSIX rules
(posix.py) before each call it lets through. What it does not list is refused: a new
service method is closed to such callers until its rule is written here.
"""

from __future__ import annotations

import contextlib
import stat
from typing import Any

from encfs.errors import AccessDenied, EncfsError, NotFound
from encfs.model import Actor, Attributes, Folder
from encfs.names import split_path
from encfs.posix import READ, SEARCH, WRITE, Credentials, findable, may, may_remove

REFUSED = "not available to a user other than the store's owner through a mount"
LOCAL_FILES = ("is not available through a mount (it would read local files with the daemon's rights); "
               "copy the files into the mount instead (cp FILES MOUNTPOINT/FOLDER/)")
# Methods that only report, or act on the caller's own refusals: no path rule.
UNCHECKED = ("path_of", "refusals", "record_refusal", "settle_series", "store")


def parent_of(path: str) -> str:
    parts = split_path(path)
    return "/" + "/".join(parts[:-1])


class CallerGate:
    """Wraps a FilesService: the calls a CLI command makes, each checked first."""

    def __init__(self, service: Any, who: Credentials) -> None:
        self.service = service
        self.who = who

    def __getattr__(self, name: str) -> Any:
        if name in UNCHECKED:
            return getattr(self.service, name)
        if name in ("upload", "batch_local_images"):
            return self._refusing(name, f"encfs {name.split('_')[0]} {LOCAL_FILES}")
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

    def batch_folder(self, actor: Actor, source: str, *args: Any, **kwargs: Any) -> Any:
        self._reach(actor, "batch", source)
        self._need(actor, "batch", source, READ | SEARCH, "batching needs read permission on the folder")
        self._need(actor, "batch", parent_of(source), WRITE | SEARCH, "batching writes next to the folder")
        return self.service.batch_folder(actor, source, *args, **kwargs)
