"""Stored content damaged behind encfs's back is never served, and never spread.

Each test stores files, damages a blob file directly in the store (bytes flipped,
truncated, removed, replaced), then reads through a real mount: the read fails with
EIO, `cat` exits non-zero, the log names the item and the blob, and `stat` keeps
the stored size. New content identical to a damaged blob is stored afresh (and
repairs it) instead of sharing the damaged copy.
"""

from __future__ import annotations

import errno
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from encfs.model import Actor
from encfs.service import FilesService
from encfs.store import open_store

from conftest import Mounted

SMALL = b"small file, held in memory while written\n" * 100  # 4 KiB: one block
BIG = bytes(range(256)) * (12 << 12)  # 12 MiB: twelve blocks, spooled while written


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blob_path(store: Path, content: bytes) -> Path:
    digest = sha(content)
    return store / "blobs" / digest[:2] / digest[2:]


def upload(store: Path, tmp_path: Path, name: str, content: bytes) -> None:
    """Store a file the way `encfs upload` does, into /data."""
    local = tmp_path / "local" / name
    local.parent.mkdir(exist_ok=True)
    local.write_bytes(content)
    opened = open_store(store)
    try:
        service = FilesService(opened)
        actor = Actor.local()
        if not any(node.name == "data" for node in service.list_folder(actor, "/")):
            service.create_folder(actor, "/data")
        service.upload(actor, "/data", local)
    finally:
        opened.close()


def flip(path: Path, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0xFF]))


def truncate(path: Path, offset: int) -> None:
    os.truncate(path, offset)


def remove(path: Path, offset: int) -> None:
    path.unlink()


def replace(path: Path, offset: int) -> None:
    """Another file of the same size renamed over the blob (a restore gone wrong)."""
    other = path.with_name("other")
    other.write_bytes(os.urandom(path.stat().st_size))
    os.rename(other, path)


def grow(path: Path, offset: int) -> None:
    """Bytes appended to the blob file: every stored byte is still there."""
    with open(path, "ab") as f:
        f.write(b"appended")


DAMAGES: dict[str, Callable[[Path, int], None]] = {
    "flipped": flip, "truncated": truncate, "removed": remove, "replaced": replace, "grown": grow,
}


def read_all(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def log_of(store: Path) -> str:
    return (store / "log" / "encfs.log").read_text(errors="replace")


@pytest.mark.parametrize("content", [SMALL, BIG], ids=["small", "big"])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_blob_reads_as_eio_with_a_log_line(
    store: Path, tmp_path: Path, mount_factory: Callable[[Path, str], Mounted], damage: str, content: bytes,
) -> None:
    upload(store, tmp_path, "scan.bin", content)
    DAMAGES[damage](blob_path(store, content), len(content) - 100)
    mount = mount_factory(store, "mnt")
    path = mount / "data" / "scan.bin"

    assert os.stat(path).st_size == len(content)
    with pytest.raises(OSError) as raised:
        read_all(path)
    assert raised.value.errno == errno.EIO
    cat = subprocess.run(["cat", str(path)], capture_output=True)
    assert cat.returncode != 0
    assert os.stat(path).st_size == len(content)  # no short file whose size shrinks
    lines = [line for line in log_of(store).splitlines() if "damaged content" in line]
    assert lines, log_of(store)
    assert sha(content) in lines[0] and "/data/scan.bin" in lines[0]


def test_damage_found_only_in_the_blocks_read_keeps_the_rest_readable(
    store: Path, tmp_path: Path, mount_factory: Callable[[Path, str], Mounted],
) -> None:
    """Blocks are checked as they are read: a damaged last block spoils reads of it
    only (a reader of the start of a big file is not refused)."""
    upload(store, tmp_path, "video.bin", BIG)
    flip(blob_path(store, BIG), len(BIG) - 1)
    mount = mount_factory(store, "mnt")
    with open(mount / "data" / "video.bin", "rb") as f:
        assert f.read(1 << 20) == BIG[: 1 << 20]
        f.seek(len(BIG) - 10)
        with pytest.raises(OSError) as raised:
            f.read(10)
    assert raised.value.errno == errno.EIO


def test_a_blob_damaged_while_mounted_is_found_at_the_next_open(
    store: Path, tmp_path: Path, mount_factory: Callable[[Path, str], Mounted],
) -> None:
    """A block found good is not checked again, unless the blob file changed (its
    inode, size or mtime): the next open of a changed file checks it anew."""
    upload(store, tmp_path, "a.bin", BIG)
    mount = mount_factory(store, "mnt")
    upload(store, tmp_path, "b.bin", BIG[::-1])  # never read through the mount before its damage
    assert read_all(mount / "data" / "a.bin") == BIG
    flip(blob_path(store, BIG[::-1]), 5)
    with pytest.raises(OSError) as raised:
        read_all(mount / "data" / "b.bin")
    assert raised.value.errno == errno.EIO


@pytest.mark.parametrize("content", [SMALL, BIG], ids=["small", "big"])
@pytest.mark.parametrize("damage", ["flipped", "truncated", "removed"])
def test_identical_content_is_not_deduplicated_onto_a_damaged_blob(
    store: Path, tmp_path: Path, mount_factory: Callable[[Path, str], Mounted], damage: str, content: bytes,
) -> None:
    upload(store, tmp_path, "old.bin", content)
    DAMAGES[damage](blob_path(store, content), 10)
    mount = mount_factory(store, "mnt")

    (mount / "data" / "new.bin").write_bytes(content)

    assert read_all(mount / "data" / "new.bin") == content
    assert read_all(mount / "data" / "old.bin") == content  # repaired by the good copy
    assert blob_path(store, content).read_bytes() == content
    assert "repaired blob" in log_of(store) or "replaces it" in log_of(store)


def test_cli_upload_of_identical_content_repairs_a_damaged_blob(store: Path, tmp_path: Path) -> None:
    upload(store, tmp_path, "old.bin", BIG)
    flip(blob_path(store, BIG), 3 << 20)
    local = tmp_path / "again.bin"
    local.write_bytes(BIG)
    command = [sys.executable, "-m", "encfs", "upload", "/data", str(local), "--store", str(store)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert blob_path(store, BIG).read_bytes() == BIG


def test_blobs_stored_before_checksums_are_checked_by_their_sha256(
    store: Path, tmp_path: Path, mount_factory: Callable[[Path, str], Mounted],
) -> None:
    """A store written before checksums existed: its blobs have none; a whole blob is
    checked against its name at its first read, then its checksums are stored."""
    upload(store, tmp_path, "good.bin", BIG)
    upload(store, tmp_path, "bad.bin", SMALL)
    opened = open_store(store)
    try:
        with opened.meta.write() as w:
            for content in (BIG, SMALL):
                w.txn.delete(bytes.fromhex(sha(content)), db=w.dbs["sums"])
    finally:
        opened.close()
    flip(blob_path(store, SMALL), 0)
    mount = mount_factory(store, "mnt")

    assert read_all(mount / "data" / "good.bin") == BIG
    with pytest.raises(OSError) as raised:
        read_all(mount / "data" / "bad.bin")
    assert raised.value.errno == errno.EIO
    opened = open_store(store)
    try:
        with opened.meta.read() as r:
            assert r.sums(sha(BIG)) is not None  # computed at the first full check
    finally:
        opened.close()


# ---------------------------------------------------------------- recovery


def blob_files(store: Path) -> set[str]:
    return {sub.name + entry.name for sub in (store / "blobs").iterdir() for entry in sub.iterdir()}


def quarantined(store: Path) -> set[str]:
    folder = store / "quarantine"
    if not folder.exists():
        return set()
    return {p.name.split(".")[0] for p in folder.iterdir() if not p.name.endswith(".txt")}


def drop_blobs_table(store: Path) -> None:
    opened = open_store(store)
    try:
        with opened.meta.write() as w:
            w.txn.drop(w.dbs["blobs"], delete=False)
    finally:
        opened.close()


def test_a_lost_blobs_table_deletes_no_content_at_the_next_mount(
    store: Path, tmp_path: Path, mount_factory: Callable[[Path, str], Mounted],
) -> None:
    contents = {f"f{n:02d}.bin": os.urandom(3000 + n) for n in range(30)}
    contents["copy.bin"] = contents["f00.bin"]  # two items, one blob
    for name, content in contents.items():
        upload(store, tmp_path, name, content)
    stray = os.urandom(500)  # a blob file nothing names
    blob_path(store, stray).write_bytes(stray)
    before = blob_files(store)
    drop_blobs_table(store)

    mount = mount_factory(store, "mnt")

    assert blob_files(store) | quarantined(store) == before  # nothing deleted
    assert sha(stray) in quarantined(store)
    for name, content in contents.items():
        assert read_all(mount / "data" / name) == content
    opened = open_store(store)
    try:
        with opened.meta.read() as r:
            assert r.blob(sha(contents["f00.bin"]))[0] == 2  # counted again from the items
    finally:
        opened.close()
    assert "counted again" in log_of(store) and "quarantined blob" in log_of(store)


def test_one_stray_blob_file_is_still_removed_at_the_next_mount(
    store: Path, tmp_path: Path, mount_factory: Callable[[Path, str], Mounted],
) -> None:
    upload(store, tmp_path, "kept.bin", SMALL)
    stray = os.urandom(500)
    blob_path(store, stray).write_bytes(stray)
    mount_factory(store, "mnt")
    assert sha(stray) not in blob_files(store) | quarantined(store)
    assert sha(SMALL) in blob_files(store)


def test_a_killed_cli_upload_leaves_no_draft_after_the_next_command(store: Path, tmp_path: Path) -> None:
    spool = store / "spool"
    source = tmp_path / "huge.bin"
    with open(source, "wb") as f:
        f.truncate(16 << 30)  # sparse: read fast, written slowly into the spool
    upload(store, tmp_path, "seed.bin", SMALL)  # makes /data
    command = [sys.executable, "-m", "encfs", "upload", "/data", str(source), "--store", str(store)]
    uploading = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not any(p.name.startswith("draft-") for p in spool.iterdir()):
            assert time.monotonic() < deadline and uploading.poll() is None, "no draft was started"
            time.sleep(0.01)
    finally:
        uploading.kill()
        uploading.wait()
    assert os.listdir(spool)

    listed = subprocess.run([sys.executable, "-m", "encfs", "ls", "/data", "--store", str(store)],
                            capture_output=True, text=True)

    assert listed.returncode == 0, listed.stderr
    assert os.listdir(spool) == []
    assert "huge.bin" not in listed.stdout


def test_a_running_mount_clears_a_killed_cli_uploads_draft(
    store: Path, tmp_path: Path, mount_factory: Callable[[Path, str], Mounted],
) -> None:
    spool = store / "spool"
    mount_factory(store, "mnt")
    (tmp_path / "mnt" / "data").mkdir()
    abandoned = spool / "draft-left-by-a-killed-upload"
    abandoned.write_bytes(b"x" * 5000)  # written, then its writer died: nobody holds its lock
    deadline = time.monotonic() + 40
    while abandoned.exists():
        assert time.monotonic() < deadline, "the running mount never cleared the abandoned draft"
        time.sleep(0.2)


@pytest.mark.parametrize("content", [SMALL, BIG], ids=["small", "big"])
def test_changing_a_damaged_file_in_place_is_eio_and_stores_no_damaged_version(
    store: Path, tmp_path: Path, mount_factory: Callable[[Path, str], Mounted], content: bytes,
) -> None:
    """A write into a file keeps its other bytes: from a damaged blob they cannot be
    vouched for, so the write is refused rather than stored as a new version."""
    upload(store, tmp_path, "scan.bin", content)
    flip(blob_path(store, content), len(content) // 2)
    mount = mount_factory(store, "mnt")
    before = blob_files(store)
    with pytest.raises(OSError) as raised, open(mount / "data" / "scan.bin", "r+b") as f:
        f.write(b"new start")
    assert raised.value.errno == errno.EIO
    assert blob_files(store) == before
    with open(mount / "data" / "scan.bin", "wb") as f:  # writing it whole anew works
        f.write(content)
    assert read_all(mount / "data" / "scan.bin") == content


def test_a_small_files_record_carries_its_checksum_only_for_its_own_blob(store: Path, tmp_path: Path) -> None:
    """The first read of a one-block file takes its checksum from the item's record
    (no lookup in `sums`). That copy follows the item's content: changed content
    gets its own, and a copy left from other content is never used."""
    other = SMALL.upper()
    upload(store, tmp_path, "a.bin", SMALL)
    upload(store, tmp_path, "b.bin", other)
    opened = open_store(store)
    try:
        service = FilesService(opened)
        actor = Actor.local()
        item = service.lookup(actor, "/data/a.bin")
        with opened.meta.read() as r:
            packed = r.sums(sha(SMALL))
        assert packed is not None and item.block_sum_hint() == int.from_bytes(packed[4:12], "big")

        with opened.meta.write() as w:
            item.blob = sha(other)  # the record's copy still names SMALL's blob
            assert item.block_sum_hint() is None
            w.put_node(item)
        stored = service.lookup(actor, "/data/a.bin")
        with opened.meta.read() as r:
            packed = r.sums(sha(other))
        assert packed is not None and stored.block_sum_hint() == int.from_bytes(packed[4:12], "big")
    finally:
        opened.close()
