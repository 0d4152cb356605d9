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

Sequential readers get read-ahead: after two reads in order, the next `AHEAD` chunks
are fetched in the background.
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
import os
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import xxhash

log = logging.getLogger("encfs")

CHUNK = 8 << 20
AHEAD = 4
PIN_SECONDS = 2.0
FULL_PAUSE_SECONDS = 30.0
HEADER = 4096
SLOT = struct.Struct(">Q")
MEMORY_CHUNKS = AHEAD + 2  # fetched chunks an object keeps in memory when they cannot be cached
SMALLEST_LIMIT = 4 * CHUNK

FetchRange = Callable[[int, int], bytes]
Check = Callable[[int, bytes], None]

_FALLOC_PUNCH = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]


def _punch(fd: int, offset: int, length: int) -> None:
    if _libc.fallocate(fd, _FALLOC_PUNCH, offset, length) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


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
        self.folder, self.limit, self.chunk = folder, max(limit, SMALLEST_LIMIT), chunk
        self.used = 0
        self._lru: OrderedDict[tuple[str, int], tuple[int, float]] = OrderedDict()
        self._entries: dict[str, _Entry] = {}
        self._fetching: dict[tuple[str, int], Future] = {}
        self._lock = threading.RLock()
        self._full_until = 0.0
        self._ahead = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="encfs-readahead")
        self._lock_fd = -1
        self._taken: bool | None = None  # taken at the first read: most commands read no blob

    @property
    def enabled(self) -> bool:
        with self._lock:
            if self._taken is None:
                self._taken = self._take()
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
             check: Check | None = None) -> CachedObject:
        return CachedObject(self, key, size, version, fetch_range, check)

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

    def _store(self, entry: _Entry, index: int, data: bytes) -> bool:
        """Write a fetched chunk into the cache; False if it could not be."""
        if not self.usable():
            return False
        try:
            view = memoryview(data)
            offset = index * self.chunk
            while view:
                written = os.pwrite(entry.data_fd, view, offset)
                view, offset = view[written:], offset + written
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
                 check: Check | None) -> None:
        self.cache, self.key, self.size = cache, key, size
        self._fetch_range, self._check = fetch_range, check
        self._entry = cache._acquire(key, size, version)
        self._memory: OrderedDict[int, bytes] = OrderedDict()
        self._last_chunk = -2
        self._lock = threading.Lock()

    def pread(self, size: int, offset: int) -> bytes:
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
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
        self._read_ahead(offset, size)
        return b"".join(pieces)

    def descriptor_for(self, offset: int, size: int) -> int | None:
        """The data file's descriptor once [offset, offset + size) is cached in it; None
        when it cannot be (the caller then reads bytes with pread)."""
        if self._entry is None or not self.cache.usable():
            return None
        for index in self._chunks(offset, size):
            if self._ensure(index) is not None:
                return None
        self._read_ahead(offset, size)
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

    def _fetch(self, entry: _Entry | None, index: int) -> bytes | None:
        cache = self.cache
        key = (entry.name if entry else f"mem-{id(self)}", index)
        with cache._lock:
            pending = cache._fetching.get(key)
            mine = pending is None
            if mine:
                pending = cache._fetching[key] = Future()
        if not mine:
            return pending.result()
        try:
            start = index * cache.chunk
            length = min(cache.chunk, self.size - start)
            data = self._fetch_range(start, length)
            if len(data) != length:
                raise OSError(errno.EIO, f"{self.key}: got {len(data)} bytes of a range of {length}")
            if self._check is not None:
                self._check(start, data)
            result: bytes | None = None
            if entry is None or not cache._store(entry, index, data):
                result = data
                with self._lock:
                    self._memory[index] = data
                    while len(self._memory) > MEMORY_CHUNKS:
                        self._memory.popitem(last=False)
            pending.set_result(result)
            return result
        except BaseException as exc:
            pending.set_exception(exc)
            raise
        finally:
            with cache._lock:
                cache._fetching.pop(key, None)

    def _read_ahead(self, offset: int, size: int) -> None:
        """After reads in order, fetch the next chunks in the background."""
        first = offset // self.cache.chunk
        last = (offset + max(size, 1) - 1) // self.cache.chunk
        in_order = first in (self._last_chunk, self._last_chunk + 1)
        self._last_chunk = last
        if not in_order:
            return
        chunks = -(-self.size // self.cache.chunk)
        for index in range(last + 1, min(last + 1 + AHEAD, chunks)):
            if self._known(index):
                continue
            self.cache._ahead.submit(self._quietly_ensure, index)

    def _known(self, index: int) -> bool:
        with self._lock:
            if index in self._memory:
                return True
        entry = self._entry
        key = (entry.name if entry else f"mem-{id(self)}", index)
        with self.cache._lock:
            return key in self.cache._fetching or (entry is not None and bool(entry.slots[index]))

    def _quietly_ensure(self, index: int) -> None:
        """A read-ahead that fails is left to the read that asks for the chunk."""
        with contextlib.suppress(Exception):
            self._ensure(index)

    def close(self) -> None:
        with self._lock:
            self._memory.clear()
        if self._entry is not None:
            entry, self._entry = self._entry, None
            self.cache._release(entry)
