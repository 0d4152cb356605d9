"""A guard in front of libfuse's rename, against a deadlock inside libfuse itself.

libfuse's high-level layer (3.x) locks a rename's source and target names before it
calls the file system: each name's node gets a write lock, and the folders above each
a read lock. When the source and the target are the same libfuse node (the same
folder and the same name), the second lock waits for the first, which the same
request holds: the request waits for itself for ever, the kernel keeps the folder
locked for the rename, and every process that touches the folder hangs with it.

The kernel sends such a rename when its cached source name is stale: `rename(X, X)`
of a name another mount (or the CLI) has just moved away or replaced. The kernel
always looks the target up again, finds the name gone or changed, and so sees two
different names where libfuse sees one node.

The guard answers that rename before libfuse locks anything: ESTALE, which makes the
kernel look both names up afresh and try once more (the rename of a name onto itself
is then a no-op, or ENOENT when the name is gone). Every other rename goes on to
libfuse unchanged.

libfuse has no hook before its locks, so the guard replaces the rename entry of the
session's low-level operation table (a private structure whose layout is stable for
the libfuse versions below, and which is checked before it is changed)."""

from __future__ import annotations

import ctypes
import errno
import logging
from typing import Any

log = logging.getLogger("encfs")

SUPPORTED_VERSIONS = range(313, 318)  # struct fuse_session starts the same in 3.13 to 3.17
POINTER = ctypes.sizeof(ctypes.c_void_p)
OPS_OFFSET = 40  # mountpoint, exited, fd, io, mo, debug, deny_others, then the op table
FD_OFFSET = 12
RENAME_SLOT = 12  # init, destroy, lookup, forget, getattr, setattr, readlink, mknod,
#                   mkdir, unlink, rmdir, symlink, rename

RenameFunction = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64,
                                  ctypes.c_void_p, ctypes.c_uint)


class RenameGuard:
    """Installed once per mount, from the FUSE init callback (before any request)."""

    def __init__(self, libfuse: Any, on_thread: Any = None) -> None:
        self.libfuse = libfuse
        self.on_thread = on_thread
        self.original: Any = None
        self.callback = RenameFunction(self._rename)  # kept alive as long as the mount
        self.stale_answers = 0
        libfuse.fuse_get_session.argtypes = [ctypes.c_void_p]
        libfuse.fuse_get_session.restype = ctypes.c_void_p
        libfuse.fuse_session_fd.argtypes = [ctypes.c_void_p]
        libfuse.fuse_session_fd.restype = ctypes.c_int
        libfuse.fuse_reply_err.argtypes = [ctypes.c_void_p, ctypes.c_int]
        libfuse.fuse_reply_err.restype = ctypes.c_int
        libfuse.fuse_version.restype = ctypes.c_int

    def install(self, fuse: int, mountpoint: str) -> bool:
        """Put the guard in front of libfuse's rename; False (and a log line) if this
        libfuse's session does not look as expected, which leaves it unguarded."""
        version = self.libfuse.fuse_version()
        session = self.libfuse.fuse_get_session(fuse) if fuse else None
        if version not in SUPPORTED_VERSIONS or not session:
            log.warning("libfuse %s: the rename guard is not installed (a rename onto itself of a name "
                        "another mount changed can hang this mount)", version)
            return False
        if not self._looks_like_session(session, mountpoint):
            log.warning("libfuse %s: unexpected session layout, the rename guard is not installed", version)
            return False
        slot = ctypes.c_void_p.from_address(session + OPS_OFFSET + RENAME_SLOT * POINTER)
        if not slot.value:
            return False
        self.original = RenameFunction(slot.value)
        slot.value = ctypes.cast(self.callback, ctypes.c_void_p).value
        log.info("libfuse %s: rename guard installed", version)
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
        if parent == new_parent and ctypes.string_at(name) == ctypes.string_at(new_name):
            self.stale_answers += 1
            log.debug("rename of %r onto itself through a stale name: ESTALE (the kernel looks again)",
                      ctypes.string_at(name))
            self.libfuse.fuse_reply_err(request, errno.ESTALE)
            return
        self.original(request, parent, name, new_parent, new_name, flags)
