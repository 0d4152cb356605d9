"""The hidden control entries at the mount root: reachable by name, never listed.

    /.encfs/errors     the calling user's latest refusals, one line each
    /.encfs/store-id   the store's id (how the CLI recognises a mount of its store)
    /.search/QUERY/    the items matching QUERY (name text, or expressions such as
                       kind=image,width>=1024: search_query.py), as symlinks to their
                       paths; the first SEARCH_LISTED found, by path
    FOLDER/.access     the folder's access list (in every folder): read it, or write it whole
    FOLDER/.activity   the folder's activity, one JSON line per change (activity.py)
"""

from __future__ import annotations

import json
import stat
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from encfs.activity import ACTIVITY_FILE, FILE_LINES, ActivityLog
from encfs.errors import NotFound
from encfs.model import Actor
from encfs.names import tagged_name
from encfs.posix import Credentials, findable
from encfs.service import FilesService

CONTROL_NAMES = (".encfs", ".search")
ACCESS_FILE = ".access"
ACCESS_MODE = stat.S_IFREG | 0o666  # the kernel lets every caller write: encfs checks for admin
CONTROL_INODES = 1 << 60  # control entries' inode numbers live above every item id
SEARCH_CACHE_SECONDS = 1.0
SEARCH_LISTED = 10_000  # a /.search listing holds at most this many links
ACTIVITY_SUFFIX = "/" + ACTIVITY_FILE


def access_folder(path: str) -> str | None:
    """The folder whose access list `path` names (FOLDER/.access), or None."""
    folder, _, name = path.rpartition("/")
    return (folder or "/") if name == ACCESS_FILE else None


def control_inode(path: str) -> int:
    """A stable inode number for a control entry (a name the kernel passed may hold
    bytes that are not UTF-8)."""
    return CONTROL_INODES | zlib.crc32(path.encode("utf-8", "surrogateescape"))


@dataclass
class ControlEntry:
    mode: int
    size: int = 0
    target: str = ""


class ControlTree:
    def __init__(self, service: FilesService, who: Callable[[], Credentials] | None = None) -> None:
        """`who` tells the calling process's credentials (for what /.search may show it)."""
        self.service = service
        self.who = who
        self._searches: dict[tuple[int, int, str], tuple[float, dict[str, str]]] = {}
        self._lock = threading.Lock()
        self.mounted_ns = time.time_ns()
        self.activity = ActivityLog(service)

    @staticmethod
    def owns(path: str) -> bool:
        top = path[1:].split("/", 1)[0]
        return top in CONTROL_NAMES or access_folder(path) is not None or path.endswith(ACTIVITY_SUFFIX)

    def forget_searches(self) -> None:
        """Names changed: the next search asks the store again."""
        with self._lock:
            self._searches.clear()

    def entry(self, actor: Actor, path: str) -> ControlEntry:
        if access_folder(path) is not None:
            return ControlEntry(mode=ACCESS_MODE, size=len(self.content(actor, path)))
        if path.endswith(ACTIVITY_SUFFIX) and path[1:].split("/", 1)[0] not in CONTROL_NAMES:
            self.activity.folder(actor, path[: -len(ACTIVITY_SUFFIX)] or "/")
            return ControlEntry(mode=stat.S_IFREG | 0o444)
        parts = path.strip("/").split("/")
        directory = ControlEntry(mode=stat.S_IFDIR | 0o555)
        if len(parts) == 1:
            return directory
        if parts[0] == ".encfs" and len(parts) == 2 and parts[1] in ("errors", "store-id"):
            return ControlEntry(mode=stat.S_IFREG | 0o444)
        if parts[0] == ".search" and len(parts) == 2:
            return directory
        if parts[0] == ".search" and len(parts) == 3:
            links = self.search_links(actor, parts[1])
            if parts[2] in links:
                target = links[parts[2]]
                return ControlEntry(mode=stat.S_IFLNK | 0o777, size=len(target.encode()), target=target)
        raise NotFound("no such control entry", path)

    def list(self, actor: Actor, path: str) -> list[tuple[str, ControlEntry]]:
        parts = path.strip("/").split("/")
        if parts == [".encfs"]:
            return [(name, self.entry(actor, f"/.encfs/{name}")) for name in ("errors", "store-id")]
        if parts[0] == ".search" and len(parts) == 2:
            return [
                (name, ControlEntry(mode=stat.S_IFLNK | 0o777, size=len(t.encode()), target=t))
                for name, t in self.search_links(actor, parts[1]).items()
            ]
        return []

    def content(self, actor: Actor, path: str) -> bytes:
        folder = access_folder(path)
        if folder is not None:
            return self.service.access_admin.text(actor, folder)
        if path == "/.encfs/errors":
            lines = self.service.refusals(actor)
            return "".join(line + "\n" for line in lines).encode()
        if path == "/.encfs/store-id":
            return (self.service.store.store_id + "\n").encode()
        if path.endswith(ACTIVITY_SUFFIX):
            entries = self.activity.entries(actor, path[: -len(ACTIVITY_SUFFIX)] or "/", newest=FILE_LINES)
            return "".join(json.dumps(entry, ensure_ascii=False) + "\n" for entry in entries).encode()
        raise NotFound("not a control file", path)

    def search_links(self, actor: Actor, query: str) -> dict[str, str]:
        """Link name -> relative target. Names repeat across folders, so a repeated
        name gets the item's id before its extension: `a~17.jpg` (its stem shortened if
        that would pass 255 bytes)."""
        key = (actor.uid, self.service.access.generation_now(self.service.meta), query)  # each caller's own
        with self._lock:
            cached = self._searches.get(key)
            if cached and time.monotonic() - cached[0] < SEARCH_CACHE_SECONDS:
                return cached[1]
        hits = self.service.search(actor, query, limit=SEARCH_LISTED)
        who = self.who() if self.who is not None else None
        if who is not None and not who.is_root:  # only what a walk of the folders could find
            hits = [hit for hit in hits if findable(who, self.service.stat, actor, hit.path)]
        counts: dict[str, int] = {}
        for hit in hits:
            counts[hit.item.name] = counts.get(hit.item.name, 0) + 1
        links: dict[str, str] = {}
        for hit in hits:
            name = hit.item.name
            if counts[name] > 1:
                name = tagged_name(name, f"~{hit.item.id}")
            links[name] = "../.." + hit.path
        with self._lock:
            self._searches[key] = (time.monotonic(), links)
            if len(self._searches) > 64:
                self._searches.pop(next(iter(self._searches)))
        return links
