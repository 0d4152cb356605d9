"""A guard in front of libfuse's rename, against a deadlock inside libfuse itself.

libfuse's high-level layer (3.x) locks a rename's source and target names before it
calls the file system: each name's node gets a write lock, and the folders above each
a read lock. When the two sets overlap (the source and the target are the same node,
or one of them is a folder above the other), the second lock waits for the first,
which the same request holds: the request waits for itself for ever, the kernel keeps
the folders locked for the rename, and every process that touches them hangs with it.

The kernel refuses or skips such renames itself, except when its cached names are
stale: `rename(X, X)`, or `rename(X/Y, X)`, of a name another mount (or the CLI) has
just moved away or replaced. The kernel always looks the target up again, finds the
name gone or changed, and goes on, while libfuse still holds a node under that name.

The guard answers those renames before libfuse locks anything, as if the call had
happened just after the other mount's change: ENOENT for a name renamed onto itself
(the item it stood for is no longer there under that name), ENOTEMPTY for a target
that is a folder above the source, EINVAL for a source that is a folder above the
target (what the kernel answers when its names are fresh). Every other rename goes on
to libfuse unchanged.

libfuse has no hook before its locks, so the guard replaces the rename entry of the
session's low-level operation table, and reads libfuse's node table under libfuse's
own lock to see the overlap: private structures whose layout is the same in the
libfuse versions below, checked before use. A libfuse that does not match keeps only
the same-name check (which needs no node table), or no guard, with a log line.

`ENCFS_RENAME_GUARD=off` in the mount's environment lets every rename through to
libfuse unchecked: only to reproduce the deadlock (the watchdog's test of a request
stuck inside libfuse does), never for use."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from typing import Any

log = logging.getLogger("encfs")

SUPPORTED_VERSIONS = range(313, 318)  # struct fuse_session starts the same in 3.13 to 3.17
POINTER = ctypes.sizeof(ctypes.c_void_p)
OPS_OFFSET = 40  # mountpoint, exited, fd, io, mo, debug, deny_others, then the op table
FD_OFFSET = 12
UNLINK_SLOT, RENAME_SLOT = 9, 12  # init, destroy, lookup, forget, getattr, setattr,
#                                   readlink, mknod, mkdir, unlink, rmdir, symlink, rename

ROOT_NODE = 1
SWITCH = "ENCFS_RENAME_GUARD"
# struct fuse: se, name_table {array, use, size, split}, id_table {…}, lru_table,
# ctr, generation, hidectr, then the lock; struct node: name_next, id_next, nodeid,
# generation, refctr, parent, name
FUSE_NAME_TABLE, FUSE_ID_TABLE, FUSE_LOCK = 8, 40, 104
NODE_NAME_NEXT, NODE_ID_NEXT, NODE_ID, NODE_PARENT, NODE_NAME = 0, 8, 16, 32, 40
MASK64, MASK32 = (1 << 64) - 1, (1 << 32) - 1
_libc = ctypes.CDLL(None, use_errno=True)
_libc.pthread_mutex_lock.argtypes = [ctypes.c_void_p]
_libc.pthread_mutex_unlock.argtypes = [ctypes.c_void_p]

RenameFunction = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64,
                                  ctypes.c_void_p, ctypes.c_uint)
UnlinkFunction = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p)
_unlinking = threading.local()


def in_unlink() -> bool:
    """Whether this thread is answering an unlink request: a rename libfuse makes
    then (to `.fuse_hidden…`, for a file removed while open) is libfuse's, never a
    user's, who cannot rename during an unlink."""
    return getattr(_unlinking, "active", False)


class RenameGuard:
    """Installed once per mount, from the FUSE init callback (before any request)."""

    def __init__(self, libfuse: Any, on_thread: Any = None) -> None:
        self.libfuse = libfuse
        self.on_thread = on_thread
        self.original: Any = None
        self.callback = RenameFunction(self._rename)  # kept alive as long as the mount
        self.unlink_callback = UnlinkFunction(self._unlink)
        self.original_unlink: Any = None
        self.nodes: NodeTable | None = None
        self.session: int | None = None
        self.checks = os.environ.get(SWITCH, "on") != "off"
        libfuse.fuse_get_session.argtypes = [ctypes.c_void_p]
        libfuse.fuse_get_session.restype = ctypes.c_void_p
        libfuse.fuse_session_fd.argtypes = [ctypes.c_void_p]
        libfuse.fuse_session_fd.restype = ctypes.c_int
        libfuse.fuse_reply_err.argtypes = [ctypes.c_void_p, ctypes.c_int]
        libfuse.fuse_reply_err.restype = ctypes.c_int
        libfuse.fuse_version.restype = ctypes.c_int
        libfuse.fuse_session_exited.argtypes = [ctypes.c_void_p]
        libfuse.fuse_session_exited.restype = ctypes.c_int

    def exiting(self) -> bool:
        """Whether libfuse was asked to stop (SIGTERM, SIGINT, SIGHUP or unmount)."""
        return self.session is not None and bool(self.libfuse.fuse_session_exited(self.session))

    def install(self, fuse: int, mountpoint: str) -> bool:
        """Put the guard in front of libfuse's rename; False (and a log line) if this
        libfuse's session does not look as expected, which leaves it unguarded."""
        version = self.libfuse.fuse_version()
        session = self.libfuse.fuse_get_session(fuse) if fuse else None
        if version not in SUPPORTED_VERSIONS or not session:
            log.warning("libfuse %s: the rename guard is not installed (a rename onto itself of a name "
                        "another mount changed can hang this mount)", version)
            return False
        self.session = session
        if not self._looks_like_session(session, mountpoint):
            log.warning("libfuse %s: unexpected session layout, the rename guard is not installed", version)
            return False
        slot = ctypes.c_void_p.from_address(session + OPS_OFFSET + RENAME_SLOT * POINTER)
        if not slot.value:
            return False
        nodes = NodeTable(fuse)
        self.nodes = nodes if nodes.looks_right(session) else None
        if self.nodes is None:
            log.warning("libfuse %s: unexpected node table, the rename guard checks same names only", version)
        self.original = RenameFunction(slot.value)
        slot.value = ctypes.cast(self.callback, ctypes.c_void_p).value
        unlink = ctypes.c_void_p.from_address(session + OPS_OFFSET + UNLINK_SLOT * POINTER)
        if unlink.value:
            self.original_unlink = UnlinkFunction(unlink.value)
            unlink.value = ctypes.cast(self.unlink_callback, ctypes.c_void_p).value
        if self.checks:
            log.info("libfuse %s: rename guard installed", version)
        else:
            log.warning("%s=off: renames go to libfuse unchecked; a rename through stale names can hang "
                        "this mount", SWITCH)
        return True

    def _looks_like_session(self, session: int, mountpoint: str) -> bool:
        stored = ctypes.c_char_p.from_address(session).value
        fd = ctypes.c_int.from_address(session + FD_OFFSET).value
        return stored is not None and stored.decode(errors="surrogateescape") == mountpoint \
            and fd == self.libfuse.fuse_session_fd(session)

    def _rename(self, request: int, parent: int, name: int, new_parent: int, new_name: int,
                flags: int) -> None:
        if self.on_thread is not None:
            self.on_thread()
        old, new = ctypes.string_at(name), ctypes.string_at(new_name)
        refusal: int | None = None
        try:  # an exception here would leave the request unanswered: never let one out
            if not self.checks:
                pass
            elif parent == new_parent and old == new:
                refusal = errno.ENOENT
            elif self.nodes is not None:
                refusal = self.nodes.overlap(parent, old, new_parent, new)
        except Exception:
            log.exception("rename guard failed; the rename goes on to libfuse")
        if refusal is not None:
            log.debug("rename of %r to %r through stale names: %s", old, new, errno.errorcode[refusal])
            self.libfuse.fuse_reply_err(request, refusal)
            return
        self.original(request, parent, name, new_parent, new_name, flags)

    def _unlink(self, request: int, parent: int, name: int) -> None:
        if self.on_thread is not None:
            self.on_thread()
        _unlinking.active = True
        try:
            self.original_unlink(request, parent, name)
        finally:
            _unlinking.active = False


class NodeTable:
    """Read-only look at libfuse's nodes (struct fuse's name and id tables)."""

    def __init__(self, fuse: int) -> None:
        self.fuse = fuse

    def _word(self, address: int) -> int:
        return ctypes.c_uint64.from_address(address).value

    def looks_right(self, session: int) -> bool:
        if self._word(self.fuse) != session:
            return False
        size = self._word(self.fuse + FUSE_ID_TABLE + 16)
        if size < 2 or size & (size - 1):
            return False
        self._lock()
        try:
            root = self._node(ROOT_NODE)
            return root != 0 and self._word(root + NODE_PARENT) == 0
        finally:
            self._unlock()

    def _lock(self) -> None:
        _libc.pthread_mutex_lock(self.fuse + FUSE_LOCK)

    def _unlock(self) -> None:
        _libc.pthread_mutex_unlock(self.fuse + FUSE_LOCK)

    def _slot(self, table: int, hash_value: int) -> int:
        """libfuse's linear-hashing bucket for a hash value."""
        size, split = self._word(table + 16), self._word(table + 24)
        hash_value %= size
        older = hash_value % (size // 2)
        return older if older >= split else hash_value

    def _node(self, nodeid: int) -> int:
        table = self.fuse + FUSE_ID_TABLE
        slot = self._slot(table, ((nodeid & MASK32) * 2654435761) & MASK32)  # 32-bit product, as in C
        node = self._word(self._word(table) + slot * 8)
        while node and self._word(node + NODE_ID) != nodeid:
            node = self._word(node + NODE_ID_NEXT)
        return node

    def _named(self, parent: int, name: bytes) -> int:
        table = self.fuse + FUSE_NAME_TABLE
        hash_value = parent
        for byte in name:
            hash_value = (hash_value * 31 + byte) & MASK64
        node = self._word(self._word(table) + self._slot(table, hash_value) * 8)
        while node:
            above = self._word(node + NODE_PARENT)
            if above and self._word(above + NODE_ID) == parent \
                    and ctypes.string_at(self._word(node + NODE_NAME)) == name:
                return node
            node = self._word(node + NODE_NAME_NEXT)
        return 0

    def _chain(self, nodeid: int) -> list[int]:
        """The folder's node and the nodes above it, below the root (what libfuse
        read-locks for a name in that folder)."""
        chain, node = [], self._node(nodeid)
        while node and self._word(node + NODE_ID) != ROOT_NODE and len(chain) < 4096:
            chain.append(node)
            node = self._word(node + NODE_PARENT)
        return chain

    def nodeid_of(self, parts: list[bytes]) -> int | None:
        """libfuse's node id for a path below the root (None: libfuse has no node
        for it, so the kernel has nothing cached under it)."""
        self._lock()
        try:
            nodeid = ROOT_NODE
            for part in parts:
                node = self._named(nodeid, part)
                if not node:
                    return None
                nodeid = self._word(node + NODE_ID)
            return nodeid
        finally:
            self._unlock()

    def overlap(self, parent: int, name: bytes, new_parent: int, new_name: bytes) -> int | None:
        """The errno for a rename whose locks in libfuse would overlap, else None."""
        self._lock()
        try:
            source, target = self._named(parent, name), self._named(new_parent, new_name)
            if source and source == target:
                return errno.ENOENT
            if target and target in self._chain(parent):
                return errno.ENOTEMPTY
            if source and source in self._chain(new_parent):
                return errno.EINVAL
            return None
        finally:
            self._unlock()
