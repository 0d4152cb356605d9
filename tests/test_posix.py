"""Standard file operations on a real mount behave as on a local disk."""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Mounted, errors_of
from store_state import stored_bytes


def test_create_write_read_and_sizes(folder: Path) -> None:
    path = folder / "a.bin"
    path.write_bytes(b"hello world")
    assert path.read_bytes() == b"hello world"
    st = path.stat()
    assert st.st_size == 11
    assert stat.S_ISREG(st.st_mode)
    assert st.st_nlink == 1


def test_write_at_offsets_and_holes(folder: Path) -> None:
    path = folder / "sparse.bin"
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        os.pwrite(fd, b"abc", 0)
        os.pwrite(fd, b"xyz", 10)
        os.pwrite(fd, b"Q", 1)
        assert os.pread(fd, 100, 0) == b"aQc" + b"\x00" * 7 + b"xyz"
        assert os.fstat(fd).st_size == 13
    finally:
        os.close(fd)
    assert path.read_bytes() == b"aQc" + b"\x00" * 7 + b"xyz"


def test_overwrite_middle_of_existing_file(folder: Path) -> None:
    path = folder / "f.txt"
    path.write_bytes(b"0123456789")
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(b"AB")
    assert path.read_bytes() == b"0123AB6789"


def test_append(folder: Path) -> None:
    path = folder / "log.txt"
    path.write_text("one\n")
    with open(path, "a") as f:
        f.write("two\n")
    with open(path, "a") as f:
        f.write("three\n")
    assert path.read_text() == "one\ntwo\nthree\n"


def test_truncate_and_ftruncate(folder: Path) -> None:
    path = folder / "t.bin"
    path.write_bytes(b"x" * 100)
    os.truncate(path, 10)
    assert path.stat().st_size == 10
    assert path.read_bytes() == b"x" * 10
    os.truncate(path, 20)
    assert path.read_bytes() == b"x" * 10 + b"\x00" * 10
    with open(path, "r+b") as f:
        os.ftruncate(f.fileno(), 3)
        assert os.fstat(f.fileno()).st_size == 3
    assert path.read_bytes() == b"xxx"
    with open(path, "wb"):
        pass
    assert path.stat().st_size == 0


def test_writer_reads_own_writes_before_close(folder: Path) -> None:
    path = folder / "w.bin"
    with open(path, "w+b") as f:
        f.write(b"draft")
        f.flush()
        f.seek(0)
        assert f.read() == b"draft"
        assert os.fstat(f.fileno()).st_size == 5


def test_new_content_visible_to_other_processes_after_close(mount: Mounted, folder: Path) -> None:
    path = folder / "v.txt"
    path.write_text("v1")
    import subprocess

    with open(path, "w") as f:
        f.write("v2-longer")
        f.flush()
        out = subprocess.run(["cat", str(path)], capture_output=True, text=True).stdout
        assert out in ("v1", "v2-longer")  # same mount: the page cache may already show it
    out = subprocess.run(["cat", str(path)], capture_output=True, text=True).stdout
    assert out == "v2-longer"


def test_unlinked_file_stays_readable_while_open(folder: Path) -> None:
    path = folder / "gone.txt"
    path.write_bytes(b"still here")
    with open(path, "rb") as f:
        path.unlink()
        assert not path.exists()
        assert f.read() == b"still here"
        assert os.fstat(f.fileno()).st_size == 10


def test_unlinked_file_written_and_fsynced_stays_readable(folder: Path) -> None:
    path = folder / "gone2.txt"
    with open(path, "w+b") as f:
        f.write(b"written")
        f.flush()
        os.fsync(f.fileno())
        path.unlink()
        f.seek(0)
        assert f.read() == b"written"
    assert not path.exists()


@pytest.mark.parametrize("size", [5, 3 * 1024 * 1024])  # held in memory, and in a spool file
def test_unlinked_file_stays_writable_through_every_descriptor(mount: Mounted, folder: Path,
                                                               size: int) -> None:
    """Written first after the unlink (its stored content is gone from the store by
    then), and opened again through /proc/self/fd, as programs that keep a temporary
    file do: every descriptor sees every write until the last one closes."""
    path = folder / "scratch.bin"
    path.write_bytes(b"h" * size)
    fd = os.open(path, os.O_RDWR)
    try:
        path.unlink()
        assert os.pwrite(fd, b"J", 0) == 1
        with open(f"/proc/self/fd/{fd}", "r+b") as again:
            assert again.read(3) == b"J" + b"h" * min(2, size - 1)
            again.seek(size)
            again.write(b" more")
        assert os.pread(fd, 1, 0) == b"J"
        assert os.pread(fd, 5, size) == b" more"
        assert os.fstat(fd).st_size == size + 5
    finally:
        os.close(fd)
    assert os.listdir(folder) == []
    assert os.listdir(mount.store / "spool") == []
    assert [p for p in (mount.store / "blobs").rglob("*") if p.is_file()] == []


def test_mkdir_rmdir_and_link_counts(mount: Mounted) -> None:
    top = mount.path / "top"
    top.mkdir()
    assert top.stat().st_nlink == 2
    (top / "a").mkdir()
    (top / "b").mkdir()
    assert top.stat().st_nlink == 4
    (top / "a").rmdir()
    assert top.stat().st_nlink == 3
    (top / "file").write_text("x")
    assert top.stat().st_nlink == 3
    assert sorted(os.listdir(top)) == ["b", "file"]


def test_rmdir_non_empty_is_enotempty(mount: Mounted, folder: Path) -> None:
    (folder / "x").write_text("x")
    with pytest.raises(OSError) as exc:
        folder.rmdir()
    assert exc.value.errno == errno.ENOTEMPTY
    assert (folder / "x").read_text() == "x"
    assert "not empty" in errors_of(mount)


def test_rename_file_within_and_across_folders(mount: Mounted, folder: Path) -> None:
    other = mount.path / "other"
    other.mkdir()
    (folder / "a").write_text("A")
    os.rename(folder / "a", folder / "b")
    assert (folder / "b").read_text() == "A"
    assert not (folder / "a").exists()
    os.rename(folder / "b", other / "c")
    assert (other / "c").read_text() == "A"
    assert os.listdir(folder) == []


def test_rename_replaces_existing_file_atomically(folder: Path) -> None:
    (folder / "new").write_text("new content")
    (folder / "old").write_text("old content")
    inode = (folder / "new").stat().st_ino
    os.rename(folder / "new", folder / "old")
    assert (folder / "old").read_text() == "new content"
    assert (folder / "old").stat().st_ino == inode
    assert sorted(os.listdir(folder)) == ["old"]


def test_rename_noreplace_refuses_existing_target(folder: Path) -> None:

    (folder / "a").write_text("a")
    (folder / "b").write_text("b")
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_noreplace = -100, 1
    result = libc.renameat2(at_fdcwd, str(folder / "a").encode(), at_fdcwd, str(folder / "b").encode(),
                            rename_noreplace)
    assert result == -1
    assert ctypes.get_errno() == errno.EEXIST
    assert (folder / "b").read_text() == "b"
    assert (folder / "a").read_text() == "a"


def test_rename_folder_with_content(mount: Mounted) -> None:
    (mount.path / "src" / "sub").mkdir(parents=True)
    (mount.path / "src" / "sub" / "f").write_text("deep")
    (mount.path / "dst").mkdir()
    os.rename(mount.path / "src", mount.path / "dst" / "moved")
    assert (mount.path / "dst" / "moved" / "sub" / "f").read_text() == "deep"
    assert mount.path.joinpath("dst").stat().st_nlink == 3


def test_rename_folder_onto_empty_folder_replaces_it(mount: Mounted) -> None:
    (mount.path / "a").mkdir()
    (mount.path / "a" / "f").write_text("f")
    (mount.path / "b").mkdir()
    os.rename(mount.path / "a", mount.path / "b")
    assert (mount.path / "b" / "f").read_text() == "f"
    assert not (mount.path / "a").exists()


def test_rename_folder_onto_non_empty_folder_is_refused(mount: Mounted) -> None:
    (mount.path / "a").mkdir()
    (mount.path / "b").mkdir()
    (mount.path / "b" / "keep").write_text("k")
    with pytest.raises(OSError) as exc:
        os.rename(mount.path / "a", mount.path / "b")
    assert exc.value.errno in (errno.ENOTEMPTY, errno.EEXIST)
    assert (mount.path / "b" / "keep").read_text() == "k"


def test_rename_file_onto_folder_and_back(mount: Mounted, folder: Path) -> None:
    (folder / "f").write_text("f")
    (folder / "d").mkdir()
    with pytest.raises(OSError) as exc:
        os.rename(folder / "f", folder / "d")
    assert exc.value.errno == errno.EISDIR
    with pytest.raises(OSError) as exc:
        os.rename(folder / "d", folder / "f")
    assert exc.value.errno == errno.ENOTDIR


def test_stat_times_and_utimens(folder: Path) -> None:
    path = folder / "t"
    before = time.time()
    path.write_text("x")
    st = path.stat()
    assert before - 2 <= st.st_mtime <= time.time() + 2
    os.utime(path, ns=(1_000_000_000_123, 2_000_000_000_456))
    st = path.stat()
    assert st.st_atime_ns == 1_000_000_000_123
    assert st.st_mtime_ns == 2_000_000_000_456


def test_utime_now_and_omit(folder: Path) -> None:
    path = folder / "t"
    path.write_text("x")
    os.utime(path, ns=(5_000_000_000, 6_000_000_000))
    import subprocess

    subprocess.run(["touch", "-m", str(path)], check=True)  # UTIME_OMIT for atime, UTIME_NOW for mtime
    st = path.stat()
    assert st.st_atime_ns == 5_000_000_000
    assert st.st_mtime > time.time() - 60


def test_utimens_before_close_is_kept(folder: Path) -> None:
    """cp -p sets the times on the open descriptor before closing it."""
    path = folder / "p"
    with open(path, "wb") as f:
        f.write(b"data")
        f.flush()
        os.utime(f.fileno(), ns=(3_000_000_000, 4_000_000_000))
    assert path.stat().st_mtime_ns == 4_000_000_000


def test_chmod_is_kept(folder: Path) -> None:
    path = folder / "m"
    path.write_text("x")
    os.chmod(path, 0o600)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(folder, 0o750)
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750


def test_statfs(mount: Mounted) -> None:
    vfs = os.statvfs(mount.path)
    assert vfs.f_namemax == 255
    assert vfs.f_blocks > 0
    assert vfs.f_bavail <= vfs.f_blocks


def test_fsync_makes_content_committed(mount: Mounted, folder: Path) -> None:
    from encfs.model import Actor
    from encfs.service import FilesService
    from encfs.store import open_store

    path = folder / "durable.bin"
    with open(path, "wb") as f:
        f.write(b"durable bytes")
        f.flush()
        os.fsync(f.fileno())
        store = open_store(mount.store)
        try:
            item = FilesService(store).lookup(Actor.local(), "/data/durable.bin")
            assert item.size == 13  # committed at fsync, before close
        finally:
            store.close()


def test_identical_content_is_stored_once(mount: Mounted, folder: Path) -> None:
    payload = os.urandom(200_000)
    for name in ("one", "two", "three"):
        (folder / name).write_bytes(payload)
    blobs = [p for p in (mount.store / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1
    (folder / "one").unlink()
    (folder / "two").unlink()
    assert len([p for p in (mount.store / "blobs").rglob("*") if p.is_file()]) == 1
    (folder / "three").unlink()
    assert [p for p in (mount.store / "blobs").rglob("*") if p.is_file()] == []


def test_old_blob_is_removed_when_content_changes(mount: Mounted, folder: Path) -> None:
    path = folder / "f"
    path.write_bytes(b"first")
    path.write_bytes(b"second")
    blobs = [p for p in (mount.store / "blobs").rglob("*") if p.is_file()]
    assert [b.read_bytes() for b in blobs] == [b"second"]
    assert list((mount.store / "spool").iterdir()) == []


def test_control_entries_are_hidden_but_reachable(mount: Mounted, folder: Path) -> None:
    assert os.listdir(mount.path) == ["data"]
    assert (mount.path / ".encfs").is_dir()
    assert (mount.path / ".encfs" / "errors").is_file()
    assert (mount.path / ".search").is_dir()


def test_large_file_round_trip(folder: Path) -> None:
    payload = os.urandom(8 << 20)
    (folder / "big").write_bytes(payload)
    assert (folder / "big").read_bytes() == payload
    assert (folder / "big").stat().st_size == 8 << 20


def _pattern(mebibytes: int) -> bytes:
    """Different bytes in every MiB (so a misplaced piece shows), quick to make."""
    return b"".join(i.to_bytes(4, "little") * (1 << 18) for i in range(mebibytes))


def test_big_file_written_in_order_is_whole_after_fsync(mount: Mounted, folder: Path) -> None:
    """A big file is flushed to disk while it is written (write-behind) and read back
    in splice-sized pieces that do not line up with MiB boundaries."""
    payload = _pattern(150)
    path = folder / "big.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for start in range(0, len(payload), 1 << 20):
            os.write(fd, payload[start : start + (1 << 20)])
        os.pwrite(fd, b"patched", 5 << 20)  # out of order at the end: hashed again
        os.fsync(fd)
    finally:
        os.close(fd)
    expected = payload[: 5 << 20] + b"patched" + payload[(5 << 20) + 7 :]
    assert path.stat().st_size == len(expected)
    with open(path, "rb") as f:
        assert f.read() == expected
    fd = os.open(path, os.O_RDONLY)
    try:
        for offset in (0, (1 << 20) - 3, 1032190, 77 << 20, len(expected) - 5):
            assert os.pread(fd, 3 << 20, offset) == expected[offset : offset + (3 << 20)]
    finally:
        os.close(fd)
    stored = [p for folder in ("blobs", "spool") for p in (mount.store / folder).rglob("*") if p.is_file()]
    assert [b.stat().st_size for b in stored] == [len(expected)]  # a blob, or unsettled (patched, fsynced)
    assert [p.name for p in (mount.store / "spool").iterdir() if not p.name.startswith("live-")] == []


def test_mapped_file_reads_what_was_written(folder: Path) -> None:
    """np.load(mmap_mode="r") and LMDB-packed datasets read a file through a mapping."""
    payload = os.urandom(3 * mmap.PAGESIZE + 123)
    path = folder / "array.bin"
    path.write_bytes(payload)
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as view:
        assert view[:] == payload
        assert view[mmap.PAGESIZE + 7 : mmap.PAGESIZE + 70] == payload[mmap.PAGESIZE + 7 : mmap.PAGESIZE + 70]


def test_writes_through_a_shared_mapping_are_committed_at_msync(mount: Mounted, folder: Path) -> None:
    path = folder / "weights.bin"
    path.write_bytes(bytes(2 * mmap.PAGESIZE))
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as view:
        view[100:105] = b"hello"
        view[mmap.PAGESIZE + 1 : mmap.PAGESIZE + 6] = b"world"
        view.flush()  # msync: committed before the file is closed
        stored = stored_bytes(mount.store, "/data/weights.bin")
    expected = bytearray(2 * mmap.PAGESIZE)
    expected[100:105] = b"hello"
    expected[mmap.PAGESIZE + 1 : mmap.PAGESIZE + 6] = b"world"
    assert stored == expected
    assert path.read_bytes() == expected


def test_writes_to_a_mapping_whose_descriptor_is_closed_are_committed_at_unmap(
        mount: Mounted, folder: Path) -> None:
    """The kernel writes a mapping's dirty pages back when it is unmapped, and then
    flushes the file: a program that closes the descriptor first loses nothing."""
    path = folder / "late.bin"
    path.write_bytes(bytes(mmap.PAGESIZE))
    fd = os.open(path, os.O_RDWR)
    view = mmap.mmap(fd, mmap.PAGESIZE)
    os.close(fd)
    view[10:17] = b"kept it"
    view.close()  # munmap, no msync
    assert stored_bytes(mount.store, "/data/late.bin")[10:17] == b"kept it"


UNUSUAL_NAMES = ["with space.jpg", "ünïcødé.png", "emoji 🐔.mp4", "new\nline.txt", "tab\there.txt",
                 "-dash.txt", "*star?.txt", " lead.txt", "trail .txt",
                 "e\u0301.txt", "\u00e9.txt"]  # é decomposed and composed: two names, as on ext4


def test_unusual_but_valid_names_round_trip(mount: Mounted, folder: Path) -> None:
    for name in UNUSUAL_NAMES:
        (folder / name).write_bytes(name.encode())
    assert sorted(os.listdir(folder)) == sorted(UNUSUAL_NAMES)
    for name in UNUSUAL_NAMES:
        os.rename(folder / name, folder / f"{name}.moved")
        assert (folder / f"{name}.moved").read_bytes() == name.encode()
    assert os.listdir(mount.path / ".search" / "🐔") == ["emoji 🐔.mp4.moved"]
    assert stored_bytes(mount.store, "/data/new\nline.txt.moved") == b"new\nline.txt"


def test_fallocate_reserves_and_grows_the_file(mount: Mounted, folder: Path) -> None:
    path = folder / "reserved.bin"
    done = subprocess.run(["fallocate", "-l", "3MiB", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert path.stat().st_size == 3 << 20
    assert path.read_bytes() == bytes(3 << 20)
    with open(path, "r+b") as f:  # posix_fallocate past the end grows it; the bytes stay
        f.write(b"head")
        f.flush()
        os.posix_fallocate(f.fileno(), (3 << 20) - 10, 20)
    assert path.stat().st_size == (3 << 20) + 10
    assert stored_bytes(mount.store, "/data/reserved.bin") == b"head" + bytes((3 << 20) + 6)


def _blob_files(store: Path) -> list[Path]:
    return sorted(p for p in (store / "blobs").rglob("*") if p.is_file())


def test_cp_within_the_mount_shares_the_stored_content(mount: Mounted, folder: Path) -> None:
    """cp asks copy_file_range for the whole file: the copy takes the same blob."""
    payload = os.urandom(3 * 1024 * 1024 + 5)
    (folder / "a.bin").write_bytes(payload)
    done = subprocess.run(["cp", str(folder / "a.bin"), str(folder / "b.bin")], capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    assert (folder / "b.bin").read_bytes() == payload
    assert stored_bytes(mount.store, "/data/b.bin") == payload
    assert len(_blob_files(mount.store)) == 1
    (folder / "a.bin").unlink()
    assert (folder / "b.bin").read_bytes() == payload
    (folder / "b.bin").unlink()
    assert _blob_files(mount.store) == []


def test_copied_file_outlives_its_source_removed_before_the_copy_is_closed(mount: Mounted,
                                                                           folder: Path) -> None:
    payload = os.urandom(20 * 1024 * 1024)  # big: its blob leaves through the trash
    (folder / "src.bin").write_bytes(payload)
    source = os.open(folder / "src.bin", os.O_RDONLY)
    target = os.open(folder / "dst.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        assert os.copy_file_range(source, target, len(payload)) == len(payload)
        assert os.listdir(mount.store / "spool") == []  # no bytes were copied: no draft file
        os.close(source)
        (folder / "src.bin").unlink()  # its blob is no longer counted by any file
        assert _blob_files(mount.store) == []
    finally:
        os.close(target)
    assert stored_bytes(mount.store, "/data/dst.bin") == payload
    assert (folder / "dst.bin").read_bytes() == payload
    assert len(_blob_files(mount.store)) == 1


def test_copied_file_changed_before_close_keeps_both_versions(mount: Mounted, folder: Path) -> None:
    payload = os.urandom(2 * 1024 * 1024)
    (folder / "src.bin").write_bytes(payload)
    with open(folder / "src.bin", "rb") as source, open(folder / "dst.bin", "wb") as target:
        assert os.copy_file_range(source.fileno(), target.fileno(), len(payload)) == len(payload)
        target.seek(0, os.SEEK_END)
        target.write(b"tail")
    assert (folder / "dst.bin").read_bytes() == payload + b"tail"
    assert stored_bytes(mount.store, "/data/dst.bin") == payload + b"tail"
    assert stored_bytes(mount.store, "/data/src.bin") == payload
    assert len(_blob_files(mount.store)) == 2


@pytest.mark.parametrize("case", ["offset", "part", "into non-empty", "from unsaved"])
def test_other_copies_come_out_exact(mount: Mounted, folder: Path, case: str) -> None:
    """At an offset, into a file with content, or from one with new bytes not yet
    committed, the kernel copies through reads and writes; a copy of the start of a
    file takes part of the blob, and its commit stores just that part."""
    payload = os.urandom(1024 * 1024 + 3)
    (folder / "src.bin").write_bytes(payload)
    expected = {"offset": payload[1000:], "part": payload[:5000], "into non-empty": payload,
                "from unsaved": b"fresh" + payload[5:]}[case]
    with open(folder / "src.bin", "r+b") as source, open(folder / "dst.bin", "w+b") as target:
        if case == "into non-empty":
            target.write(b"x" * 10)
            target.flush()
        if case == "from unsaved":
            source.write(b"fresh")  # the source's new bytes are not committed yet
            source.flush()
        offset_in = 1000 if case == "offset" else 0
        length = 5000 if case == "part" else len(payload)
        copied = 0
        while copied < len(expected):
            n = os.copy_file_range(source.fileno(), target.fileno(), length - copied,
                                   offset_in + copied, copied)
            assert n > 0
            copied += n
    assert (folder / "dst.bin").read_bytes() == expected
    assert stored_bytes(mount.store, "/data/dst.bin") == expected


def _sparse_file(path: Path, size: int) -> None:
    with open(path, "wb") as f:  # cheap to write; hashed at close
        f.truncate(size)
        f.write(b"head")
        f.seek(size - 4)
        f.write(b"tail")


def test_copy_in_pieces_moves_no_bytes(mount: Mounted, folder: Path) -> None:
    """The kernel hands a copy of over 4 GiB to the file system in pieces (its reply
    counts bytes in 32 bits); the pieces after the first take more of the same blob.
    Pieces of 100 MiB here behave as those do."""
    size, piece = 300 << 20, 100 << 20
    _sparse_file(folder / "shard.tar", size)
    source = os.open(folder / "shard.tar", os.O_RDONLY)
    target = os.open(folder / "copy.tar", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        pieces = []
        while copied := os.copy_file_range(source, target, piece):
            pieces.append(copied)
        assert pieces == [piece] * 3
        assert os.listdir(mount.store / "spool") == []  # no bytes were copied
    finally:
        os.close(source)
        os.close(target)
    with open(folder / "copy.tar", "rb") as f:
        assert f.read(4) == b"head"
        f.seek(size - 4)
        assert f.read(4) == b"tail"
    assert os.stat(folder / "copy.tar").st_size == size
    assert len(_blob_files(mount.store)) == 1


def test_copy_of_the_start_of_a_file_stores_just_that_start(mount: Mounted, folder: Path) -> None:
    size = 30 << 20
    _sparse_file(folder / "whole.bin", size)
    with open(folder / "whole.bin", "rb") as source, open(folder / "start.bin", "wb") as target:
        assert os.copy_file_range(source.fileno(), target.fileno(), 10 << 20) == 10 << 20
    assert os.stat(folder / "start.bin").st_size == 10 << 20
    assert stored_bytes(mount.store, "/data/start.bin") == b"head" + bytes((10 << 20) - 4)
    assert len(_blob_files(mount.store)) == 2
