"""Mounting: checks before FUSE starts, libfuse3 options, and two additions to
mfusepy's FUSE class: listings that carry attributes (readdirplus, so `ls -l` and
`find` need no getattr per entry) and rename flags (RENAME_NOREPLACE)."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import resource
import threading
import time
from pathlib import Path
from typing import Any

from encfs.errors import StoreError
from encfs.fs import connection, invalidation
from encfs.fs.rename_guard import SUPPORTED_VERSIONS, RenameGuard
from encfs.fs.watchdog import Watchdog

log = logging.getLogger("encfs")

LONG_CACHE_SECONDS = 60.0  # names and attributes, while the journal follower keeps them true
SHORT_CACHE_SECONDS = 1.0  # without a follower (a libfuse whose node table encfs cannot read)
SYNC_SECONDS = 5.0  # committed changes are flushed to disk at least this often
ORGANISED_ATTRIBUTE_SECONDS = 1.0  # attributes on a mount shared by users: they are the same for every caller
SETTLE_SECONDS = 0.3  # a changed DICOM series' manifest is rewritten once quiet this long
SWEEP_SECONDS = 10.0  # how often a running mount clears drafts abandoned by killed processes
FUSE_FILL_DIR_PLUS = 2
READ_AHEAD_KB = 4096
EXIT_GRACE_SECONDS = 5.0  # after aborting a stuck mount's connection, before exiting anyway


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
            if len(fields) > 1 and connection.unescape(fields[1]) == target:
                return True
    return False


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


def check_multi_user(multi_user: bool) -> None:
    """Serving other users needs root, or `user_allow_other` in /etc/fuse.conf."""
    if not multi_user or os.geteuid() == 0:
        return
    try:
        lines = Path("/etc/fuse.conf").read_text().splitlines()
    except OSError:
        lines = []
    if "user_allow_other" not in (line.split("#", 1)[0].strip() for line in lines):
        raise StoreError("--multi-user needs root, or user_allow_other in /etc/fuse.conf (mount as root to "
                         "serve every user, or without --multi-user to serve only yourself)")


class FuseBuf(ctypes.Structure):
    """libfuse 3's struct fuse_buf (before 3.17)."""

    _fields_ = [("size", ctypes.c_size_t), ("flags", ctypes.c_int), ("mem", ctypes.c_void_p),
                ("fd", ctypes.c_int), ("pos", ctypes.c_int64)]


class FuseBufVec(ctypes.Structure):
    """struct fuse_bufvec with its one inline buffer (mfusepy declares a pointer there)."""

    _fields_ = [("count", ctypes.c_size_t), ("idx", ctypes.c_size_t), ("off", ctypes.c_size_t),
                ("buf", FuseBuf)]


FUSE_BUF_IS_FD, FUSE_BUF_FD_SEEK = 1 << 1, 1 << 2
_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]


def buffer_vector(source: int | bytes, size: int, offset: int) -> int:
    """A malloc'd fuse_bufvec (libfuse frees it) describing either `size` bytes at
    `offset` of an open file (libfuse copies them itself, no Python copy), or bytes."""
    vector = _libc.malloc(ctypes.sizeof(FuseBufVec))
    vec = FuseBufVec.from_address(vector)
    vec.count, vec.idx, vec.off = 1, 0, 0
    if isinstance(source, int):
        vec.buf.size, vec.buf.flags, vec.buf.mem = size, FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK, None
        vec.buf.fd, vec.buf.pos = source, offset
    else:
        memory = _libc.malloc(max(1, len(source)))
        ctypes.memmove(memory, source, len(source))
        vec.buf.size, vec.buf.flags, vec.buf.mem, vec.buf.fd, vec.buf.pos = len(source), 0, memory, -1, 0
    return vector


class SplicedPayload:
    """The data of one WRITE request, still in libfuse's buffer (perhaps a pipe)."""

    def __init__(self, libfuse: Any, source: Any, size: int) -> None:
        self.libfuse, self.source, self.size = libfuse, source, size

    def _copy(self, target: FuseBufVec) -> int:
        copied = self.libfuse.fuse_buf_copy(ctypes.byref(target), self.source, 0)
        if copied < 0:
            raise OSError(-copied, os.strerror(-copied))
        return copied

    def copy_to(self, fd: int, offset: int) -> int:
        target = FuseBufVec(count=1)
        target.buf.size, target.buf.flags = self.size, FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK
        target.buf.fd, target.buf.pos = fd, offset
        return self._copy(target)

    def to_bytes(self) -> bytes:
        memory = ctypes.create_string_buffer(self.size)
        target = FuseBufVec(count=1)
        target.buf.size, target.buf.mem, target.buf.fd = self.size, ctypes.addressof(memory), -1
        copied = self._copy(target)  # before reading the buffer
        return memory.raw[:copied]


def fill_stat(st: Any, attributes: Any, block_size: int = 0) -> None:
    st.st_ino, st.st_mode, st.st_nlink = attributes.id, attributes.mode, attributes.nlink
    st.st_rdev = attributes.rdev
    st.st_blksize = block_size
    st.st_uid, st.st_gid, st.st_size = attributes.uid, attributes.gid, attributes.size
    st.st_blocks = (attributes.size + 511) // 512
    st.st_atimespec.tv_sec, st.st_atimespec.tv_nsec = divmod(attributes.atime_ns, 1_000_000_000)
    st.st_mtimespec.tv_sec, st.st_mtimespec.tv_nsec = divmod(attributes.mtime_ns, 1_000_000_000)
    st.st_ctimespec.tv_sec, st.st_ctimespec.tv_nsec = divmod(attributes.ctime_ns, 1_000_000_000)


_kept_thread_states: set[int] = set()


def keep_thread_state() -> None:
    """Give the calling libfuse worker thread a Python thread state for good.

    A ctypes callback on a thread Python did not start makes a thread state and
    deletes it again on every call, which cost a third of each request on the
    multi-threaded loop. One extra PyGILState_Ensure that is never released keeps it
    (the GIL itself is still released after each call)."""
    ident = threading.get_ident()
    if ident not in _kept_thread_states:
        ctypes.pythonapi.PyGILState_Ensure()
        _kept_thread_states.add(ident)


def cache_options(seconds: float) -> dict[str, Any]:
    """The kernel's caches for a mount: names, the absence of names and attributes
    are kept `seconds` (0: the kernel asks every time); pages until mtime or size
    change (auto_cache) or the journal follower says so."""
    return {"auto_cache": True, "entry_timeout": seconds, "attr_timeout": seconds,
            "negative_timeout": seconds}


def default_cache_seconds(libfuse: Any) -> float:
    """Long where the follower can tell the kernel what to forget (it reads libfuse's
    node table, whose layout is known for these versions), else short."""
    return LONG_CACHE_SECONDS if libfuse.fuse_version() in SUPPORTED_VERSIONS else SHORT_CACHE_SECONDS


def make_fuse_class(mfusepy: Any, mountpoint: str = "", watchdog: Watchdog | None = None,
                    stop: threading.Event | None = None) -> type:
    """The FUSE class for a mount at `mountpoint` (resolved: libfuse keeps it so);
    every request it answers is noted by the watchdog; once libfuse is up, a journal
    follower keeps the kernel's caches true until `stop`."""
    from encfs.fs.operations import IO_BLOCK, KEPT_NAMESPACE
    kept_namespace = KEPT_NAMESPACE.encode()
    libfuse = mfusepy._libfuse
    libfuse.fuse_buf_copy.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
    libfuse.fuse_buf_copy.restype = ctypes.c_ssize_t
    libfuse.fuse_buf_size.argtypes = [ctypes.c_void_p]
    libfuse.fuse_buf_size.restype = ctypes.c_size_t

    class EncfsFUSE(mfusepy.FUSE):
        rename_guard = RenameGuard(libfuse, keep_thread_state)
        follower: invalidation.Follower | None = None

        def _wrapper(self, func, *args, **kwargs):  # type: ignore[no-untyped-def]
            keep_thread_state()
            if watchdog is None:
                return self._answer(func, *args, **kwargs)
            watchdog.started(func.__name__, args[0] if args else None)
            try:
                return self._answer(func, *args, **kwargs)
            finally:
                watchdog.finished()

        def _answer(self, func, *args, **kwargs):  # type: ignore[no-untyped-def]
            """Answer a request; what it changed is forgotten on every other path
            before libfuse sends the answer."""
            if self.follower is None:
                return super()._wrapper(func, *args, **kwargs)
            outermost = invalidation.request_started()
            try:
                return super()._wrapper(func, *args, **kwargs)
            finally:
                written = invalidation.request_finished(outermost)
                if written:
                    self._forget_elsewhere(func.__name__, args, written)

        def _forget_elsewhere(self, operation: str, args: tuple, written: list) -> None:
            try:
                assert self.follower is not None
                paths = invalidation.request_paths(args, self.encoding)
                self.follower.after_request(operation, paths, written)
            except Exception:
                log.exception("%s: could not tell the kernel what the change made stale", operation)

        def init_fuse_3(self, conn, config):  # type: ignore[no-untyped-def]
            super().init_fuse_3(conn, config)
            fuse = libfuse.fuse_get_context().contents.fuse
            self.rename_guard.install(fuse, mountpoint)
            self._follow_journal(fuse)

        def destroy(self, private_data):  # type: ignore[no-untyped-def]
            if self.follower is not None:  # libfuse frees its nodes next
                self.follower.halt()
            return super().destroy(private_data)

        def _follow_journal(self, fuse: int) -> None:
            nodes = self.rename_guard.nodes
            if nodes is None or stop is None:
                log.warning("the change journal is not followed (libfuse's node table is unknown): another "
                            "mount's changes show only when the kernel's caches expire")
                return
            kernel = invalidation.KernelCache(libfuse, fuse, nodes)
            operations = self.operations
            follower = invalidation.Follower(
                operations.service.meta, kernel, operations.control.forget_searches)
            follower.start(stop)
            self.follower = operations.follower = follower
            log.info("following the change journal from record %d", follower.seen)

        def getattr_fuse_3(self, path, buf, fip):  # type: ignore[no-untyped-def]
            ctypes.memset(buf, 0, ctypes.sizeof(mfusepy.c_stat))
            name = None if path is None else path.decode(self.encoding, self.errors)
            try:
                attributes = self.operations.attributes(name, fip.contents if fip else None)
            except mfusepy.FuseOSError as exc:  # ENOENT before every create: answered directly
                return -exc.errno
            fill_stat(buf.contents, attributes, IO_BLOCK)
            return 0

        def getxattr(self, path, name, value, size, *args):  # type: ignore[no-untyped-def]
            if not name.startswith(kept_namespace):  # asked before every write: answered here,
                return -errno.ENOTSUP  # without an exception (ENOTSUP also stops `ls` asking)
            return super().getxattr(path, name, value, size, *args)

        def readdir_fuse_3(self, path, buf, filler, offset, fip, flags):  # type: ignore[no-untyped-def]
            listing = self.operations.listing(fip.contents.fh)
            st = mfusepy.c_stat()
            fill_flags = FUSE_FILL_DIR_PLUS if flags & 1 else 0
            for index in range(offset, len(listing)):
                name, attributes = listing[index]
                fill_stat(st, attributes)
                if filler(buf, name.encode(self.encoding, self.errors), st, index + 1, fill_flags):
                    break
            return 0

        def read_buf(self, path, bufpp, size, offset, fip):  # type: ignore[no-untyped-def]
            source, size = self.operations.read_source(fip.contents.fh, size, offset)
            bufpp[0] = ctypes.cast(buffer_vector(source, size, offset), type(bufpp[0]))
            return 0

        def write_buf(self, path, bufv, offset, fip):  # type: ignore[no-untyped-def]
            source = ctypes.cast(bufv, ctypes.c_void_p)
            payload = SplicedPayload(libfuse, source, libfuse.fuse_buf_size(source))
            return self.operations.write(None if path is None else path.decode(self.encoding, self.errors),
                                         payload, offset, fip.contents)

        def copy_file_range(self, path_in, fi_in, offset_in, path_out, fi_out, offset_out, length,  # type: ignore[no-untyped-def]
                            flags):
            """mfusepy declares this callback but has no wrapper for it."""
            return self.operations.copy_file_range(
                None if path_in is None else path_in.decode(self.encoding, self.errors), fi_in.contents,
                offset_in, None if path_out is None else path_out.decode(self.encoding, self.errors),
                fi_out.contents, offset_out, length, flags)

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


def cache_times(organised: bool, one_user: bool, seconds: float) -> tuple[float, float, float]:
    """How long the kernel may keep names, attributes and missing names (entry,
    attribute and negative timeouts) without asking encfs.

    The kernel shares these caches between every user of a mount: a name alice looked
    up would answer bob's lookup without encfs hearing of it. So once the store has
    users, names and missing names are never kept (zero timeouts: the kernel asks encfs
    again for every component of every path it walks, as the caller, and encfs checks
    their role there). Attributes are kept a second: they are the same for every
    caller (open modes, docs/SEMANTICS.md "Access"), and the kernel only uses them for
    a name the walk has just looked up as the caller, for a descriptor the caller
    opened, or for the caller's working folder. Without them the kernel would also ask
    for every folder's attributes on the way down (a second round trip per component).
    Without users everyone sees the same tree, and so does a mount that serves one
    user (`encfs mount --as`): there everything is kept `seconds` (long while the
    journal follower tells the kernel what to forget)."""
    if organised and not one_user:
        return 0.0, min(seconds, ORGANISED_ATTRIBUTE_SECONDS), 0.0
    return seconds, seconds, seconds


def apply_cache_times(config: Any, organised: bool, one_user: bool, seconds: float) -> None:
    """Set the timeouts in libfuse's own configuration, which it reads for every reply
    (so users added while mounted take effect within SETTLE_SECONDS)."""
    config.entry_timeout, config.attr_timeout, config.negative_timeout = cache_times(
        organised, one_user, seconds)


def follow_organisation(operations: Any, service: Any, stop: threading.Event) -> None:
    """Keep the cache times in step with whether the store has users (the mount's
    start set them: `operations.organised`)."""
    while not stop.wait(SETTLE_SECONDS):
        config = operations.fuse_config
        if config is None:
            continue
        try:
            organised = service.access.organised_now(service.meta)
        except Exception:
            log.exception("could not read whether the store has users")
            continue
        if organised != operations.organised:
            one_user = operations.served is not None
            apply_cache_times(config, organised, one_user, operations.cache_seconds)
            if organised and not one_user:
                operations.forget_top_folders()  # names everyone's lookups kept must be asked again
            operations.organised = organised
            times = cache_times(organised, one_user, operations.cache_seconds)
            log.info("cache times: %s (the store %s users)", times, "has" if organised else "has no")


def raise_readahead(mountpoint: Path, stop: threading.Event) -> None:
    """The kernel gives a FUSE mount 128 KiB of read-ahead, so a cold sequential read
    costs a daemon round trip per 128 KiB. As root, raise it once the mount is up."""
    while not stop.is_set() and not os.path.ismount(mountpoint):
        time.sleep(0.02)
    if stop.is_set() or os.geteuid() != 0:
        return
    device = os.stat(mountpoint).st_dev
    knob = Path(f"/sys/class/bdi/{os.major(device)}:{os.minor(device)}/read_ahead_kb")
    try:
        knob.write_text(str(READ_AHEAD_KB))
    except OSError as exc:
        log.info("could not raise read-ahead (%s)", exc)


def upkeep(service: Any, stop: threading.Event) -> None:
    """Settle changed DICOM series and quiet unsettled files often; flush committed
    changes to disk now and then;
    clear drafts a killed process (a CLI upload) left in the spool."""
    from encfs.live_drafts import quiet_seconds
    from encfs.recovery import clear_abandoned_drafts

    last_sync = last_sweep = time.monotonic()
    while not stop.wait(SETTLE_SECONDS):
        try:
            service.settle_series(quiet_for=SETTLE_SECONDS)
            service.settle_drafts(quiet_for=quiet_seconds())
            if time.monotonic() - last_sync > SYNC_SECONDS:
                service.sync()
                last_sync = time.monotonic()
            if time.monotonic() - last_sweep > SWEEP_SECONDS:
                clear_abandoned_drafts(service.blobs)
                last_sweep = time.monotonic()
        except Exception:
            log.exception("upkeep failed")


def warm_up_parsers() -> None:
    """Import Pillow in the background, so that the first image committed does not wait
    for it to load. Ordinary DICOM files are read by encfs's own tag reader; pydicom
    (with numpy, about 38 MB resident) loads only for the first unusual one, and PyAV
    for the first video."""
    try:
        import PIL.Image  # noqa: F401

        import encfs.media.dicom_series  # noqa: F401
    except Exception as exc:  # a slower first file is all this costs
        log.warning("could not warm up the media parsers: %s", exc)


def allow_many_open_files() -> None:
    """Every file open through the mount, by any process, holds a descriptor in this
    one (its stored content, or its draft): raise the soft limit to the hard one, as a
    default soft limit of 1024 would be reached by a few DataLoader workers."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        log.info("open files allowed: %s (was %s)", hard, soft)


def exit_stuck(service: Any, mountpoint: Path, stop: threading.Event) -> None:
    """libfuse was asked to stop and has not: a worker is stuck. Abort the mount's
    connection (its callers get errors, the workers are freed); if the daemon still
    does not stop, flush what is committed and exit."""
    log.error("the mount at %s did not stop when asked: a request is stuck; aborting its FUSE connection",
              mountpoint)
    connection.abort(mountpoint)
    if stop.wait(EXIT_GRACE_SECONDS):
        return
    log.error("the mount at %s still did not stop: exiting with the stuck request unanswered", mountpoint)
    try:
        service.sync()
    finally:
        os._exit(1)


def start_cloud_sync(service: Any, stop: threading.Event) -> None:
    """encfs mount --sync-every: sync the cloud-synced folders in the background."""
    from encfs.cloud.sync import SYNC_EVERY_VARIABLE, sync_periodically

    seconds = os.environ.get(SYNC_EVERY_VARIABLE)
    if seconds:
        log.info("syncing cloud-synced folders every %s s", seconds)
        threading.Thread(target=sync_periodically, args=(service, float(seconds), stop), daemon=True).start()


def served_actor(service: Any, email: str) -> Any:
    """The user a mount `--as EMAIL` serves: they must have a uid, and a mount not run
    by root serves only the Linux user who runs it."""
    from encfs.errors import NotFound
    from encfs.model import Actor

    try:
        user = service.access_admin.user(email)
    except NotFound:
        raise StoreError(f"no user {email} in this store (encfs user ls)") from None
    if user.uid is None:
        raise StoreError(f"user {email} has no Linux uid (encfs user set {email} --uid N)")
    if os.geteuid() not in (0, user.uid):
        raise StoreError(f"--as serves the Linux user who mounts it; {email} is uid {user.uid}")
    return Actor.from_ids(user.uid, user.uid)


def serve(store_path: Path, mountpoint: Path, debug: bool = False, multi_user: bool = False,
          serve_as: str | None = None) -> None:
    """Mount and serve until unmounted (blocks). A multi-user mount serves every Linux
    user (the kernel checks modes per caller, the service their roles); run by root, it
    also runs their `encfs` commands (remote.py). With `serve_as`, it serves that
    organisation user only, to the Linux user who mounts it."""
    mfusepy = load_mfusepy()
    from encfs.fs.operations import MAX_READ, EncfsOperations
    from encfs.remote import CommandServer
    from encfs.service import FilesService
    from encfs.store import open_store

    check_mountpoint(mountpoint)
    allow_many_open_files()
    store = open_store(store_path)
    service = FilesService(store)
    service.recover()
    operations = EncfsOperations(service, str(mountpoint))
    operations.cache_seconds = default_cache_seconds(mfusepy._libfuse)
    if serve_as is not None:
        operations.serve_only(served_actor(service, serve_as))
    stop = threading.Event()
    threading.Thread(target=upkeep, args=(service, stop), daemon=True).start()
    threading.Thread(target=follow_organisation, args=(operations, service, stop), daemon=True).start()
    threading.Thread(target=raise_readahead, args=(mountpoint, stop), daemon=True).start()
    threading.Thread(target=warm_up_parsers, daemon=True).start()
    start_cloud_sync(service, stop)
    watchdog = Watchdog(mountpoint)
    fuse_class = make_fuse_class(mfusepy, os.path.realpath(mountpoint), watchdog, stop)
    threading.Thread(target=watchdog.watch, daemon=True, args=(
        stop, fuse_class.rename_guard.exiting, lambda: exit_stuck(service, mountpoint, stop))).start()
    log.info("mounting store %s at %s (pid %d); the kernel caches names and attributes for %g s "
             "(none once the store has users, unless it serves one)",
             store_path, mountpoint, os.getpid(), operations.cache_seconds)
    commands = CommandServer(store_path, mountpoint)
    if multi_user and os.geteuid() == 0:
        commands.start()
    try:
        fuse_class(
            operations, str(mountpoint), raw_fi=True, foreground=True, debug=debug,
            fsname=f"encfs:{store_path}", subtype="encfs", default_permissions=True,
            allow_other=multi_user or (serve_as is not None and os.geteuid() == 0),  # root --as: for its user
            use_ino=True, max_read=MAX_READ, **cache_options(operations.cache_seconds),
        )
    finally:
        commands.stop()
        stop.set()
        service.settle_series()
        service.sync()
        store.close()
        log.info("unmounted %s", mountpoint)
