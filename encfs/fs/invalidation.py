"""Long kernel caches that are never stale: each mount follows the change journal
and tells its kernel exactly which names and inodes to forget.

The kernel caches names (also the absence of a name) and attributes for the mount's
timeouts (`cache_options`), and pages until told otherwise. Every change is a
journal record (meta/journal.py) listing the names, records and Dataset links it
touched. From a record this module works out every path of *this* mount that shows
what changed (`targets_of`): the folder entry, the item's views under /.datasets and
/.datasets/.readonly, Dataset and Project names, /.search. It finds libfuse's node
for each path (libfuse's high-level layer numbers its nodes itself, one per path;
what it never handed to the kernel, the kernel cannot have cached) and notifies
the kernel: `fuse_lowlevel_notify_inval_entry` for a name, `…_inval_inode` for
attributes (offset -1) or attributes and pages (offset 0).

libfuse's rule: a notification must not be sent from the execution path of a
"related" request, nor while holding a lock such a request needs; forgetting a name
takes the kernel's lock on its folder, which a request changing that folder holds
until it is answered (a lookup, create, mkdir, unlink, rmdir, rename, link; a setattr
or setxattr holds the inode's). Forgetting attributes only takes no lock. So:

- **Another process's change** (another mount, the CLI, this mount's upkeep): the
  follower thread reads records after the last one it saw, every FOLLOW_SECONDS
  (one read transaction when nothing changed), and notifies from its own thread.
- **A change made by a request of this mount** must show on every other path at
  once, before the caller can look again, so the request's thread handles its own
  records before it answers: attributes it forgets itself; names and pages are
  handed to the notifier thread, and the request waits for that at most
  HANDOFF_WAIT_SECONDS (the kernel lock a name needs may be held by a request that
  itself waits for one this request holds: the bounded wait breaks that cycle).
  Names in the request's own folders (the ones the kernel holds locked for it) are
  left to the follower, which forgets them once the request is answered; the
  request's own names the kernel updates itself from the answer.
"""

from __future__ import annotations

import ctypes
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from encfs.fs.rename_guard import NodeTable
from encfs.meta import journal
from encfs.meta.store import MetaStore, ReadTxn
from encfs.model import ROOT_ID
from encfs.views import READ_ONLY

log = logging.getLogger("encfs")

FOLLOW_SECONDS = 0.02  # how often a mount looks for other processes' changes
HANDOFF_WAIT_SECONDS = 0.5  # longest a request waits for its changes to be forgotten elsewhere
SEARCH_PATH = "/.search"
SEARCH_ENTRY = ("/", ".search")  # forgotten when names change: its results may have
DIRECTORY_REQUESTS = frozenset({"create", "mknod", "mkdir", "unlink", "rmdir", "rename_fuse_3", "rename",
                                "link", "symlink"})


@dataclass
class Targets:
    """What the kernel of a mount must forget for some changes."""

    entries: set[tuple[str, str]] = field(default_factory=set)  # (folder path, name)
    inodes: dict[str, bool] = field(default_factory=dict)  # path -> pages too
    names_changed: bool = False

    def inode(self, path: str | None, pages: bool = False) -> None:
        if path is not None:
            self.inodes[path] = self.inodes.get(path, False) or pages

    def update(self, other: Targets) -> None:
        self.entries |= other.entries
        for path, pages in other.inodes.items():
            self.inode(path, pages)
        self.names_changed = self.names_changed or other.names_changed

    def __bool__(self) -> bool:
        return bool(self.entries or self.inodes)


class Paths:
    """Store ids as this mount's paths, within one read transaction."""

    def __init__(self, r: ReadTxn) -> None:
        self.r = r
        self.folders: dict[int, str | None] = {ROOT_ID: "/"}

    def folder(self, folder_id: int) -> str | None:
        """The folder's path (None: it is gone)."""
        if folder_id not in self.folders:
            node = self.r.node(folder_id)
            above = None if node is None else self.folder(node.parent)
            self.folders[folder_id] = None if above is None or node is None else join(above, node.name)
        return self.folders[folder_id]

    def node(self, node_id: int) -> str | None:
        node = self.r.node(node_id)
        if node is None:
            return None
        if node_id == ROOT_ID:
            return "/"
        above = self.folder(node.parent)
        return None if above is None else join(above, node.name)

    def named(self, node_id: int, parent: int, name: str) -> str | None:
        """A node's path from the parent and name its record was written with (no
        record read)."""
        if node_id == ROOT_ID:
            return "/"
        above = self.folder(parent)
        return None if above is None else join(above, name)

    def dataset_folders(self, dataset_id: int) -> list[str]:
        """Where a Dataset shows its files: /.datasets/D and its read-only twin."""
        collection = self.r.collection(dataset_id)
        if collection is None:
            return []
        read_only = f"/.datasets/{READ_ONLY}/{collection.name}"
        if getattr(collection, "synced_folder", None) is not None:
            return [read_only]  # /.datasets/S is a symlink to its folder: the folder's paths cover it
        return [f"/.datasets/{collection.name}", read_only]


def join(folder: str, name: str) -> str:
    return folder.rstrip("/") + "/" + name


def targets_of(r: ReadTxn, record: dict[str, Any], paths: Paths | None = None) -> Targets:
    """Every path of a mount that shows what a record changed (read after it)."""
    paths = paths or Paths(r)
    found = Targets()
    for parent, name, _child, _added in record.get("e", ()):
        folder = paths.folder(parent)
        if folder is not None:
            found.entries.add((folder, name))
            found.inode(folder)
        found.names_changed = True
    for node_id, parent, *named in record.get("n", ()):
        if parent < 0:
            continue
        where = paths.named(node_id, parent, named[0]) if named else paths.node(node_id)
        is_item = where is not None and not _is_folder(r, node_id)
        found.inode(where, pages=is_item)
        if is_item:
            for dataset in r.datasets_of(node_id):
                link = r.link_in(dataset, node_id)
                for folder in paths.dataset_folders(dataset) if link else []:
                    found.inode(join(folder, link[1]), pages=True)
    for dataset, view_name, _item, _added in record.get("v", ()):
        for folder in paths.dataset_folders(dataset):
            found.entries.add((folder, view_name))
            found.inode(folder)
    for kind, name in record.get("c", ()):
        if kind == "d":
            found.entries.update({("/.datasets", name), (f"/.datasets/{READ_ONLY}", name)})
        else:
            found.entries.add(("/.projects", name))
    for project, dataset in record.get("x", ()):
        owner, member = r.collection(project), r.collection(dataset)
        if owner is not None and member is not None:
            found.entries.add((f"/.projects/{owner.name}", member.name))
    if found.names_changed:
        found.entries.add(SEARCH_ENTRY)
    return found


def _is_folder(r: ReadTxn, node_id: int) -> bool:
    attributes = r.attributes(node_id)
    return attributes is not None and attributes.mode & 0o170000 == 0o040000


class KernelCache:
    """The kernel's caches of one mount, through libfuse's notifications."""

    def __init__(self, libfuse: Any, fuse: int, nodes: NodeTable) -> None:
        self.libfuse = libfuse
        self.nodes = nodes
        libfuse.fuse_get_session.restype = ctypes.c_void_p
        libfuse.fuse_get_session.argtypes = [ctypes.c_void_p]
        self.session = libfuse.fuse_get_session(fuse)
        notify_entry = libfuse.fuse_lowlevel_notify_inval_entry
        notify_inode = libfuse.fuse_lowlevel_notify_inval_inode
        notify_entry.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t]
        notify_entry.restype = notify_inode.restype = ctypes.c_int
        notify_inode.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int64, ctypes.c_int64]

    def node(self, path: str) -> int | None:
        """libfuse's node id for a path, None if libfuse has none (then the kernel
        has nothing cached under it)."""
        parts = [part.encode("utf-8", "surrogateescape") for part in path.strip("/").split("/") if part]
        return self.nodes.nodeid_of(parts)

    def forget_entry(self, folder_node: int, name: str) -> None:
        raw = name.encode("utf-8", "surrogateescape")
        self.libfuse.fuse_lowlevel_notify_inval_entry(self.session, folder_node, raw, len(raw))

    def forget_inode(self, node: int, pages: bool) -> None:
        self.libfuse.fuse_lowlevel_notify_inval_inode(self.session, node, 0 if pages else -1, 0)


@dataclass
class Notices:
    """Targets resolved to libfuse nodes: what to send, and from which thread."""

    entries: list[tuple[int, str]] = field(default_factory=list)
    attributes: list[int] = field(default_factory=list)
    pages: list[int] = field(default_factory=list)


class Follower:
    """Follows the journal for one mount and keeps its kernel's caches true."""

    def __init__(self, meta: MetaStore, kernel: KernelCache, on_names_changed: Callable[[], None]) -> None:
        self.meta = meta
        self.kernel = kernel
        self.on_names_changed = on_names_changed
        with meta.read() as r:
            self.seen = r.journal_last()  # a (re)started mount's kernel has nothing cached yet
        self.deferred: queue.SimpleQueue[Notices] = queue.SimpleQueue()
        self.handoffs: queue.SimpleQueue[tuple[Notices, threading.Event]] = queue.SimpleQueue()
        self.wake = threading.Event()
        self.followed = 0  # records of other processes acted on (for tests and the log)
        self._busy = threading.Lock()  # held while libfuse's structures are read or notices sent
        self.halted = False

    def halt(self, timeout: float = 2.0) -> None:
        """libfuse is about to free its nodes and session: no notice after this."""
        acquired = self._busy.acquire(timeout=timeout)
        self.halted = True
        if acquired:
            self._busy.release()

    def start(self, stop: threading.Event) -> None:
        threading.Thread(target=self._follow, args=(stop,), daemon=True, name="journal follower").start()
        threading.Thread(target=self._notify_handoffs, args=(stop,), daemon=True,
                         name="journal notifier").start()

    def forget_names_in(self, folder: str, names: list[str]) -> None:
        """Forget these names of a folder (from a thread that answers no request)."""
        with self._busy:
            node = None if self.halted else self.kernel.node(folder)
            for name in names if node is not None else []:
                self.kernel.forget_entry(node, name)

    # ------------------------------------------------------------ other processes' changes

    def _follow(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self.wake.wait(FOLLOW_SECONDS)
            self.wake.clear()
            try:
                with self._busy:
                    if self.halted:
                        return
                    self._send_deferred()
                    self.catch_up()
            except Exception:
                log.exception("following the change journal failed")
                stop.wait(1.0)

    def catch_up(self) -> None:
        """Forget what the records after the last one seen changed."""
        with self.meta.read() as r:
            if r.journal_last() <= self.seen:
                return
            paths, targets = Paths(r), Targets()
            for seq, record in r.journal_after(self.seen):
                self.seen = seq
                if seq in journal.CLAIMED:
                    journal.CLAIMED.discard(seq)
                    continue
                targets.update(targets_of(r, record, paths))
                self.followed += 1
        if targets.names_changed:
            self.on_names_changed()
        self._send(self._resolve(targets, pages_ok=True))

    def _send_deferred(self) -> None:
        while True:
            try:
                notices = self.deferred.get_nowait()
            except queue.Empty:
                return
            self._send(notices)

    def _resolve(self, targets: Targets, pages_ok: bool) -> Notices:
        notices = Notices()
        for folder, name in sorted(targets.entries):
            if (folder, name) == SEARCH_ENTRY and self.kernel.node(SEARCH_PATH) is None:
                continue  # /.search is always there: with no node, the kernel holds none of it
            node = self.kernel.node(folder)
            if node is not None:
                notices.entries.append((node, name))
        for path, pages in targets.inodes.items():
            node = self.kernel.node(path)
            if node is not None:
                (notices.pages if pages and pages_ok else notices.attributes).append(node)
        return notices

    def _send(self, notices: Notices) -> None:
        for node in notices.attributes:
            self.kernel.forget_inode(node, pages=False)
        for node in notices.pages:
            self.kernel.forget_inode(node, pages=True)
        for folder_node, name in notices.entries:
            self.kernel.forget_entry(folder_node, name)

    # ------------------------------------------------------------ this mount's requests

    def _notify_handoffs(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                notices, done = self.handoffs.get(timeout=0.5)
            except queue.Empty:
                continue
            try:
                with self._busy:
                    if not self.halted:
                        self._send(notices)
            except Exception:
                log.exception("telling the kernel what a change made stale failed")
            finally:
                done.set()

    def after_request(self, operation: str, request_paths: list[str],
                      written: list[tuple[int, dict[str, Any]]]) -> None:
        """Before a request of this mount is answered: make every other path that
        shows what it changed forget it (see the module's docstring)."""
        with self.meta.read() as r:
            paths, targets = Paths(r), Targets()
            for _, record in written:
                targets.update(targets_of(r, record, paths))
        if targets.names_changed:
            self.on_names_changed()
        own = set(request_paths)
        folders = {os.path.dirname(path) or "/" for path in request_paths}
        now, later = Targets(), Targets()
        for folder, name in targets.entries:
            if join(folder, name) in own:
                continue
            (later if folder in own | folders else now).entries.add((folder, name))
        for path, pages in targets.inodes.items():
            if operation in DIRECTORY_REQUESTS and path in folders:
                continue  # the kernel forgets the attributes of the folders it changed itself
            now.inode(path, pages and path not in own)
        notices = self._resolve(now, pages_ok=True)
        for node in notices.attributes:  # takes no lock: done here, at once
            self.kernel.forget_inode(node, pages=False)
        if later:
            self.deferred.put(self._resolve(later, pages_ok=False))
            self.wake.set()
        if notices.entries or notices.pages:
            done = threading.Event()
            self.handoffs.put((Notices(entries=notices.entries, pages=notices.pages), done))
            if not done.wait(HANDOFF_WAIT_SECONDS):
                log.warning("%s: the kernel did not take the notice of a change within %.1f s; answering "
                            "first (other paths may show the old state a moment longer)", operation,
                            HANDOFF_WAIT_SECONDS)


_requests = threading.local()


def request_started() -> bool:
    """A FUSE request starts on this thread; True for the outermost (libfuse calls
    the file system again inside an unlink, to hide an open file)."""
    depth = getattr(_requests, "depth", 0)
    _requests.depth = depth + 1
    if depth == 0:
        journal.collect_written(True)
    return depth == 0


def request_finished(outermost: bool) -> list[tuple[int, dict[str, Any]]]:
    """The records the request committed (outermost only)."""
    _requests.depth -= 1
    return journal.collect_written(False) if outermost else []


def request_paths(args: tuple[Any, ...], encoding: str) -> list[str]:
    """The paths a request names (the raw bytes arguments that are absolute paths)."""
    return [arg.decode(encoding, "surrogateescape") for arg in args
            if isinstance(arg, bytes) and arg.startswith(b"/")]
