"""The FUSE adapter: translate each system call into a service call and each domain
error into its errno. No rule of the product lives here."""

from __future__ import annotations

import ctypes
import errno
import functools
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable
from typing import Any, TypeVar

import mfusepy

from encfs.access.text import ACCESS_TEXT_MAX
from encfs.draft import Payload
from encfs.errors import DamagedMetadata, EncfsError, NotFound
from encfs.fs.control import ControlEntry, ControlTree, access_folder, control_inode
from encfs.fs.handles import OpenFile, OpenFiles
from encfs.fs.mount import SHORT_CACHE_SECONDS, apply_cache_times
from encfs.fs.rename_guard import in_unlink
from encfs.fs.view_reach import ViewReach
from encfs.meta.check import damage_in
from encfs.model import ROOT_ID, Actor, Attributes, Folder, attributes_of
from encfs.posix import Credentials, groups_of_process
from encfs.service import FilesService

log = logging.getLogger("encfs")

F = TypeVar("F", bound=Callable[..., Any])
BLOCK = 4096
IO_BLOCK = 1 << 20
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
HIDDEN_PREFIX = ".fuse_hidden"  # libfuse's name for a file removed while open (in an unlink)
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
FUSE_CAP_SPLICE_WRITE = 1 << 7
KEPT_NAMESPACE = "user."  # ACLs, capabilities, security labels are not kept: ENOTSUP
# libfuse splices a read's reply (blob pages go to the kernel without a copy through
# a buffer) only if it fits its pipe, and a pipe cannot grow past 1 MiB without
# CAP_SYS_RESOURCE: so a read asks for at most 1 MiB less libfuse's 16 KiB margin.
MAX_READ = (1 << 20) - (16 << 10)
VIEWS = ("/.datasets/", "/.projects/")  # where a link's text names a Dataset or a folder
FIRST_CONTROL_HANDLE = 1 << 62  # control files' handles; the open files' count up from 1


def translated(method: F) -> F:
    """Domain errors become their errno; anything unexpected is logged and is EIO."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except DamagedMetadata as exc:
            raise _damaged(method.__name__, args, exc) from None
        except EncfsError as exc:
            raise mfusepy.FuseOSError(exc.errno) from None
        except mfusepy.FuseOSError:
            raise
        except OSError as exc:
            log.error("%s failed: %s", method.__name__, exc)
            raise mfusepy.FuseOSError(exc.errno or errno.EIO) from None
        except Exception as exc:
            damage = damage_in(exc)
            if damage is not None:
                raise _damaged(method.__name__, args, damage) from None
            log.exception("fault in %s", method.__name__)
            raise mfusepy.FuseOSError(errno.EIO) from None

    return call  # type: ignore[return-value]


def _damaged(operation: str, args: tuple[Any, ...], damage: DamagedMetadata) -> mfusepy.FuseOSError:
    """Damaged metadata met by a call: EIO, and a log line naming the call and its path
    (the mount keeps serving what it can still read)."""
    path = args[1] if len(args) > 1 and isinstance(args[1], str) else "-"
    log.error("%s %s: %s", operation, path, damage)
    return mfusepy.FuseOSError(errno.EIO)


_served: list[Actor] = []  # the one user a mount `--as EMAIL` serves (empty: every caller as themselves)


def caller() -> Actor:
    uid, gid, _pid = mfusepy.fuse_get_context()
    if _served:
        if uid not in (0, _served[0].uid):  # a mount --as serves its user (and root) only
            raise mfusepy.FuseOSError(errno.EACCES)
        return _served[0]
    return Actor.from_ids(uid, gid)


def caller_credentials() -> Credentials:
    """The caller with its supplementary groups (read from /proc: only where needed)."""
    uid, gid, pid = mfusepy.fuse_get_context()
    return Credentials(uid, gid, groups_of_process(pid) if uid else frozenset())


def stat_of(attributes: Attributes) -> dict[str, int]:
    return {
        "st_ino": attributes.id, "st_mode": attributes.mode, "st_uid": attributes.uid,
        "st_gid": attributes.gid, "st_atime": attributes.atime_ns, "st_mtime": attributes.mtime_ns,
        "st_ctime": attributes.ctime_ns, "st_blksize": IO_BLOCK, "st_size": attributes.size,
        "st_blocks": (attributes.size + 511) // 512, "st_nlink": attributes.nlink,
    }


class EncfsOperations(mfusepy.Operations):
    use_ns = True

    def __init__(self, service: FilesService, mountpoint: str = "") -> None:
        self.service = service
        self.mountpoint = mountpoint.rstrip("/")
        self.files = OpenFiles(service)
        self.control = ControlTree(service, caller_credentials)
        self.view_reach = ViewReach(service, caller_credentials)
        self._dir_listings: dict[int, list[tuple[str, Attributes]]] = {}
        self._control_reads: dict[int, bytes] = {}
        self._access_writes: dict[int, AccessDraft] = {}
        self._control_numbers = itertools.count(FIRST_CONTROL_HANDLE)
        self._dir_numbers = itertools.count(1)
        self._hidden: dict[str, OpenFile] = {}
        self.fuse_config: Any = None  # libfuse's configuration (its cache times), set at init
        self.served: Actor | None = None
        self.cache_seconds = SHORT_CACHE_SECONDS  # the mount sets what its journal follower allows
        self.follower: Any = None  # the mount's journal follower, once libfuse is up
        self.organised: bool | None = None  # whether the store had users when cache times were last set

    def serve_only(self, actor: Actor) -> None:
        """Act for this user on every call (`encfs mount --as`): one user's view, so the
        kernel may cache it; other Linux users are refused (EACCES)."""
        self.served = actor
        _served[:] = [actor]

    def init_with_config(self, conn: Any, config: Any) -> None:
        """Answer reads by splicing (see MAX_READ)."""
        if conn is None:
            return
        conn.want |= conn.capable & FUSE_CAP_SPLICE_WRITE
        conn.max_read = MAX_READ  # must equal the mount option, or libfuse refuses to start
        if config is not None:
            self.fuse_config = config
            try:
                organised = self.service.access.organised_now(self.service.meta)
            except Exception:  # unreadable metadata: cache nothing, the safe side
                log.exception("could not read whether the store has users")
                organised = True
            apply_cache_times(config, organised, self.served is not None, self.cache_seconds)
            self.organised = organised
        log.info("FUSE connection: capable %#x, want %#x, max_write %d", conn.capable, conn.want,
                 conn.max_write)

    def forget_top_folders(self) -> None:
        """The store has just become an organisation: the kernel kept the top folders'
        names for everyone, long; forgetting them makes every path be asked again (and
        checked against the caller's roles)."""
        if self.follower is None:
            return
        names = [name for name, _ in self.service.list_folder_stats(Actor.from_ids(0, 0), "/")]
        self.follower.forget_names_in("/", names)

    # ------------------------------------------------------------ attributes

    def getattr(self, path: str | None, fh: Any = None) -> dict[str, int]:
        """Unused: mount.EncfsFUSE serves getattr from `attributes`, without a dict."""
        return stat_of(self.attributes(path, fh))

    @translated
    def attributes(self, path: str | None, fh: Any = None) -> Attributes:
        """What `stat` shows: the stored attributes, with the size of a file being
        written (its draft) and no links for a file removed while open."""
        opened = self.files.find(fh.fh) if fh is not None else None
        if path is None and opened is not None:  # removed while open
            return attributes_of(opened.item)._replace(size=opened.size)
        assert path is not None
        if path in self._hidden:
            opened = self._hidden[path]
            return attributes_of(opened.item)._replace(size=opened.size, nlink=0)
        if ControlTree.owns(path):
            return self._control_attributes(path, self.control.entry(caller(), path))
        actor = caller()
        attributes = self.service.stat(actor, path)
        self.view_reach.check(actor, path, attributes.id)
        opened = self.files.for_item(attributes.id)
        return attributes if opened is None else attributes._replace(size=opened.size)

    def _control_attributes(self, path: str, entry: ControlEntry) -> Attributes:
        at = self.control.mounted_ns
        nlink = 2 if stat.S_ISDIR(entry.mode) else 1
        return Attributes(control_inode(path), entry.mode, os.getuid(), os.getgid(), entry.size, at, at, at,
                          nlink)

    @translated
    def chmod(self, path: str, mode: int) -> int:
        if ControlTree.owns(path):
            raise mfusepy.FuseOSError(errno.EPERM)
        self.service.set_mode(caller(), path, mode)
        return 0

    @translated
    def chown(self, path: str, uid: int, gid: int) -> int:
        if ControlTree.owns(path):
            raise mfusepy.FuseOSError(errno.EPERM)
        self.service.set_owner(caller(), path, uid, gid)
        return 0

    @translated
    def utimens(self, path: str, times: tuple[tuple[int, int], tuple[int, int]] | None = None) -> int:
        if path is not None and access_folder(path) is not None:
            return 0  # `touch FOLDER/.access`: its times are the mount's
        now = time.time_ns()
        atime, mtime = times if times is not None else ((0, UTIME_NOW), (0, UTIME_NOW))
        node = self.service.set_times(caller(), path, _resolve_time(atime, now), _resolve_time(mtime, now))
        opened = self.files.for_item(node.id)
        if opened is not None:
            self.files.set_mtime(opened, node.mtime_ns)
        return 0

    @translated
    def statfs(self, path: str) -> dict[str, int]:
        vfs = self.service.space()
        return {
            "f_bsize": vfs.f_bsize, "f_frsize": vfs.f_frsize, "f_blocks": vfs.f_blocks,
            "f_bfree": vfs.f_bfree, "f_bavail": vfs.f_bavail, "f_files": vfs.f_files,
            "f_ffree": vfs.f_ffree, "f_favail": vfs.f_favail, "f_namemax": 255,
        }

    # ------------------------------------------------------------ directories

    @translated
    def mkdir(self, path: str, mode: int) -> int:
        self.service.create_folder(caller(), path, mode)
        return 0

    @translated
    def rmdir(self, path: str) -> int:
        self.service.remove_folder(caller(), path)
        return 0

    @translated
    def opendir(self, path: str) -> int:
        """Snapshot the listing with every entry's attributes (served by readdirplus)."""
        actor = caller()
        if ControlTree.owns(path):
            entries = [
                (name, self._control_attributes(f"{path}/{name}", entry))
                for name, entry in self.control.list(actor, path)
            ]
            above = path.rsplit("/", 1)[0]
            here, parent = control_inode(path), control_inode(above) if above else ROOT_ID
        else:
            entries = self.view_reach.shown(actor, path, self.service.list_folder_stats(actor, path))
            here = self.service.stat(actor, path).id
            parent = self.service.stat(actor, path.rsplit("/", 1)[0] or "/").id
        number = next(self._dir_numbers)
        self._dir_listings[number] = [(".", _dot(here)), ("..", _dot(parent)), *entries]
        return number

    def listing(self, number: int) -> list[tuple[str, Attributes]]:
        return self._dir_listings.get(number, [])

    def readdir(self, path: str, fh: int) -> list[str]:
        """Unused: mount.EncfsFUSE serves listings (with attributes) from `listing`."""
        return [name for name, _ in self.listing(fh)]

    def releasedir(self, path: str, fh: int) -> int:
        self._dir_listings.pop(fh, None)
        return 0

    # ------------------------------------------------------------ names

    @translated
    def rename(self, old: str, new: str, flags: int = 0) -> int:
        if flags & RENAME_EXCHANGE:
            raise mfusepy.FuseOSError(errno.EINVAL)
        if in_unlink() and os.path.basename(new).startswith(HIDDEN_PREFIX):
            self._hide(old, new)
            return 0
        if access_folder(new) is not None and not ControlTree.owns(old):  # an editor saving .access
            self.service.access_admin.write_from_file(caller(), old, access_folder(new))
            return 0
        if ControlTree.owns(old) or ControlTree.owns(new):
            raise mfusepy.FuseOSError(errno.EPERM)
        self.service.move(caller(), old, new, replace=not flags & RENAME_NOREPLACE)
        return 0

    def _hide(self, path: str, hidden: str) -> None:
        """libfuse renames a file that is removed while open to a hidden name and
        removes that name at the last close. In Files the item is removed now; the
        open descriptors keep its content, reachable under the hidden name."""
        actor = caller()
        node = self.service.lookup(actor, path)
        opened = self.files.for_item(node.id)
        self.service.remove_item(actor, path)
        if opened is not None:
            self._hidden[hidden] = opened

    @translated
    def unlink(self, path: str) -> int:
        if self._hidden.pop(path, None) is not None:
            return 0
        self.service.remove_item(caller(), path)
        return 0

    @translated
    def symlink(self, target: str, source: str) -> int:
        """`ln -s SOURCE TARGET`. In a folder the text is kept as given. Into
        /.datasets or /.projects, a SOURCE inside this mount given as an absolute path
        is made relative, so the service reads every link's text the same way."""
        if self.mountpoint and (source + "/").startswith(self.mountpoint + "/") and target.startswith(VIEWS):
            inside = "/" + source[len(self.mountpoint) :].lstrip("/")
            source = os.path.relpath(inside, os.path.dirname(target))
        self.service.create_link(caller(), target, source, symbolic=True)
        return 0

    @translated
    def link(self, target: str, source: str) -> int:
        self.service.create_link(caller(), target, source, symbolic=False)
        return 0

    @translated
    def mknod(self, path: str, mode: int, dev: int) -> int:
        if stat.S_ISREG(mode):
            self.service.create_item(caller(), path, mode)
        else:
            self.service.create_special(caller(), path, mode, dev)
        return 0

    @translated
    def readlink(self, path: str) -> str:
        if ControlTree.owns(path):
            entry = self.control.entry(caller(), path)
            if entry.target:
                return entry.target
            raise mfusepy.FuseOSError(errno.EINVAL)
        return self.service.read_link(caller(), path)

    # ------------------------------------------------------------ files

    @translated
    def create(self, path: str, mode: int, fi: Any) -> int:
        actor = caller()
        item = self.service.create_item(actor, path, mode, exclusive=bool(fi.flags & os.O_EXCL))
        fi.fh = self.files.open(actor, path, item, truncate=item.size > 0 and bool(fi.flags & os.O_TRUNC))
        return 0

    @translated
    def open(self, path: str, fi: Any) -> int:
        actor = caller()
        if ControlTree.owns(path):
            return self._open_control(actor, path, fi)
        writable = fi.flags & os.O_ACCMODE != os.O_RDONLY
        truncate = writable and bool(fi.flags & os.O_TRUNC)
        fi.noflush = not writable  # nothing to commit: close(2) of a reader costs no round trip
        removed = self._hidden.get(path)
        if removed is not None:  # a file removed while open, opened again by /proc/PID/fd/N
            fi.fh = self.files.open(actor, path, removed.item, truncate=truncate)
            return 0
        try:
            node = self.service.open_item(actor, path, writable)
            self.view_reach.check(actor, path, node.id)  # a name another user's lookup left cached
        except NotFound:
            # The kernel opens only names it holds, so another mount or the CLI removed
            # this one since. ESTALE makes the kernel look the name up again and retry:
            # an O_CREAT open (whose flag the kernel does not pass on) then creates it.
            raise mfusepy.FuseOSError(errno.ESTALE) from None
        if isinstance(node, Folder):
            raise mfusepy.FuseOSError(errno.EISDIR)
        fi.fh = self.files.open(actor, path, node, truncate=truncate)
        return 0

    def _open_control(self, actor: Actor, path: str, fi: Any) -> int:
        writable = fi.flags & os.O_ACCMODE != os.O_RDONLY
        folder = access_folder(path)
        if writable and folder is None:
            raise mfusepy.FuseOSError(errno.EACCES)
        number = next(self._control_numbers)
        content = self.control.content(actor, path)  # ENOENT for a folder the caller cannot see
        if writable:
            assert folder is not None
            kept = b"" if fi.flags & os.O_TRUNC else content
            truncated = bool(fi.flags & os.O_TRUNC)
            self._access_writes[number] = AccessDraft(actor, folder, bytearray(kept), truncated)
        self._control_reads[number] = content
        fi.fh = number
        fi.direct_io = 1
        return 0

    def _control_content(self, fh: int) -> bytes | None:
        return self._control_reads.get(fh) if fh >= FIRST_CONTROL_HANDLE else None

    def read_buf(self, *args: Any) -> int:
        """Present so that libfuse calls read_buf: mount.EncfsFUSE.read_buf serves it
        from `read_source` (a descriptor libfuse copies from, or bytes)."""
        raise mfusepy.FuseOSError(errno.ENOSYS)

    def write_buf(self, *args: Any) -> int:
        """Present so that libfuse calls write_buf: mount.EncfsFUSE.write_buf hands
        `write` a payload that is spliced into the draft's file."""
        raise mfusepy.FuseOSError(errno.ENOSYS)

    @translated
    def read_source(self, fh: int, size: int, offset: int) -> tuple[int | bytes, int]:
        draft = self._access_writes.get(fh)
        if draft is not None:
            data = bytes(draft.content[offset : offset + size])
            return data, len(data)
        content = self._control_content(fh)
        if content is not None:
            data = content[offset : offset + size]
            return data, len(data)
        opened = self.files.get(fh)
        with opened.lock:
            return opened.read_source(size, offset)

    @translated
    def write(self, path: str | None, data: bytes | Payload, offset: int, fi: Any) -> int:
        draft = self._access_writes.get(fi.fh)
        if draft is not None:
            return draft.write(data if isinstance(data, bytes) else data.to_bytes(), offset)
        opened = self.files.get(fi.fh)
        return self.files.write(caller(), path or opened.item.name, opened, data, offset)

    @translated
    def truncate(self, path: str | None, length: int, fh: Any = None) -> int:
        actor = caller()
        draft = self._access_writes.get(fh.fh) if fh is not None else None
        if draft is not None:
            draft.truncate(length)
            return 0
        opened = self.files.find(fh.fh) if fh is not None else None
        if opened is not None:
            self.files.truncate(actor, path or opened.item.name, opened, length)
            return 0
        assert path is not None
        if ControlTree.owns(path):  # truncate(2) by name: open the access list to change it
            raise mfusepy.FuseOSError(errno.EPERM)
        node = self.service.open_item(actor, path, writable=True)
        if isinstance(node, Folder):
            raise mfusepy.FuseOSError(errno.EISDIR)
        number = self.files.open(actor, path, node, truncate=False)
        try:
            opened = self.files.get(number)
            self.files.truncate(actor, path, opened, length)
            self.files.commit(actor, path, opened, durable=False)
        finally:
            self.files.release(number)
        return 0

    @translated
    def copy_file_range(self, path_in: str | None, fi_in: Any, offset_in: int, path_out: str | None,
                        fi_out: Any, offset_out: int, length: int, flags: int) -> int:
        """A stored file copied into an empty one (what `cp` asks) moves no bytes: the
        copy counts the same blob. Any other copy is EOPNOTSUPP, and the kernel then
        copies through reads and writes."""
        source, target = self.files.find(fi_in.fh), self.files.find(fi_out.fh)
        copied = None
        if source is not None and target is not None and not flags:
            copied = self.files.copy_stored(caller(), path_out or target.item.name, target, source, offset_in,
                                            offset_out, length)
        if copied is None:
            raise mfusepy.FuseOSError(errno.EOPNOTSUPP)
        return copied

    @translated
    def fallocate(self, path: str | None, mode: int, offset: int, length: int, fi: Any) -> int:
        """Every mode the kernel passes on (reserve, keep size, punch, zero, collapse,
        insert) changes the open file's draft (draft.Draft.change_range)."""
        opened = self.files.get(fi.fh)
        self.files.allocate(caller(), path or opened.item.name, opened, offset, length, mode)
        return 0

    @translated
    def flush(self, path: str | None, fi: Any) -> int:
        draft = self._access_writes.get(fi.fh)
        if draft is not None and draft.dirty:
            draft.dirty = False  # one attempt per change: a refusal is reported once, at this close
            self.service.access_admin.write_text(draft.actor, draft.folder, bytes(draft.content))
        if self._control_content(fi.fh) is not None:
            return 0
        self._commit(path, self.files.get(fi.fh), durable=False)
        return 0

    @translated
    def fsync(self, path: str | None, datasync: int, fi: Any) -> int:
        if self._control_content(fi.fh) is not None:
            return 0
        self._commit(path, self.files.get(fi.fh), durable=True)
        return 0

    def _commit(self, path: str | None, opened: OpenFile, durable: bool) -> None:
        try:
            self.files.commit(caller(), path or opened.item.name, opened, durable=durable)
        except EncfsError:
            if path is not None:  # the kernel cached the refused bytes: drop them
                self._forget_cached_pages(path)
            raise

    def _forget_cached_pages(self, path: str) -> None:
        fuse = mfusepy._libfuse.fuse_get_context().contents.fuse
        if fuse:
            mfusepy._libfuse.fuse_invalidate_path(ctypes.c_void_p(fuse), path.encode())

    @translated
    def release(self, path: str | None, fi: Any) -> int:
        self._access_writes.pop(fi.fh, None)
        if self._control_reads.pop(fi.fh, None) is not None:
            return 0
        self.files.release(fi.fh)
        return 0

    # ------------------------------------------------------------ extended attributes

    @translated
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        """`user.*` only: mount.EncfsFUSE answers other namespaces ENOTSUP itself."""
        if ControlTree.owns(path):
            raise mfusepy.FuseOSError(errno.ENODATA)
        return self.service.get_attribute(caller(), path, name)

    @translated
    def listxattr(self, path: str) -> list[str]:
        if ControlTree.owns(path):
            return []
        return self.service.list_attributes(caller(), path)

    @translated
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        if ControlTree.owns(path):
            raise mfusepy.FuseOSError(errno.EPERM)
        if not name.startswith(KEPT_NAMESPACE):  # tools know ENOTSUP means "not supported"
            raise mfusepy.FuseOSError(errno.ENOTSUP)
        self.service.set_attribute(caller(), path, name, value, options)
        return 0

    @translated
    def removexattr(self, path: str, name: str) -> int:
        if ControlTree.owns(path):
            raise mfusepy.FuseOSError(errno.EPERM)
        self.service.remove_attribute(caller(), path, name)
        return 0


class AccessDraft:
    """An access list opened for writing: its bytes, applied whole at close (flush)."""

    def __init__(self, actor: Actor, folder: str, content: bytearray, dirty: bool) -> None:
        self.actor, self.folder, self.content, self.dirty = actor, folder, content, dirty

    def write(self, data: bytes, offset: int) -> int:
        """Bytes past the limit are not kept: one byte over is enough for the close to
        refuse the list (EINVAL, with the reason)."""
        kept = data[: max(0, ACCESS_TEXT_MAX + 1 - offset)]
        if offset > len(self.content) and kept:
            self.content.extend(bytes(offset - len(self.content)))
        self.content[offset : offset + len(kept)] = kept
        if len(kept) < len(data) and len(self.content) <= ACCESS_TEXT_MAX:
            self.content.extend(bytes(ACCESS_TEXT_MAX + 1 - len(self.content)))
        self.dirty = True
        return len(data)

    def truncate(self, length: int) -> None:
        del self.content[length:]
        self.content.extend(bytes(max(0, length - len(self.content))))
        self.dirty = True


def _dot(node_id: int) -> Attributes:
    return Attributes(node_id, stat.S_IFDIR | 0o755, 0, 0, 0, 0, 0, 0, 2)


def _resolve_time(spec: tuple[int, int], now: int) -> int | None:
    """A utimens timespec in ns; None for UTIME_OMIT (keep the stored time)."""
    seconds, nanoseconds = spec
    if nanoseconds == UTIME_NOW:
        return now
    if nanoseconds == UTIME_OMIT:
        return None
    return seconds * 1_000_000_000 + nanoseconds

