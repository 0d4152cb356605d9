"""Checksums of stored content, and reads that check them.

Every blob has, besides its name (the sha256 of its bytes), a checksum per block of
`BLOCK` bytes (xxh3, 64 bits), written to the metadata (`sums`) when the blob is
stored. Computing them costs little: they are taken while the draft is hashed.

A read through the mount checks the blocks it touches before it answers, once per
daemon: the blocks found good are remembered for the blob file as it was seen
(device, inode, size and mtime from one fstat), so a file replaced or changed
behind encfs's back is checked again. A block that does not match, a blob file of
the wrong size, or a missing one is `DamagedContent` (EIO), logged once with the
item and the blob; the mount never answers with bytes it cannot vouch for.

Blobs stored before there were checksums have none: the first read checks the whole
blob against its sha256 and stores its checksums then.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import xxhash

from encfs.errors import EncfsError

if TYPE_CHECKING:
    from encfs.blobs.base import BlobReader, BlobStore

log = logging.getLogger("encfs")

BLOCK = 1 << 20
READ_CHUNK = 4 << 20
_HEADER = struct.Struct(">I")
_SUM = struct.Struct(">Q")
FILES_REMEMBERED = 65_536
SUMS_REMEMBERED = 1_024
SMALL_READ = 64 << 10  # a one-block file up to this size is checked from a bytes object of its own
AHEAD_BLOCKS = 8  # blocks checked ahead of a reader in order (fewer left cold reads 0.7 x unchecked)
# `ENCFS_READ_CHECKS=off` in a mount's environment serves stored content unchecked:
# only so that `scripts/bench` can state what the checks cost, never for use.
READ_CHECKS = os.environ.get("ENCFS_READ_CHECKS", "on") != "off"

_verifying = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encfs-verify")


class DamagedContent(EncfsError):
    """Stored bytes that are not what was stored: EIO, never the wrong bytes."""

    errno = errno.EIO


# ---------------------------------------------------------------- block sums


@dataclass(frozen=True)
class Sums:
    """The checksum of each block of a blob, in order."""

    block: int
    values: tuple[int, ...]

    def pack(self) -> bytes:
        return _HEADER.pack(self.block) + b"".join(_SUM.pack(v) for v in self.values)

    @classmethod
    def unpack(cls, raw: bytes) -> Sums:
        block = _HEADER.unpack_from(raw)[0]
        count = (len(raw) - _HEADER.size) // _SUM.size
        return cls(block, struct.unpack_from(f">{count}Q", raw, _HEADER.size))

    def blocks_for(self, size: int) -> int:
        return -(-size // self.block)


def block_sum(data: bytes | bytearray | memoryview) -> int:
    return xxhash.xxh3_64_intdigest(data)


class BlockSummer:
    """Block checksums of bytes fed in order, in pieces of any size."""

    def __init__(self, block: int = BLOCK) -> None:
        self.block = block
        self._values: list[int] = []
        self._current = xxhash.xxh3_64()
        self._filled = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            take = min(len(view), self.block - self._filled)
            self._current.update(view[:take])
            self._filled += take
            view = view[take:]
            if self._filled == self.block:
                self._values.append(self._current.intdigest())
                self._current, self._filled = xxhash.xxh3_64(), 0

    def sums(self) -> Sums:
        values = list(self._values)
        if self._filled:
            values.append(self._current.intdigest())
        return Sums(self.block, tuple(values))


def fingerprint_fd(fd: int, size: int) -> tuple[str, Sums]:
    """sha256 and block sums of the first `size` bytes of a file, in one pass."""
    sha, summer = hashlib.sha256(), BlockSummer()
    offset = 0
    while offset < size:
        chunk = os.pread(fd, min(READ_CHUNK, size - offset), offset)
        if not chunk:
            break
        sha.update(chunk)
        summer.update(chunk)
        offset += len(chunk)
    return sha.hexdigest(), summer.sums()


def fingerprint_bytes(data: bytes | bytearray) -> tuple[str, Sums]:
    summer = BlockSummer()
    summer.update(data)
    return hashlib.sha256(data).hexdigest(), summer.sums()


# ---------------------------------------------------------------- checking a blob file


def damage_in_file(fd: int, size: int, sha: str, sums: Sums | None) -> str | None:
    """What is wrong with a whole blob file (None if nothing): its size, a block
    whose checksum differs, or (without sums) its sha256."""
    actual = os.fstat(fd).st_size
    if actual != size:
        return f"the blob file has {actual} bytes instead of {size}"
    if sums is None:
        found, _ = fingerprint_fd(fd, size)
        return None if found == sha else "the blob file's sha256 differs from its name"
    for index in range(sums.blocks_for(size)):
        problem = _block_damage(fd, sums, index, size)
        if problem:
            return problem
    return None


def _block_damage(fd: int, sums: Sums, index: int, size: int) -> str | None:
    start = index * sums.block
    length = min(sums.block, size - start)
    buffer = _block_buffer(sums.block)
    view = memoryview(buffer)[:length]
    got = _read_into(fd, view, start)
    if got != length:
        return f"the blob file ends inside block {index}"
    if index >= len(sums.values) or block_sum(view) != sums.values[index]:
        return f"block {index} (bytes {start}-{start + length - 1}) differs from its checksum"
    return None


_buffers = threading.local()


def _block_buffer(size: int) -> bytearray:
    """One block-sized buffer per thread: a block read allocates nothing (a fresh 1 MiB
    bytes object would be mapped and faulted in on every read)."""
    buffer = getattr(_buffers, "block", None)
    if buffer is None or len(buffer) < size:
        buffer = _buffers.block = bytearray(size)
    return buffer


def _read_into(fd: int, view: memoryview, offset: int) -> int:
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n == 0:
            break
        done += n
    return done


# ---------------------------------------------------------------- verified reads


FileIdentity = tuple[str, int, int, int, int]  # sha, st_dev, st_ino, st_size, st_mtime_ns


class Verifier:
    """Which blocks of which blob files this process found good (bounded, oldest
    forgotten first), and the checksums it looked up."""

    def __init__(self, sums_of: Callable[[str], Sums | None],
                 store_sums: Callable[[str, Sums], None]) -> None:
        self._sums_of = sums_of
        self._store_sums = store_sums
        self._good: OrderedDict[FileIdentity, set[int] | bool] = OrderedDict()
        self._reported: set[FileIdentity] = set()
        self._wrong_copies: set[str] = set()
        self._sums_cache: OrderedDict[str, Sums] = OrderedDict()
        self._ahead: dict[tuple[FileIdentity, int], Future] = {}
        self._lock = threading.Lock()

    def check(self, fd: int, identity: FileIdentity, size: int, offset: int, length: int,
              describe: Callable[[], str]) -> None:
        """Check the blocks of [offset, offset + length) of blob file `fd`, unless
        found good before; raise DamagedContent (logged once) if one is damaged."""
        if identity[3] != size:
            self._damaged(identity, describe, f"the blob file has {identity[3]} bytes instead of {size}")
        if self._good_blocks(identity) is True:
            return
        sums = self._sums(identity[0])
        if sums is None:
            self._check_whole(fd, identity, size, describe)
            return
        if 0 < size <= sums.block:  # one block (most training images): nothing to read ahead or wait for
            problem = _block_damage(fd, sums, 0, size)
            if problem:
                self._damaged(identity, describe, problem)
            with self._lock:
                self._remember(identity, True)
            return
        blocks = sums.blocks_for(size)
        first_block = offset // sums.block
        last_block = min(blocks - 1, (offset + max(length, 1) - 1) // sums.block)
        for index in range(first_block, last_block + 1):
            self._wait_ahead(identity, index)
            good = self._good_blocks(identity)
            if good is not True and not (good and index in good):
                problem = _block_damage(fd, sums, index, size)
                if problem:
                    self._damaged(identity, describe, problem)
                good = self._mark(identity, index, blocks)
            if index == 0 or (isinstance(good, set) and index - 1 in good):  # read in order
                self._read_ahead(fd, identity, sums, size, index + 1)

    def _good_blocks(self, identity: FileIdentity) -> set[int] | bool:
        with self._lock:
            return self._good.get(identity, False)

    def _sums(self, sha: str) -> Sums | None:
        with self._lock:
            sums = self._sums_cache.get(sha)
        if sums is None:
            sums = self._sums_of(sha)
            if sums is not None:
                with self._lock:
                    self._sums_cache[sha] = sums
                    while len(self._sums_cache) > SUMS_REMEMBERED:
                        self._sums_cache.popitem(last=False)
        return sums

    def _read_ahead(self, fd: int, identity: FileIdentity, sums: Sums, size: int, first: int) -> None:
        """Check the next blocks of a file read in order on the verifier's thread, so
        that they are found good (and in the page cache) by the time they are asked
        for. It reads a duplicate descriptor: the reader may close its own meanwhile."""
        for index in range(first, min(first + AHEAD_BLOCKS, sums.blocks_for(size))):
            key = (identity, index)
            good = self._good_blocks(identity)
            with self._lock:
                if good is True or (good and index in good) or key in self._ahead:
                    continue
                own = os.dup(fd)
                self._ahead[key] = _verifying.submit(self._check_ahead, own, identity, sums, size, index)

    def _check_ahead(self, fd: int, identity: FileIdentity, sums: Sums, size: int, index: int) -> None:
        """A damaged block is left unmarked: the read that asks for it reports it."""
        try:
            if _block_damage(fd, sums, index, size) is None:
                self._mark(identity, index, sums.blocks_for(size))
        finally:
            os.close(fd)
            with self._lock:
                self._ahead.pop((identity, index), None)

    def _wait_ahead(self, identity: FileIdentity, index: int) -> None:
        with self._lock:
            pending = self._ahead.get((identity, index))
        if pending is not None:
            with contextlib.suppress(Exception):  # it failed: the caller checks the block itself
                pending.result()

    def _check_whole(self, fd: int, identity: FileIdentity, size: int, describe: Callable[[], str]) -> None:
        """A blob stored before checksums: its sha256 once, then its checksums stored."""
        found, sums = fingerprint_fd(fd, size)
        if found != identity[0]:
            self._damaged(identity, describe, "the blob file's sha256 differs from its name")
        self._store_sums(identity[0], sums)
        with self._lock:
            self._remember(identity, True)

    def _mark(self, identity: FileIdentity, index: int, blocks: int) -> set[int] | bool:
        with self._lock:
            good = self._good.get(identity)
            if good is True:
                return True
            marked = good if isinstance(good, set) else set()
            marked.add(index)
            value: set[int] | bool = True if len(marked) >= blocks else marked
            self._remember(identity, value)
            return value

    def _remember(self, identity: FileIdentity, value: set[int] | bool) -> None:
        self._good[identity] = value
        self._good.move_to_end(identity)
        while len(self._good) > FILES_REMEMBERED:
            self._good.popitem(last=False)

    def damage_in(self, fd: int, sha: str, size: int, sums: Sums | None) -> str | None:
        """What is wrong with a whole blob file (None if nothing), checked once per
        file as seen by fstat, like reads; found good, the file is remembered."""
        st = os.fstat(fd)
        identity = (sha, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            if self._good.get(identity) is True:
                return None
        problem = damage_in_file(fd, size, sha, sums)
        if problem is None:
            with self._lock:
                self._remember(identity, True)
        return problem

    def stored_copy_damage(self, blobs: BlobStore, sha: str, size: int, raw_sums: bytes | None) -> str | None:
        """What is wrong with the stored copy of a blob (None if nothing): checked
        before new identical content shares it, so deduplication never adopts damage."""
        try:
            reader = blobs.open_reader(sha)
        except FileNotFoundError:
            return "the blob file is missing"
        try:
            fd = reader.fileno()
            if fd is None:
                return reader.stored_copy_problem()
            return self.damage_in(fd, sha, size, None if raw_sums is None else Sums.unpack(raw_sums))
        finally:
            reader.close()

    def small_content(self, fd: int, sha: str, size: int, only_block_sum: int,
                      describe: Callable[[], str]) -> bytes:
        """The whole content of a small one-block blob file, checked against the
        checksum its item's record carries: read once into memory and served from
        there, so a small file costs one read and one hash, with nothing looked up or
        remembered (checking again costs what remembering would)."""
        data = os.pread(fd, size + 1, 0)  # one byte more: a file grown behind encfs's back shows
        found = block_sum(data)
        if len(data) == size and found == only_block_sum:
            return data
        sums = self._sums(sha)  # the blob's own checksums decide: the record's copy may be what is wrong
        if len(data) == size and sums is not None and sums.values == (found,):
            if sha not in self._wrong_copies:
                self._wrong_copies.add(sha)
                log.warning("%s: its record carries a wrong copy of blob %s's checksum; the content is "
                            "good and is served (encfs fsck --repair copies it again)", describe(), sha)
            return data
        st = os.fstat(fd)
        identity = (sha, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        problem = (f"the blob file has {st.st_size} bytes instead of {size}" if st.st_size != size
                   else "block 0 differs from its checksum")
        self._damaged(identity, describe, problem)

    def report(self, sha: str, describe: Callable[[], str], problem: str) -> None:
        """Damage found outside a read (a blob file missing): logged once, raised."""
        self._damaged((sha, 0, 0, -1, 0), describe, problem)

    def forget(self, sha: str) -> None:
        """A blob file replaced by a good copy (repaired): check it anew."""
        with self._lock:
            for identity in [i for i in self._good if i[0] == sha]:
                del self._good[identity]
            self._reported = {i for i in self._reported if i[0] != sha}

    def _damaged(self, identity: FileIdentity, describe: Callable[[], str], problem: str) -> NoReturn:
        with self._lock:
            first = identity not in self._reported
            self._reported.add(identity)
        if first:
            log.error("damaged content: %s, blob %s: %s; reads answer EIO (run encfs fsck)",
                      describe(), identity[0], problem)
        raise DamagedContent(f"the stored content is damaged ({problem}); run encfs fsck", describe())


class VerifiedBlobReader:
    """A stored blob opened for an item, whose reads are checked against the blob's
    checksums before they are answered (see the module docstring)."""

    def __init__(self, inner: BlobReader, sha: str, size: int, verifier: Verifier,
                 describe: Callable[[], str], only_block_sum: int | None = None) -> None:
        """`only_block_sum`: the checksum of content of one block, from the item's
        record; a small file's reads are then answered from memory (small_content)."""
        self.inner = inner
        self.sha = sha
        self.size = size
        self._verifier = verifier
        self._describe = describe
        self._identity: FileIdentity | None = None
        self._only_block_sum = only_block_sum if 0 < size <= SMALL_READ else None
        self._content: bytes | None = None

    def verify(self, offset: int, length: int) -> None:
        if self._content is not None:
            return
        fd = self.inner.fileno()
        if fd is None:
            return
        if self._only_block_sum is not None:
            self._content = self._verifier.small_content(fd, self.sha, self.size, self._only_block_sum,
                                                         self._describe)
            return
        if self._identity is None:
            st = os.fstat(fd)
            self._identity = (self.sha, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        self._verifier.check(fd, self._identity, self.size, offset, length, self._describe)

    def pread(self, size: int, offset: int) -> bytes:
        self.verify(offset, max(0, min(size, self.size - offset)))
        if self._content is not None:
            return self._content[offset:offset + size]
        return self.inner.pread(size, offset)

    def descriptor_for(self, offset: int, size: int) -> int | None:
        """The blob file's descriptor, its range checked here (libfuse copies from it,
        never through Python); None for a small file, whose checked bytes are in memory."""
        fd = self.inner.fileno()
        if fd is not None:
            self.verify(offset, size)
        return None if self._content is not None else fd

    def fileno(self) -> int | None:
        return self.inner.fileno()

    def stored_copy_problem(self) -> str | None:
        return self.inner.stored_copy_problem()

    def close(self) -> None:
        self.inner.close()
