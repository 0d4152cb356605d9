"""A bounded cache of remote object bytes on the local disk.

Objects in a bucket are read by range; the cache keeps the ranges read so that a
second read (a training loop's next epoch) costs no network. It is generic: a caller
opens an object by an opaque cache key, its size, a version (an ETag, a sha256: a
change of version empties the entry) and a `fetch_range(offset, length)` callable,
optionally with a `check(offset, data)` that raises on bytes that are not what they
should be (a bucket store checks the block checksums of the metadata).

Layout, under the cache folder (one process at a time uses it: `lock`):

    ab/<name>.data   the object as a sparse file of its full size, filled by chunks
    ab/<name>.map    a header (key, size, version, chunk size) and, per chunk, the
                     xxh3 of its bytes (0 = not cached)

`name` is a hash of the cache key. A chunk is fetched once (concurrent readers of it
wait for the same fetch), checked, written into the data file and noted in the map.
The map is not fsynced: after a restart each chunk is checked against its xxh3 the
first time it is used, so a chunk the kernel had not written out is fetched again.

The cache holds at most `limit` bytes, least recently used chunks evicted first (their
range of the data file is punched out). A chunk used in the last `PIN_SECONDS` is not
evicted: a read may have handed its descriptor to the kernel, which copies after we
return. If the cache's disk is full (or any write to it fails), reads go on from
memory, uncached, for `FULL_PAUSE_SECONDS`, with one log line.

Sequential readers get read-ahead: after two reads in order, one streaming GET
(`open_range`, when the caller gives one) runs ahead of the reader by up to `AHEAD`
chunks, filling them as its bytes arrive (a stream is as fast as a plain download; a
GET per chunk pays a round trip each); without `open_range`, the next `AHEAD` chunks
are fetched by range in the background.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import hashlib
import json
import logging
import mmap
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

import xxhash

log = logging.getLogger("encfs")

CHUNK = 8 << 20
AHEAD = 4
PIN_SECONDS = 2.0
FULL_PAUSE_SECONDS = 30.0
HEADER = 4096
SLOT = struct.Struct(">Q")
DIRECT_ALIGN = 4096
MEMORY_CHUNKS = AHEAD + 2  # fetched chunks an object keeps in memory when they cannot be cached
SMALLEST_LIMIT = 4 * CHUNK
WRITE_BACKLOG = 16 * CHUNK

STREAM_WINDOW = 64  # chunks one streaming GET asks for at most
STREAM_IDLE_SECONDS = 10.0  # a stream whose reader went away stops after this

FetchRange = Callable[[int, int], bytes]
OpenRange = Callable[[int, int], BinaryIO]
Check = Callable[[int, bytes], None]

_FALLOC_PUNCH = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def _punch(fd: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, _FALLOC_PUNCH, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _open_direct(path: Path) -> int:
    """A descriptor that writes the data file around the page cache (O_DIRECT), or -1
    where the file system has none (tmpfs). Filling the cache through the page cache
    costs a copy into freshly allocated pages, the most expensive part of a cold read
    on a loaded machine; a direct write is a DMA from our buffer."""
    try:
        return os.open(path, os.O_WRONLY | os.O_DIRECT | os.O_CLOEXEC)
    except OSError:
        return -1


def _chunk_sum(data: bytes | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(data) | 1  # never 0, which marks an empty slot


class _Entry:
    """The files of one cached object, shared by every open of its key."""

    def __init__(self, cache: BlobCache, name: str, key: str, size: int, version: str) -> None:
        self.name, self.key, self.size, self.version = name, key, size, version
        self.chunks = max(1, -(-size // cache.chunk))
        folder = cache.folder / name[:2]
        folder.mkdir(exist_ok=True, mode=0o700)
        self.data_path, self.map_path = folder / f"{name}.data", folder / f"{name}.map"
        self.users = 0
        self.closed = False
        self.slots = [0] * self.chunks
        self.checked: set[int] = set()  # chunks whose bytes on disk this process vouches for
        header = _header(key, size, version, cache.chunk)
        existing = _read_map(self.map_path)
        if existing is not None and existing[0] == header:
            self.slots = existing[1][: self.chunks] + [0] * max(0, self.chunks - len(existing[1]))
        else:
            cache._forget_entry(name)
            self.map_path.unlink(missing_ok=True)
            self.data_path.unlink(missing_ok=True)
        self.data_fd = os.open(self.data_path, os.O_RDWR | os.O_CREAT, 0o600)
        self.direct_fd = _open_direct(self.data_path)
        self.map_fd = os.open(self.map_path, os.O_RDWR | os.O_CREAT, 0o600)
        if existing is None or existing[0] != header:
            os.ftruncate(self.data_fd, size)
            os.pwrite(self.map_fd, header, 0)
            os.ftruncate(self.map_fd, HEADER + SLOT.size * self.chunks)

    def set_slot(self, index: int, value: int) -> None:
        self.slots[index] = value
        os.pwrite(self.map_fd, SLOT.pack(value), HEADER + SLOT.size * index)

    def close(self) -> None:
        self.closed = True
        os.close(self.data_fd)
        if self.direct_fd >= 0:
            os.close(self.direct_fd)
        os.close(self.map_fd)


def _header(key: str, size: int, version: str, chunk: int) -> bytes:
    text = json.dumps({"key": key, "size": size, "version": version, "chunk": chunk}).encode()
    if len(text) >= HEADER:
        text = json.dumps({"key": hashlib.sha256(key.encode()).hexdigest(), "size": size,
                           "version": hashlib.sha256(version.encode()).hexdigest(), "chunk": chunk}).encode()
    return text.ljust(HEADER - 1) + b"\n"


def _read_map(path: Path) -> tuple[bytes, list[int]] | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if len(raw) < HEADER:
        return None
    count = (len(raw) - HEADER) // SLOT.size
    return raw[:HEADER], list(struct.unpack_from(f">{count}Q", raw, HEADER))


class BlobCache:
    def __init__(self, folder: Path, limit: int, chunk: int = CHUNK, workers: int = AHEAD) -> None:
        self.folder, self.chunk = folder, chunk
        self.limit = max(limit, SMALLEST_LIMIT) if limit else 0  # 0: no cache, reads from memory only
        self.used = 0
        self._lru: OrderedDict[tuple[str, int], tuple[int, float]] = OrderedDict()
        self._entries: dict[str, _Entry] = {}
        self._fetching: dict[tuple[str, int], Future] = {}
        self._lock = threading.RLock()
        self._full_until = 0.0
        self._ahead = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encfs-readahead")
        self._writing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encfs-cache-write")
        self._backlog = 0  # bytes waiting to be written into the cache
        self._aligned: mmap.mmap | None = None  # the writer thread's buffer for direct writes
        self._lock_fd = -1
        self._taken: bool | None = None  # taken at the first read: most commands read no blob

    @property
    def enabled(self) -> bool:
        with self._lock:
            if self._taken is None:
                self._taken = self.limit > 0 and self._take()
                if self._taken:
                    self._load()
            return self._taken

    def _take(self) -> bool:
        """Lock the cache folder for this process; another process holding it (a mount
        of the store, when this is a command) means this one reads uncached."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._lock_fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as exc:
            busy = exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK)
            why = "another process uses it" if busy else exc
            log.log(logging.INFO if busy else logging.WARNING, "the blob cache %s is not used by this "
                    "process (%s): its reads go uncached", self.folder, why)
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1
            return False

    def _load(self) -> None:
        """Account for what earlier runs cached, oldest maps first (least recently used)."""
        maps = sorted(self.folder.glob("??/*.map"), key=lambda p: p.stat().st_mtime)
        for path in maps:
            found = _read_map(path)
            if found is None:
                continue
            try:
                header = json.loads(found[0])
                size, chunk = int(header["size"]), int(header["chunk"])
            except (ValueError, KeyError, TypeError):
                continue
            name = path.name.removesuffix(".map")
            for index, value in enumerate(found[1]):
                if value:
                    length = min(chunk, size - index * chunk)
                    self._lru[(name, index)] = (length, 0.0)
                    self.used += length
        self._evict()

    # ----------------------------------------------------------------- opening

    def open(self, key: str, size: int, version: str, fetch_range: FetchRange,
             check: Check | None = None, open_range: OpenRange | None = None) -> CachedObject:
        """An object to read. `fetch_range(offset, length)` returns those bytes;
        `open_range(offset, length)`, if given, a stream of them (for read-ahead);
        `check(offset, data)` raises if fetched bytes are not the object's."""
        return CachedObject(self, key, size, version, fetch_range, check, open_range)

    def _acquire(self, key: str, size: int, version: str) -> _Entry | None:
        if not self.enabled:
            return None
        name = hashlib.sha256(key.encode()).hexdigest()[:40]
        with self._lock:
            entry = self._entries.get(name)
            if entry is not None and (entry.size, entry.version) != (size, version):
                if entry.users:
                    return None  # an older version still open here: this one reads uncached
                entry.close()
                del self._entries[name]
                entry = None
            if entry is None:
                try:
                    entry = self._entries[name] = _Entry(self, name, key, size, version)
                except OSError as exc:
                    self._disk_trouble(exc)
                    return None
            entry.users += 1
            return entry

    def _hold(self, entry: _Entry) -> bool:
        """Keep an entry's files open for one operation; False if they were closed."""
        with self._lock:
            if entry.closed:
                return False
            entry.users += 1
            return True

    def _release(self, entry: _Entry) -> None:
        """One user fewer (an open object, or an operation); the last closes the files."""
        with self._lock:
            entry.users -= 1
            if entry.users == 0:
                entry.close()
                if self._entries.get(entry.name) is entry:
                    del self._entries[entry.name]

    def _forget_entry(self, name: str) -> None:
        for key in [k for k in self._lru if k[0] == name]:
            self.used -= self._lru.pop(key)[0]

    # ----------------------------------------------------------------- chunks

    def usable(self) -> bool:
        return time.monotonic() >= self._full_until and self.enabled

    def _chunk_on_disk(self, entry: _Entry, index: int) -> bool:
        """Whether the chunk's bytes are in the data file and good (checked once per process)."""
        with self._lock:
            value = entry.slots[index]
            if not value:
                return False
            if index in entry.checked:
                self._touch(entry, index)
                return True
        length = self._length(entry, index)
        data = os.pread(entry.data_fd, length, index * self.chunk)
        with self._lock:
            if len(data) == length and _chunk_sum(data) == value:
                entry.checked.add(index)
                self._touch(entry, index)
                return True
            entry.set_slot(index, 0)
            self._forget_chunk(entry.name, index)
            return False

    def _length(self, entry: _Entry, index: int) -> int:
        return min(self.chunk, entry.size - index * self.chunk)

    def _touch(self, entry: _Entry, index: int) -> None:
        key = (entry.name, index)
        if key in self._lru:
            self._lru[key] = (self._lru[key][0], time.monotonic())
            self._lru.move_to_end(key)

    def _forget_chunk(self, name: str, index: int) -> None:
        old = self._lru.pop((name, index), None)
        if old is not None:
            self.used -= old[0]

    def _write_later(self, entry: _Entry, index: int, data: bytes) -> None:
        """Write a fetched chunk into the cache in the background; skipped (read
        uncached next time) while the disk is behind by WRITE_BACKLOG bytes."""
        with self._lock:
            if self._backlog + len(data) > WRITE_BACKLOG or not self._hold(entry):
                return
            self._backlog += len(data)

        def write() -> None:
            try:
                if not entry.slots[index]:
                    self._store(entry, index, data)
            finally:
                with self._lock:
                    self._backlog -= len(data)
                self._release(entry)

        self._writing.submit(write)

    def _store(self, entry: _Entry, index: int, data: bytes) -> bool:
        """Write a fetched chunk into the cache; False if it could not be."""
        if not self.usable():
            return False
        try:
            self._write_chunk(entry, index * self.chunk, data)
            with self._lock:
                entry.set_slot(index, _chunk_sum(data))
                entry.checked.add(index)
                self._lru[(entry.name, index)] = (len(data), time.monotonic())
                self.used += len(data)
                self._evict()
            return True
        except OSError as exc:
            with self._lock:
                entry.slots[index] = 0
            self._punch_quietly(entry.data_fd, index * self.chunk, len(data))
            self._disk_trouble(exc)
            return False

    def _write_chunk(self, entry: _Entry, offset: int, data: bytes) -> None:
        """Write a chunk into the data file: directly (from an aligned buffer of the
        single writer thread) when its length allows, else through the page cache."""
        fd, view = entry.data_fd, memoryview(data)
        if entry.direct_fd >= 0 and len(data) % DIRECT_ALIGN == 0 and offset % DIRECT_ALIGN == 0:
            if self._aligned is None or len(self._aligned) < len(data):
                self._aligned = mmap.mmap(-1, max(len(data), self.chunk))
            self._aligned[: len(data)] = data
            fd, view = entry.direct_fd, memoryview(self._aligned)[: len(data)]
        while view:
            written = os.pwrite(fd, view, offset)
            view, offset = view[written:], offset + written

    def _punch_quietly(self, fd: int, offset: int, length: int) -> None:
        with contextlib.suppress(OSError):
            _punch(fd, offset, length)

    def _disk_trouble(self, exc: OSError) -> None:
        with self._lock:
            first = time.monotonic() >= self._full_until
            self._full_until = time.monotonic() + FULL_PAUSE_SECONDS
        if first:
            reason = "its disk is full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
            log.warning("cannot write to the blob cache %s (%s): reads go on uncached for %d s",
                        self.folder, reason, FULL_PAUSE_SECONDS)

    def _evict(self) -> None:
        """Drop least recently used chunks until the cache fits its limit (lock held)."""
        now = time.monotonic()
        for key in list(self._lru):
            if self.used <= self.limit:
                return
            length, used_at = self._lru[key]
            if now - used_at < PIN_SECONDS or key in self._fetching:
                continue
            self._drop(key, length)

    def _drop(self, key: tuple[str, int], length: int) -> None:
        name, index = key
        del self._lru[key]
        self.used -= length
        entry = self._entries.get(name)
        try:
            if entry is not None:
                entry.set_slot(index, 0)
                entry.checked.discard(index)
                _punch(entry.data_fd, index * self.chunk, length)
                return
            folder = self.folder / name[:2]
            map_fd = os.open(folder / f"{name}.map", os.O_RDWR)
            try:
                os.pwrite(map_fd, SLOT.pack(0), HEADER + SLOT.size * index)
            finally:
                os.close(map_fd)
            data_fd = os.open(folder / f"{name}.data", os.O_RDWR)
            try:
                _punch(data_fd, index * self.chunk, length)
            finally:
                os.close(data_fd)
        except OSError as exc:
            log.info("could not evict a chunk of the blob cache: %s", exc)

    def close(self) -> None:
        self._ahead.shutdown(wait=True, cancel_futures=True)
        self._writing.shutdown(wait=True)
        with self._lock:
            for entry in self._entries.values():
                entry.close()
            self._entries.clear()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)
                self._lock_fd = -1


class CachedObject:
    """One open object: reads by range, through the cache when it can be used."""

    def __init__(self, cache: BlobCache, key: str, size: int, version: str, fetch_range: FetchRange,
                 check: Check | None, open_range: OpenRange | None = None) -> None:
        self.cache, self.key, self.size = cache, key, size
        self._fetch_range, self._check, self._open_range = fetch_range, check, open_range
        self._entry = cache._acquire(key, size, version)
        self._memory: OrderedDict[int, bytes] = OrderedDict()
        self._last_chunk = -1  # a first read at the start counts as in order
        self._stream: _Stream | None = None
        self._advised = -1
        self._lock = threading.Lock()
        self.chunks = max(1, -(-size // cache.chunk))

    def pread(self, size: int, offset: int) -> bytes:
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
        self._read_ahead(offset, size)
        pieces = []
        for index in self._chunks(offset, size):
            start = index * self.cache.chunk
            data = self._ensure(index)
            low, high = max(offset, start) - start, min(offset + size, start + self.cache.chunk) - start
            if data is None:
                assert self._entry is not None
                pieces.append(os.pread(self._entry.data_fd, high - low, start + low))
            else:
                pieces.append(data[low:high])
        return b"".join(pieces)

    def descriptor_for(self, offset: int, size: int) -> int | None:
        """The data file's descriptor once [offset, offset + size) is cached in it; None
        when it cannot be (the caller then reads bytes with pread)."""
        if self._entry is None or not self.cache.usable():
            return None
        self._read_ahead(offset, size)
        for index in self._chunks(offset, size):
            if self._ensure(index) is not None:
                return None
        return self._entry.data_fd

    def _chunks(self, offset: int, size: int) -> range:
        chunk = self.cache.chunk
        return range(offset // chunk, (offset + max(size, 1) - 1) // chunk + 1)

    def _ensure(self, index: int) -> bytes | None:
        """The chunk is in the data file (None), or here are its bytes (not cached)."""
        with self._lock:
            data = self._memory.get(index)
        if data is not None:
            return data
        entry = self._entry
        if entry is None or not self.cache._hold(entry):
            return self._fetch(None, index)
        try:
            if self.cache._chunk_on_disk(entry, index):
                return None
            return self._fetch(entry, index)
        finally:
            self.cache._release(entry)

    def _fetch_key(self, entry: _Entry | None, index: int) -> tuple[str, int]:
        return (entry.name if entry else f"mem-{id(self)}", index)

    def _claim(self, entry: _Entry | None, index: int) -> tuple[Future, bool]:
        """The fetch of a chunk under way, and whether it is ours to do."""
        key = self._fetch_key(entry, index)
        with self.cache._lock:
            pending = self.cache._fetching.get(key)
            if pending is not None:
                return pending, False
            pending = self.cache._fetching[key] = Future()
            return pending, True

    def _fetch(self, entry: _Entry | None, index: int) -> bytes | None:
        pending, mine = self._claim(entry, index)
        if not mine:
            return pending.result()
        try:
            start = index * self.cache.chunk
            data = self._fetch_range(start, min(self.cache.chunk, self.size - start))
        except BaseException as exc:
            self._settle(entry, index, pending, exc)
            raise
        return self._deliver(entry, index, data, pending)

    def _deliver(self, entry: _Entry | None, index: int, data: bytes, pending: Future) -> bytes:
        """Check a fetched chunk, keep it in memory for the readers waiting for it, and
        write it into the cache behind them (a slow disk does not slow a cold read)."""
        try:
            start = index * self.cache.chunk
            length = min(self.cache.chunk, self.size - start)
            if len(data) != length:
                raise OSError(errno.EIO, f"{self.key}: got {len(data)} bytes of a range of {length}")
            if self._check is not None:
                self._check(start, data)
            with self._lock:
                self._memory[index] = data
                while len(self._memory) > MEMORY_CHUNKS:
                    self._memory.popitem(last=False)
            if entry is not None:
                self.cache._write_later(entry, index, data)
        except BaseException as exc:
            self._settle(entry, index, pending, exc)
            raise
        self._settle(entry, index, pending, None, data)
        return data

    def _settle(self, entry: _Entry | None, index: int, pending: Future, exc: BaseException | None,
                result: bytes | None = None) -> None:
        with self.cache._lock:
            self.cache._fetching.pop(self._fetch_key(entry, index), None)
        if exc is not None:
            pending.set_exception(exc)
        else:
            pending.set_result(result)

    def _read_ahead(self, offset: int, size: int) -> None:
        """After reads in order, fetch the next chunks in the background."""
        first = offset // self.cache.chunk
        last = (offset + max(size, 1) - 1) // self.cache.chunk
        in_order = first in (self._last_chunk, self._last_chunk + 1)
        self._last_chunk = last
        if not in_order or last + 1 >= self.chunks:
            return
        if self._open_range is not None:
            self._stream_ahead(first, last)
            return
        for index in range(last + 1, min(last + 1 + AHEAD, self.chunks)):
            if not self._known(index):
                self.cache._ahead.submit(self._quietly_ensure, index)

    def _stream_ahead(self, first: int, last: int) -> None:
        """Keep one streaming GET running ahead of a sequential reader."""
        with self._lock:
            stream = self._stream
            if stream is not None and not stream.finished and stream.position >= first:
                stream.reader_at(last)
                return
            if stream is not None:
                stream.stop()
            limit = min(self.chunks, last + 1 + AHEAD)
            start = first
            while start < limit and self._known(start):
                start += 1
            if start >= limit:
                self._advise(last + 1)
                return
            self._stream = _Stream(self, start, min(self.chunks, start + STREAM_WINDOW), last)
            self._stream.claim_first()  # a reader of that chunk waits for the stream, not a GET of its own
            self._stream.start()

    def _advise(self, index: int) -> None:
        """The next chunk is cached: have the kernel read it from the disk ahead of the
        reader (the kernel's own read-ahead does not see the reader's order)."""
        entry = self._entry
        if index == self._advised or index >= self.chunks or entry is None or not entry.slots[index]:
            return
        self._advised = index
        with contextlib.suppress(OSError):
            os.posix_fadvise(entry.data_fd, index * self.cache.chunk, self.cache.chunk,
                             os.POSIX_FADV_WILLNEED)

    def _known(self, index: int) -> bool:
        """Cached, in memory, or being fetched."""
        if index in self._memory:
            return True
        entry = self._entry
        with self.cache._lock:
            return (self._fetch_key(entry, index) in self.cache._fetching
                    or (entry is not None and bool(entry.slots[index])))

    def _quietly_ensure(self, index: int) -> None:
        """A read-ahead that fails is left to the read that asks for the chunk."""
        with contextlib.suppress(Exception):
            self._ensure(index)

    def close(self) -> None:
        with self._lock:
            self._memory.clear()
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.stop()
        if self._entry is not None:
            entry, self._entry = self._entry, None
            self.cache._release(entry)


class _Stream(threading.Thread):
    """One GET of chunks [start, stop) read as it arrives, each chunk checked and cached
    (readers asking for it wait for it), never more than AHEAD chunks ahead of the
    reader. A failure fails the chunk being read; the reader then fetches it by range."""

    def __init__(self, owner: CachedObject, start: int, stop: int, reader: int) -> None:
        super().__init__(name="encfs-stream", daemon=True)
        self.owner, self.position, self.end = owner, start, stop
        self.finished = False
        self._reader = reader
        self._stopped = False
        self._wake = threading.Condition()
        self._first: tuple[_Entry | None, Future] | None = None

    def claim_first(self) -> None:
        entry = self.owner._entry
        pending, mine = self.owner._claim(entry, self.position)
        if mine:
            self._first = (entry, pending)

    def reader_at(self, index: int) -> None:
        with self._wake:
            self._reader = max(self._reader, index)
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopped = True
            self._wake.notify()

    def run(self) -> None:
        owner, chunk = self.owner, self.owner.cache.chunk
        try:
            begin, finish = self.position * chunk, min(owner.size, self.end * chunk)
            body = owner._open_range(begin, finish - begin)  # type: ignore[misc]
        except Exception as exc:
            if self._first is not None:  # its reader sees why
                owner._settle(self._first[0], self.position, self._first[1], exc)
            self.finished = True
            return
        try:
            for index in range(self.position, self.end):
                first = index == self.position and self._first is not None
                if not first and not self._wait_for_reader(index):
                    return
                self.position = index
                if not (self._first_one(body, index) if first else self._one(body, index)):
                    return
            self.position = self.end
        finally:
            self.finished = True
            with contextlib.suppress(Exception):
                body.close()

    def _first_one(self, body: BinaryIO, index: int) -> bool:
        """The chunk claimed when the stream was made: read and delivered whatever happens."""
        assert self._first is not None
        entry, pending = self._first
        owner = self.owner
        start = index * owner.cache.chunk
        try:
            data = _read_exactly(body, min(owner.cache.chunk, owner.size - start))
        except BaseException as exc:
            owner._settle(entry, index, pending, exc)
            return False
        with contextlib.suppress(Exception):  # the reader sees the failure
            owner._deliver(entry, index, data, pending)
        return True

    def _wait_for_reader(self, index: int) -> bool:
        with self._wake:
            idle_since = time.monotonic()
            while index > self._reader + AHEAD and not self._stopped:
                if time.monotonic() - idle_since > STREAM_IDLE_SECONDS:
                    return False
                self._wake.wait(0.5)
            return not self._stopped

    def _one(self, body: BinaryIO, index: int) -> bool:
        """Read chunk `index` off the stream and deliver it (unless another fetch has
        it); False if the stream failed."""
        owner = self.owner
        start = index * owner.cache.chunk
        length = min(owner.cache.chunk, owner.size - start)
        entry = owner._entry
        held = entry is not None and owner.cache._hold(entry)
        try:
            use = entry if held else None
            pending, mine = (None, False) if owner._known(index) else owner._claim(use, index)
            try:
                data = _read_exactly(body, length)
            except BaseException as exc:
                if mine:
                    owner._settle(use, index, pending, exc)  # type: ignore[arg-type]
                return False
            if mine:
                with contextlib.suppress(Exception):  # the reader sees the failure
                    owner._deliver(use, index, data, pending)  # type: ignore[arg-type]
            return True
        finally:
            if held:
                owner.cache._release(entry)  # type: ignore[arg-type]


def _read_exactly(body: BinaryIO, length: int) -> bytes:
    pieces, got = [], 0
    while got < length:
        piece = body.read(length - got)
        if not piece:
            raise OSError(errno.EIO, f"the stream ended {length - got} bytes early")
        pieces.append(piece)
        got += len(piece)
    return pieces[0] if len(pieces) == 1 else b"".join(pieces)
