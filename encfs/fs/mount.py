"""Mounting: checks before FUSE starts, libfuse3 options, and two additions to
mfusepy's FUSE class: listings that carry attributes (readdirplus, so `ls -l` and
`find` need no getattr per entry) and rename flags (RENAME_NOREPLACE)."""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from pathlib import Path
from typing import Any

from encfs.errors import StoreError

log = logging.getLogger("encfs")

CACHE_SECONDS = 1.0  # how long another mount's change may take to show
SYNC_SECONDS = 5.0  # committed changes are flushed to disk at least this often
FUSE_FILL_DIR_PLUS = 2


def load_mfusepy() -> Any:
    """Import mfusepy bound to libfuse3, or say clearly what is missing."""
    os.environ["FUSE_LIBRARY_NAME"] = "fuse3"
    try:
        import mfusepy
    except OSError as exc:
        raise StoreError(
            f"libfuse3 is not installed ({exc}); on Debian: apt-get install fuse3 libfuse3-3"
        ) from exc
    if mfusepy.fuse_version_major != 3:
        raise StoreError("encfs needs libfuse 3; on Debian: apt-get install fuse3 libfuse3-3")
    return mfusepy


def is_mounted(path: Path) -> bool:
    """Whether something is mounted at path, even a mount whose daemon died
    (os.path.ismount cannot tell: stat of a dead FUSE mount fails)."""
    target = os.path.abspath(path)
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 1 and _unescape(fields[1]) == target:
                return True
    return False


def _unescape(field: str) -> str:
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def check_mountpoint(mountpoint: Path) -> None:
    if is_mounted(mountpoint):
        raise StoreError(
            f"{mountpoint} is already a mount point (if its daemon died: encfs umount {mountpoint})"
        )
    if not mountpoint.exists():
        raise StoreError(f"mountpoint {mountpoint} does not exist; create an empty directory first")
    if not mountpoint.is_dir():
        raise StoreError(f"mountpoint {mountpoint} is not a directory")
    if any(mountpoint.iterdir()):
        raise StoreError(f"mountpoint {mountpoint} is not empty; mount on an empty directory")


def make_fuse_class(mfusepy: Any) -> type:
    class EncfsFUSE(mfusepy.FUSE):
        def readdir_fuse_3(self, path, buf, filler, offset, fip, flags):  # type: ignore[no-untyped-def]
            listing = self.operations.listing(fip.contents.fh)
            st = mfusepy.c_stat()
            fill_flags = FUSE_FILL_DIR_PLUS if flags & 1 else 0
            for index in range(offset, len(listing)):
                name, attrs = listing[index]
                ctypes.memset(ctypes.byref(st), 0, ctypes.sizeof(st))
                mfusepy.set_st_attrs(st, attrs, use_ns=True)
                if filler(buf, name.encode(self.encoding, self.errors), st, index + 1, fill_flags):
                    break
            return 0

        def rename_fuse_3(self, old: bytes, new: bytes, flags: int) -> int:
            return self.operations.rename(
                old.decode(self.encoding, self.errors), new.decode(self.encoding, self.errors), flags
            )

        def utimens_fuse_3(self, path, buf, fip):  # type: ignore[no-untyped-def]
            times = None
            if buf:
                a, m = buf.contents.actime, buf.contents.modtime
                times = ((a.tv_sec, a.tv_nsec), (m.tv_sec, m.tv_nsec))
            return self.operations.utimens(None if path is None else path.decode(self.encoding, self.errors),
                                           times)

    return EncfsFUSE


def periodic_sync(service: Any, stop: threading.Event) -> None:
    while not stop.wait(SYNC_SECONDS):
        try:
            service.sync()
        except Exception:
            log.exception("periodic sync failed")


def serve(store_path: Path, mountpoint: Path, debug: bool = False) -> None:
    """Mount and serve until unmounted (blocks)."""
    mfusepy = load_mfusepy()
    from encfs.fs.operations import EncfsOperations
    from encfs.service import FilesService
    from encfs.store import open_store

    check_mountpoint(mountpoint)
    store = open_store(store_path)
    service = FilesService(store)
    service.recover()
    operations = EncfsOperations(service)
    stop = threading.Event()
    threading.Thread(target=periodic_sync, args=(service, stop), daemon=True).start()
    log.info("mounting store %s at %s (pid %d)", store_path, mountpoint, os.getpid())
    try:
        make_fuse_class(mfusepy)(
            operations, str(mountpoint), raw_fi=True, foreground=True, debug=debug,
            fsname=f"encfs:{store_path}", subtype="encfs", default_permissions=True,
            auto_cache=True, entry_timeout=CACHE_SECONDS, attr_timeout=CACHE_SECONDS,
            negative_timeout=CACHE_SECONDS, use_ino=True,
        )
    finally:
        stop.set()
        service.sync()
        store.close()
        log.info("unmounted %s", mountpoint)
