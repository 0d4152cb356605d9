"""fallocate with a mode: keep-size, punch-hole and zero-range through a real mount
(what the kernel passes on to a FUSE file system), collapse-range and insert-range on
a draft's spool file (the kernel answers those EOPNOTSUPP for every FUSE mount)."""

from __future__ import annotations

import ctypes
import errno
import hashlib
import os
from pathlib import Path

import pytest

from encfs.draft import COLLAPSE_RANGE, INSERT_RANGE, KEEP_SIZE, MEMORY_LIMIT, PUNCH_HOLE, ZERO_RANGE, Draft

from conftest import Mounted, errors_of
from store_state import stored_bytes

LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
SMALL, LARGE = 64 << 10, 3 << 20  # a draft in memory, and one in a spool file


def fallocate(fd: int, mode: int, offset: int, length: int) -> None:
    if LIBC.fallocate(fd, mode, offset, length) != 0:
        failure = ctypes.get_errno()
        raise OSError(failure, os.strerror(failure))


def pattern(size: int) -> bytes:
    return bytes(range(256)) * (size // 256)


def expected(data: bytes, mode: int, offset: int, length: int) -> bytes:
    """What a local disk makes of `data`."""
    result = bytearray(data)
    end = offset + length
    if mode & (PUNCH_HOLE | ZERO_RANGE):
        stop = end if not mode & KEEP_SIZE else min(end, len(data))
        if stop > len(result):
            result.extend(bytes(stop - len(result)))
        result[offset:stop] = bytes(stop - offset)
    elif mode == COLLAPSE_RANGE:
        del result[offset:end]
    elif mode == INSERT_RANGE:
        result[offset:offset] = bytes(length)
    return bytes(result)


@pytest.mark.parametrize("size", [SMALL, LARGE])
@pytest.mark.parametrize("mode, offset, length", [
    (KEEP_SIZE, 8192, 1 << 20),
    (KEEP_SIZE, 0, 8 << 20),  # reserves past the end, the size stays
    (PUNCH_HOLE | KEEP_SIZE, 8192, 12288),
    (PUNCH_HOLE | KEEP_SIZE, 100, 5000),  # not block-aligned
    (ZERO_RANGE, 4096, 8192),
    (ZERO_RANGE, SMALL - 10, 100_000),  # grows the file
    (ZERO_RANGE | KEEP_SIZE, SMALL - 10, 100_000),  # zeroes to the end only
])
def test_fallocate_modes_change_the_file_as_on_a_local_disk(
        mount: Mounted, folder: Path, tmp_path: Path, size: int, mode: int, offset: int, length: int) -> None:
    data = pattern(size)
    results = []
    for where in (folder, tmp_path):
        path = where / "model.bin"
        path.write_bytes(data)
        fd = os.open(path, os.O_RDWR)
        try:
            fallocate(fd, mode, offset, length)
            want = expected(data, mode, offset, length)
            assert os.pread(fd, size + 200_000, 0) == want  # read before close
        finally:
            os.close(fd)
        results.append((path.stat().st_size, path.read_bytes()))
    assert results[0] == results[1]
    assert stored_bytes(mount.store, "/data/model.bin") == results[1][1]


def test_a_punched_hole_stays_a_hole_in_the_stored_content(mount: Mounted, folder: Path) -> None:
    path = folder / "sparse.bin"
    path.write_bytes(b"x" * (8 << 20))
    fd = os.open(path, os.O_RDWR)
    try:
        fallocate(fd, PUNCH_HOLE | KEEP_SIZE, 1 << 20, 6 << 20)
    finally:
        os.close(fd)
    stored = [p for folder in ("blobs", "spool") for p in (mount.store / folder).rglob("*")
              if p.is_file() and p.stat().st_size == 8 << 20]  # a blob, or unsettled content (live_drafts.py)
    assert len(stored) == 1
    assert stored[0].stat().st_blocks * 512 < 4 << 20  # the 6 MiB hole takes no disk
    assert path.read_bytes() == b"x" * (1 << 20) + bytes(6 << 20) + b"x" * (1 << 20)


@pytest.mark.parametrize("mode", [COLLAPSE_RANGE, INSERT_RANGE])
def test_collapse_and_insert_are_refused_by_the_kernel_before_encfs(folder: Path, mode: int) -> None:
    """Linux passes only keep-size, punch-hole and zero-range on to FUSE file systems;
    the file is left as it was."""
    path = folder / "f.bin"
    path.write_bytes(pattern(SMALL))
    fd = os.open(path, os.O_RDWR)
    try:
        with pytest.raises(OSError) as caught:
            fallocate(fd, mode, 4096, 4096)
        assert caught.value.errno == errno.EOPNOTSUPP
    finally:
        os.close(fd)
    assert path.read_bytes() == pattern(SMALL)


@pytest.mark.parametrize("size", [SMALL, LARGE, MEMORY_LIMIT - 4096])
@pytest.mark.parametrize("mode, offset, length", [
    (COLLAPSE_RANGE, 4096, 8192),
    (COLLAPSE_RANGE, 100, 5000),  # not block-aligned: done by copying
    (INSERT_RANGE, 4096, 8192),
    (INSERT_RANGE, 0, 12345),
    (PUNCH_HOLE | KEEP_SIZE, 4000, 100_000),
])
def test_a_draft_collapses_and_inserts_ranges(tmp_path: Path, size: int, mode: int, offset: int,
                                              length: int) -> None:
    data = pattern(size)
    draft = Draft(tmp_path)
    try:
        draft.write(data, 0)
        draft.change_range(mode, offset, length)
        want = expected(data, mode, offset, length)
        assert draft.size == len(want)
        assert draft.read(len(want) + 10, 0) == want
        sha, _ = draft.fingerprint()
        assert sha == hashlib.sha256(want).hexdigest()
    finally:
        draft.discard()


@pytest.mark.parametrize("mode, offset, length", [
    (COLLAPSE_RANGE, 0, SMALL),  # reaches the end
    (COLLAPSE_RANGE, SMALL, 4096),
    (INSERT_RANGE, SMALL + 1, 4096),
])
def test_collapse_and_insert_outside_the_file_are_einval(tmp_path: Path, mode: int, offset: int,
                                                         length: int) -> None:
    draft = Draft(tmp_path)
    try:
        draft.write(pattern(SMALL), 0)
        with pytest.raises(OSError) as caught:
            draft.change_range(mode, offset, length)
        assert caught.value.errno == errno.EINVAL
        assert draft.read(SMALL, 0) == pattern(SMALL)
    finally:
        draft.discard()


@pytest.mark.parametrize("mode", [KEEP_SIZE, ZERO_RANGE | KEEP_SIZE])
def test_a_reservation_past_the_free_space_is_refused_and_takes_nothing(mount: Mounted, folder: Path,
                                                                         mode: int) -> None:
    target = folder / "f.bin"
    target.write_bytes(pattern(LARGE))
    vfs = os.statvfs(mount.store)
    free = vfs.f_bavail * vfs.f_frsize
    fd = os.open(target, os.O_RDWR)
    try:
        with pytest.raises(OSError) as caught:
            fallocate(fd, mode, 0, free + (64 << 20))
        assert caught.value.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert target.read_bytes() == pattern(LARGE)
    vfs = os.statvfs(mount.store)
    assert vfs.f_bavail * vfs.f_frsize > free - (256 << 20)  # nothing of it was kept
    assert "no space left" in errors_of(mount)
