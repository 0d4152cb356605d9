"""Blob files live exactly as long as a record counts them, even when writers race."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from encfs.model import Actor
from encfs.service import FilesService
from encfs.store import open_store

from conftest import Mounted, start_mount, stop_mount
from store_state import poll, sha, sync_files


class SecondWriterInTheGap(FilesService):
    """Runs `then` once, in the gap between a commit that freed blobs and their
    deletion: where another thread or process may count the same content again."""

    then = None

    def _delete_uncounted_blobs(self, shas: list[str]) -> None:
        if shas and self.then is not None:
            then, self.then = self.then, None
            then()
        super()._delete_uncounted_blobs(shas)


def test_content_counted_again_before_the_clean_up_keeps_its_blob(store: Path, tmp_path: Path) -> None:
    content = b"same pixels " * 1000
    local = tmp_path / "a.png"
    local.write_bytes(content)
    opened = open_store(store)
    try:
        service = SecondWriterInTheGap(opened)
        actor = Actor.local()
        service.create_folder(actor, "/data")
        service.upload(actor, "/data", local)
        blob_file = Path(service.blobs.path(sha(content)))
        service.then = lambda: service.upload(actor, "/data", local, name="b.png")

        service.remove_item(actor, "/data/a.png")

        assert blob_file.read_bytes() == content
        item = service.lookup(actor, "/data/b.png")
        reader = service.open_reader(actor, item)
        assert reader is not None and reader.pread(len(content) + 1, 0) == content
        reader.close()
        service.remove_item(actor, "/data/b.png")
        assert not blob_file.exists()  # and once nothing counts it, it goes
    finally:
        opened.close()


BIG = 40 << 20  # over the size whose removal goes to the background


def _blob_files(store: Path) -> list[Path]:
    return [p for p in (store / "blobs").rglob("*") if p.is_file()]


def test_a_removed_big_file_leaves_the_store_at_once_and_its_space_soon(mount: Mounted, folder: Path) -> None:
    data = os.urandom(BIG)
    sync_files({folder / "big.bin": data})
    blob = Path(mount.store / "blobs" / sha(data)[:2] / sha(data)[2:])
    assert blob.stat().st_size == BIG
    (folder / "big.bin").unlink()
    assert not blob.exists()  # out of blobs/ before unlink(2) returned
    assert poll(lambda: list((mount.store / "trash").iterdir()) == []), "the trash was never emptied"
    assert _blob_files(mount.store) == []


def test_a_big_file_written_again_with_the_same_bytes_keeps_one_blob(mount: Mounted, folder: Path) -> None:
    data = os.urandom(BIG)
    sync_files({folder / "big.bin": data})
    sync_files({folder / "big.bin": data})  # a duplicate: its draft is dropped in the background
    sync_files({folder / "copy.bin": data})
    assert (folder / "big.bin").read_bytes() == data
    assert (folder / "copy.bin").read_bytes() == data
    assert [p.stat().st_size for p in _blob_files(mount.store)] == [BIG]
    assert poll(lambda: os.listdir(mount.store / "spool") == []), os.listdir(mount.store / "spool")


def test_the_cli_frees_a_big_blob_before_it_exits(store: Path, tmp_path: Path) -> None:
    local = tmp_path / "big.bin"
    local.write_bytes(os.urandom(BIG))
    for argv in (["folder", "create", "/data"], ["upload", "/data", str(local)],
                 ["rm", "--yes", "/data/big.bin"]):
        done = subprocess.run([sys.executable, "-m", "encfs", *argv, "--store", str(store)],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert _blob_files(store) == []
    assert list((store / "trash").iterdir()) == []


def test_mounting_empties_the_trash_a_killed_process_left(store: Path, tmp_path: Path) -> None:
    left = store / "trash" / ("ab" * 32 + ".0123")  # what a process killed mid-removal leaves
    left.write_bytes(b"x" * 1000)
    mounted = start_mount(store, tmp_path / "mnt")
    try:
        assert not left.exists()
    finally:
        stop_mount(mounted)
