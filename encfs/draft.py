"""A draft: the new content of one item while it is being written.

A draft starts in memory and moves to a spool file beside the blob store once it
grows past `MEMORY_LIMIT`, so that small files (most training images) cost no
temporary file. While writes arrive in order, the sha256 is computed on the fly, big
pieces on a background thread (hashlib releases the GIL), so the writer's reply does
not wait for hashing and a commit needs no second pass; any other write pattern is
hashed once at commit.

In a store whose blobs are in a bucket, a draft also has an upload (blobs/s3.py): the
parts of the spool file written in order go up while the writer is still writing,
and the rest goes up before the commit's transaction (`upload_ahead`), so a close
waits for the last part only.

A spool file is also made durable as it grows (write-behind): every WRITE_BEHIND bytes
a background fdatasync starts, so that the disk (and its cache flush) works while the
writer is still sending, and an fsync at the end finds little left to do.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from encfs.blobs.removal import remove
from encfs.integrity import BlockSummer, Sums, fingerprint_bytes, fingerprint_fd

if TYPE_CHECKING:
    from encfs.blobs.base import BlobReader, BlobStore

MEMORY_LIMIT = 1 << 20
HASH_CHUNK = 4 << 20
ASYNC_HASH_MIN = 256 << 10
MAX_PENDING_HASH = 64 << 20
WRITE_BEHIND = 64 << 20
DRAFT_PREFIX, NEW_PREFIX, LIVE_PREFIX = "draft-", "new-", "live-"
KEEP_SIZE, PUNCH_HOLE, COLLAPSE_RANGE, ZERO_RANGE, INSERT_RANGE = 0x01, 0x02, 0x08, 0x10, 0x20
_libc = ctypes.CDLL(None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]

_hashing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encfs-hash")
_flushing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encfs-flush")


class Payload(Protocol):
    """Bytes to write that are not in Python yet (the mount's write buffer): copied
    straight into a file when the draft has one, so large writes never pass through
    Python."""

    size: int

    def copy_to(self, fd: int, offset: int) -> int: ...

    def to_bytes(self) -> bytes: ...


class Upload(Protocol):
    """A draft's content going to a bucket while it is written (see blobs/s3.py)."""

    def feed(self, fd: int, end: int) -> None: ...

    def invalidate(self) -> None: ...

    def finish(self, fd: int, size: int, sha: str) -> object: ...

    def abort(self) -> None: ...


class InOrderHash:
    """sha256 and block checksums of the bytes written so far, valid while they came
    in order."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()
        self._sums = BlockSummer()
        self.hashed = 0
        self.valid = True
        self._pending: Future | None = None
        self._pending_bytes = 0

    def wrote(self, data: bytes | memoryview, offset: int) -> None:
        if not self.valid:
            return
        if offset != self.hashed:
            self.valid = False
            return
        self.hashed += len(data)
        busy = self._pending is not None and not self._pending.done()
        if len(data) < ASYNC_HASH_MIN and not busy:
            self._update(data)
            return
        if self._pending_bytes > MAX_PENDING_HASH:
            self.wait()
        self._pending_bytes += len(data)
        self._pending = _hashing.submit(self._update, data)

    def _update(self, data: bytes | memoryview) -> None:
        self._sha.update(data)
        self._sums.update(data)

    def wrote_file_range(self, fd: int, offset: int, length: int) -> None:
        """Like `wrote`, for bytes that went straight into the file `fd`."""
        if not self.valid or offset != self.hashed:
            self.valid = False
            return
        self.hashed += length
        if self._pending_bytes > MAX_PENDING_HASH:
            self.wait()
        self._pending_bytes += length
        self._pending = _hashing.submit(lambda: self._update(os.pread(fd, length, offset)))

    def wait(self) -> None:
        if self._pending is not None:
            self._pending.result()
            self._pending, self._pending_bytes = None, 0

    def hexdigest(self) -> str:
        self.wait()
        return self._sha.hexdigest()

    def sums(self) -> Sums:
        self.wait()
        return self._sums.sums()


@dataclass(frozen=True)
class TakenBlob:
    """A stored blob a draft holds instead of bytes: its sha, size and an open reader."""

    sha: str
    size: int
    reader: BlobReader


class Draft:
    def __init__(self, spool_dir: Path, upload: Upload | None = None) -> None:
        self.spool_dir = spool_dir
        self._upload = upload
        self.buffer: bytearray | None = bytearray()
        self.fd = -1
        self.path: Path | None = None
        self.size = 0
        self._hash = InOrderHash()
        self._flush: Future | None = None
        self._flushed_size = 0
        self._taken: TakenBlob | None = None  # a stored blob (or its start) held, not copied
        self.live_name: str | None = None  # the spool file's name once it is the item's content
        self.changed = False  # written since its last commit (a live draft outlives commits)
        self.edits_existing = False  # started from the item's stored bytes (not empty, not a copy)

    @classmethod
    def from_local_file(cls, spool_dir: Path, source: Path, upload: Upload | None = None) -> Draft:
        draft = cls(spool_dir, upload)
        try:
            with open(source, "rb") as src:
                while chunk := src.read(HASH_CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[draft.write(view, draft.size) :]
        except BaseException:
            draft.discard()
            raise
        return draft

    @classmethod
    def reopen_live(cls, spool_dir: Path, name: str, is_current: Callable[[], bool]) -> Draft | None:
        """Write on in place into the spool file that is an item's unsettled content
        (live_drafts.py), without copying it. None when another writer holds it, or
        when it settled (or was replaced) while we waited for it (`is_current`)."""
        path = spool_dir / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(path).st_ino != os.fstat(fd).st_ino or not is_current():
                raise BlockingIOError
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None
        return cls.from_live_file(spool_dir, fd, name)

    @classmethod
    def from_live_file(cls, spool_dir: Path, fd: int, name: str) -> Draft:
        """A draft of the live file `name`, open and locked as `fd`."""
        draft = cls(spool_dir)
        draft.buffer, draft.fd, draft.path, draft.live_name = None, fd, spool_dir / name, name
        draft.size = draft._flushed_size = os.fstat(fd).st_size
        draft._hash.valid = False
        draft.edits_existing = True
        return draft

    def take_content_of(self, blob: TakenBlob, size: int) -> None:
        """Hold the first `size` bytes of a stored blob without copying them (a file
        copied within the mount). The open reader keeps the bytes even if the blob is
        removed meanwhile; they are copied only if the draft then changes, if it ends
        up holding only part of the blob, or if the blob has to be stored again."""
        if not self.is_blank():
            raise ValueError("only an empty draft can take a blob's content")
        self.buffer, self.size, self._taken = None, min(size, blob.size), blob
        self.changed = True

    def take_more_of(self, sha: str, offset: int, length: int) -> int:
        """The next bytes of the blob the draft holds the start of (the kernel splits a
        copy of 4 GiB or more): how many were added, 0 if this is not that case."""
        if self._taken is None or self._taken.sha != sha or offset != self.size:
            return 0
        added = max(0, min(length, self._taken.size - offset))
        self.size += added
        return added

    def holds_blob(self) -> bool:
        """A copy of (the start of) a stored blob, unchanged."""
        return self._taken is not None

    def is_spooled(self) -> bool:
        return self.buffer is None and self._taken is None

    def hashed_whole(self) -> bool:
        """Whether the content's sha256 is known without reading it again (written
        in order from the start, or a whole stored blob held)."""
        if self._taken is not None:
            return self.size == self._taken.size
        return self._hash.valid and self._hash.hashed == self.size

    def make_live(self) -> str:
        """Make the spool file (spilling a draft in memory, copying a taken blob) the
        one a record can name: renamed `live-…`, which sweepers leave alone (its lock
        is kept). Returns its name."""
        self._own_copy()
        self._spill()
        assert self.path is not None
        if self.live_name is None:
            name = LIVE_PREFIX + self.path.name.removeprefix(DRAFT_PREFIX)
            os.rename(self.path, self.spool_dir / name)
            self.path, self.live_name = self.spool_dir / name, name
        return self.live_name

    def sync_data(self) -> None:
        """fdatasync of a live spool file, whose size on disk is the content's size
        (recovery reads it from there)."""
        self._settle_flush()
        if os.fstat(self.fd).st_size != self.size:
            os.ftruncate(self.fd, self.size)
        os.fdatasync(self.fd)

    def is_blank(self) -> bool:
        """Empty, in memory, holding no blob: what take_content_of starts from."""
        return self.size == 0 and self.fd < 0 and self._taken is None

    def _own_copy(self) -> None:
        """Copy a taken blob's bytes into a spool file of the draft's own."""
        if self._taken is None:
            return
        reader = self._taken.reader
        self._taken = None
        self._new_spool_file()
        self._hash.valid = False
        try:
            copy_reader_into(reader, self.fd, self.size)
        finally:
            reader.close()

    def write(self, data: bytes | memoryview | Payload, offset: int) -> int:
        self._own_copy()
        self.changed = True
        if not isinstance(data, bytes | bytearray | memoryview):
            if self.buffer is not None and offset + data.size > MEMORY_LIMIT:
                self._spill()
            if self.buffer is None:
                written = data.copy_to(self.fd, offset)
                self._hash.wrote_file_range(self.fd, offset, written)
                self.size = max(self.size, offset + written)
                self._write_behind()
                self._feed_upload()
                return written
            data = data.to_bytes()
        end = offset + len(data)
        if self.buffer is not None and end > MEMORY_LIMIT:
            self._spill()
        if self.buffer is not None:
            if offset > len(self.buffer):
                self.buffer.extend(bytes(offset - len(self.buffer)))
            self.buffer[offset:end] = data
            written = len(data)
        else:
            written = os.pwrite(self.fd, data, offset)
        self._hash.wrote(data[:written], offset)
        self.size = max(self.size, offset + written)
        if self.buffer is None:
            self._write_behind()
            self._feed_upload()
        return written

    def _feed_upload(self) -> None:
        """Hand the upload the bytes written in order so far (it sends full parts)."""
        if self._upload is None:
            return
        if not self._hash.valid:
            self._upload.invalidate()
        elif self.fd >= 0:
            self._upload.feed(self.fd, self._hash.hashed)

    def _write_behind(self) -> None:
        """Start a background fdatasync once WRITE_BEHIND more bytes were written
        (unless the last one is still running). Not for a bucket store's draft: its
        content is made durable by the upload, not on the local disk."""
        if self._upload is not None or self.size - self._flushed_size < WRITE_BEHIND:
            return
        if self._flush is not None and not self._flush.done():
            return
        self._settle_flush()
        self._flushed_size = self.size
        self._flush = _flushing.submit(os.fdatasync, self.fd)

    def _settle_flush(self) -> None:
        """Settle the background fdatasync: cancel it if it has not started, else
        wait and raise what it met (the kernel reports a write-back error to one
        fsync only, so it must not be lost here)."""
        if self._flush is not None:
            flush, self._flush = self._flush, None
            if not flush.cancel():
                flush.result()

    def read(self, size: int, offset: int) -> bytes:
        if self._taken is not None:
            return self._taken.reader.pread(max(0, min(size, self.size - offset)), offset)
        if self.buffer is not None:
            return bytes(self.buffer[offset : offset + size])
        return os.pread(self.fd, size, offset)

    def truncate(self, length: int) -> None:
        self._own_copy()
        self.changed = True
        if self.buffer is not None and length > MEMORY_LIMIT:
            self._spill()
        if self.buffer is not None:
            if length < len(self.buffer):
                del self.buffer[length:]
            else:
                self.buffer.extend(bytes(length - len(self.buffer)))
        else:
            os.ftruncate(self.fd, length)
        if length < self._hash.hashed:
            self._hash.valid = False
            self._feed_upload()
        self.size = length

    def allocate(self, offset: int, length: int) -> None:
        """fallocate (mode 0): the disk space of [offset, offset + length) is reserved
        in the spool file, whose blocks become the blob's, and the draft grows to
        cover it. A range that fits in memory needs no reservation.

        A request for more than the disk has free is refused before it starts: ext4
        would fill the disk and then fail, and every other writer of the store would
        meet a full disk meanwhile. If it fails all the same, the blocks it took past
        the draft's end are given back."""
        self._own_copy()
        end = offset + length
        if self.buffer is not None and end > MEMORY_LIMIT:
            self._spill()
        if self.buffer is None:
            disk = os.fstatvfs(self.fd)
            if end - self.size > disk.f_bavail * disk.f_frsize:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            try:
                os.posix_fallocate(self.fd, offset, length)
            except OSError:
                os.ftruncate(self.fd, self.size)
                raise
        if end > self.size:
            self.truncate(end)

    def change_range(self, mode: int, offset: int, length: int) -> None:
        """fallocate with a mode (the kernel has checked the flags go together):
        KEEP_SIZE reserves, PUNCH_HOLE and ZERO_RANGE zero [offset, offset + length)
        (ZERO_RANGE grows the file unless KEEP_SIZE), COLLAPSE_RANGE removes it and
        INSERT_RANGE inserts that many zero bytes at `offset`. A spool file does it
        with its own fallocate, so holes stay holes in the stored blob; one its disk
        cannot do (unaligned, or not supported there) is done by copying. Any
        alignment is accepted."""
        self._own_copy()
        end = offset + length
        if mode & (COLLAPSE_RANGE | INSERT_RANGE):
            limit = self.size if mode & INSERT_RANGE else self.size - 1
            if offset > limit or (mode & COLLAPSE_RANGE and end >= self.size):
                raise OSError(errno.EINVAL, "the range must lie inside the file (and end before its end)")
        new_size = {COLLAPSE_RANGE: self.size - length, INSERT_RANGE: self.size + length}.get(
            mode, self.size if mode & KEEP_SIZE else max(self.size, end))
        if self.buffer is not None and new_size > MEMORY_LIMIT:
            self._spill()
        if mode != KEEP_SIZE:
            self._hash.valid = False
        if self.buffer is not None:
            self._change_buffer(mode, offset, end, new_size)
        else:
            self._change_file(mode, offset, length, new_size)
        self.size = new_size
        self.changed = True

    def _change_buffer(self, mode: int, offset: int, end: int, new_size: int) -> None:
        assert self.buffer is not None
        if mode & COLLAPSE_RANGE:
            del self.buffer[offset:end]
        elif mode & INSERT_RANGE:
            self.buffer[offset:offset] = bytes(end - offset)
        elif mode & (PUNCH_HOLE | ZERO_RANGE):
            stop = min(end, new_size)
            if stop > len(self.buffer):
                self.buffer.extend(bytes(stop - len(self.buffer)))
            if stop > offset:
                self.buffer[offset:stop] = bytes(stop - offset)

    def _change_file(self, mode: int, offset: int, length: int, new_size: int) -> None:
        if mode & (COLLAPSE_RANGE | INSERT_RANGE) and self.size > os.fstat(self.fd).st_size:
            os.ftruncate(self.fd, self.size)  # the file holds every byte the range moves
        if not mode & (PUNCH_HOLE | COLLAPSE_RANGE):  # takes space: refused before it fills the disk
            disk = os.fstatvfs(self.fd)
            if length > disk.f_bavail * disk.f_frsize:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        if _libc.fallocate(self.fd, mode, offset, length) == 0:
            if not mode & KEEP_SIZE and os.fstat(self.fd).st_size != new_size:
                os.ftruncate(self.fd, new_size)
            return
        failure = ctypes.get_errno()
        if failure not in (errno.EOPNOTSUPP, errno.EINVAL) or mode == KEEP_SIZE:
            raise OSError(failure, os.strerror(failure))
        if mode & COLLAPSE_RANGE:
            self._move_tail(offset + length, offset)
        elif mode & INSERT_RANGE:
            self._move_tail(offset, offset + length)
            self._write_zeros(offset, length)
        else:
            self._write_zeros(offset, max(0, min(offset + length, new_size) - offset))
        os.ftruncate(self.fd, new_size)

    def _move_tail(self, source: int, target: int) -> None:
        """Move the bytes from `source` to the end so that they start at `target`
        (last piece first when moving up, so nothing is overwritten before it is read)."""
        tail = self.size - source
        pieces = range(0, tail, HASH_CHUNK)
        for start in reversed(pieces) if target > source else pieces:
            data = os.pread(self.fd, min(HASH_CHUNK, tail - start), source + start)
            os.pwrite(self.fd, data, target + start)

    def _write_zeros(self, offset: int, length: int) -> None:
        for start in range(offset, offset + length, HASH_CHUNK):
            os.pwrite(self.fd, bytes(min(HASH_CHUNK, offset + length - start)), start)

    def load(self, content: bytes) -> None:
        """Start from existing (small) content."""
        self.buffer = bytearray(content)
        self.size = len(content)
        self._hash.valid = False
        self.edits_existing = True

    def fill_from(self, reader: BlobReader, size: int) -> None:
        """Start from existing (large) content, copied into the spool file."""
        self._spill()
        copy_reader_into(reader, self.fd, size)
        self.size = size
        self._hash.valid = False
        self.edits_existing = True

    def upload_ahead(self, sha: str) -> None:
        """Before the commit's transaction, in a bucket store: the rest of the content
        goes up now (outside the metadata lock); the transaction then names it."""
        if self._upload is not None and self.buffer is None and self._taken is None and self.fd >= 0:
            self._upload.finish(self.fd, self.size, sha)

    def save_as_blob(self, blobs: BlobStore, sha: str, durable: bool) -> bytes | None:
        """Hand the content to the blob store (a spool file is moved, not copied).
        Returns the blob's place when the store keeps one in the metadata (a bucket)."""
        self._settle_flush()
        if self._taken is not None:  # a taken blob that is gone from the store is stored again
            self._own_copy()
            if durable:
                os.fsync(self.fd)
        if self.buffer is not None:
            return blobs.write(sha, self.buffer, durable)
        assert self.path is not None
        if os.fstat(self.fd).st_size != self.size:  # a blob file is exactly its content
            os.ftruncate(self.fd, self.size)
        if self._upload is None:
            place = blobs.adopt(sha, self.path, durable)
        else:
            upload, self._upload = self._upload, None  # handed over: no longer the draft's to abort
            place = blobs.adopt(sha, self.path, durable, upload=upload)
        self.path = None
        return place

    def _spill(self) -> None:
        if self.buffer is None:
            return
        self._new_spool_file()
        data, self.buffer = self.buffer, None
        view = memoryview(data)
        while view:
            view = view[os.write(self.fd, view) :]

    def _new_spool_file(self) -> None:
        """A spool file, locked by this process before it takes the name `draft-…`:
        a sweeper removes a `draft-` file nobody locks at once, and a `new-` one (not
        locked yet, or left by a crash in between) only once it is some seconds old."""
        fd, name = tempfile.mkstemp(dir=self.spool_dir, prefix=NEW_PREFIX)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            path = self.spool_dir / f"{DRAFT_PREFIX}{uuid.uuid4().hex}"
            os.rename(name, path)
        except BaseException:
            os.close(fd)
            Path(name).unlink(missing_ok=True)
            raise
        self.fd, self.path = fd, path

    def digest(self) -> str:
        return self.fingerprint()[0]

    def fingerprint(self) -> tuple[str, Sums | None]:
        """The content's sha256 and block checksums. A draft holding a whole stored
        blob has that blob's sha and no checksums of its own (the blob has them)."""
        if self._taken is not None and self.size == self._taken.size:
            return self._taken.sha, None
        self._own_copy()  # part of a blob is hashed like any other content
        if self._hash.valid and self._hash.hashed == self.size:
            return self._hash.hexdigest(), self._hash.sums()
        self._hash.wait()
        if self.buffer is not None:
            return fingerprint_bytes(self.buffer)
        return fingerprint_fd(self.fd, self.size)

    def head(self, size: int = 64 * 1024) -> bytes:
        return self.read(size, 0)

    def source(self) -> Path | bytes:
        """Where a parser can read the whole content: the bytes, or a file."""
        if self._taken is not None and self.size == self._taken.size:
            fd = self._taken.reader.fileno()
            if fd is not None:
                return Path(f"/proc/self/fd/{fd}")  # the taken blob, even if removed meanwhile
        self._own_copy()
        if self.buffer is not None:
            return bytes(self.buffer)
        assert self.path is not None
        return self.path

    def memory_content(self) -> bytes | None:
        return None if self.buffer is None else bytes(self.buffer)

    def fsync(self) -> None:
        """Make the spool file durable. A taken blob needs nothing here: the commit
        fsyncs the stored blob, or the copy it stores anew (save_as_blob)."""
        self._settle_flush()
        if self.fd >= 0 and self._upload is None:  # a bucket store's draft is made durable by its upload
            os.fsync(self.fd)

    def discard(self, in_background: bool = False) -> None:
        """Drop the draft; safe to call twice and after the spool was adopted.
        `in_background`: a big spool file may be unlinked after this returns (for
        content that was stored already; a refused write frees its space at once)."""
        self._hash.wait()
        if self._flush is not None and not self._flush.cancel():
            self._flush.exception()  # its fd must not be closed under it
        self._flush = None
        self.buffer = None
        if self._upload is not None:
            self._upload.abort()
            self._upload = None
        if self._taken is not None:
            self._taken.reader.close()
            self._taken = None
        if self.live_name is not None:  # the item's content: its record keeps the file
            self.live_name = self.path = None
        size = 0
        if self.fd >= 0:
            size = os.fstat(self.fd).st_size
            os.close(self.fd)
            self.fd = -1
        if self.path is not None and in_background:
            remove(str(self.path), size)
        elif self.path is not None:
            self.path.unlink(missing_ok=True)
        self.path = None


def copy_reader_into(reader: BlobReader, fd: int, size: int) -> None:
    """Copy `size` bytes from a blob reader into the start of file `fd` (in the kernel
    when the reader is a file); the stored bytes are checked first (integrity.py)."""
    reader.verify(0, size)
    source = reader.fileno()
    copied = 0
    while copied < size:
        if source is not None:
            n = os.copy_file_range(source, fd, size - copied, copied, copied)
        else:
            n = os.pwrite(fd, reader.pread(min(HASH_CHUNK, size - copied), copied), copied)
        if n == 0:
            raise OSError(errno.EIO, "a stored blob ended before its size")
        copied += n
