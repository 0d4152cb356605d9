"""fsync and close cost what changed, not the file's size (live_drafts.py): a file
changed in place keeps its content in its draft's spool file, made durable by an
fsync, and becomes a content-addressed blob once closed and quiet.

Through real mounts, with real programs: SQLite in WAL mode with per-row commits,
h5py editing a file in place, pwrite + fsync, and a daemon killed with kill -9."""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import Mounted, start_mount, stop_mount
from store_state import sha, stored_bytes

MIB = 1 << 20


def info(store: Path, path: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "encfs", "info", "--json", "--store", str(store), path],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def eventually(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not within the time allowed"
        time.sleep(0.1)


def blob_files(store: Path) -> list[Path]:
    return [p for p in (store / "blobs").rglob("*") if p.is_file()]


def live_files(store: Path) -> list[str]:
    return sorted(name for name in os.listdir(store / "spool") if name.startswith("live-"))


def write_backwards(path: Path, data: bytes, piece: int = 256 << 10) -> None:
    """Write a file last piece first: its hash is not known at close."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for start in reversed(range(0, len(data), piece)):
            os.pwrite(fd, data[start:start + piece], start)
    finally:
        os.close(fd)


@pytest.fixture
def quick_settling(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCFS_SETTLE_SECONDS", "1")


def test_pwrite_and_fsync_store_no_new_version(store: Path, mount: Mounted) -> None:
    (mount.path / "d").mkdir()
    content = bytearray(os.urandom(16 * MIB))
    (mount.path / "d" / "big.bin").write_bytes(content)
    assert len(blob_files(store)) == 1 and info(store, "/d/big.bin")["settled"] is True
    fd = os.open(mount.path / "d" / "big.bin", os.O_RDWR)
    try:
        for round_ in range(20):
            offset = round_ * 797_003
            os.pwrite(fd, b"%03d" % round_ * 33, offset)
            content[offset:offset + 99] = b"%03d" % round_ * 33
            os.fsync(fd)
            assert bytes(content) == stored_bytes(store, "/d/big.bin")  # durable and named
    finally:
        os.close(fd)
    assert blob_files(store) == [], "an fsync stored a whole new version (or kept the old one)"
    assert len(live_files(store)) == 1  # the content is the draft's file, written in place
    details = info(store, "/d/big.bin")
    assert details["settled"] is False and details["size"] == 16 * MIB and details["sha256"] is None
    assert (mount.path / "d" / "big.bin").read_bytes() == bytes(content)


def test_editing_a_settled_file_takes_its_blob_over_without_a_copy(store: Path, mount: Mounted) -> None:
    (mount.path / "d").mkdir()
    content = bytearray(os.urandom(8 * MIB))
    (mount.path / "d" / "f.bin").write_bytes(content)
    [blob] = blob_files(store)
    inode = blob.stat().st_ino
    with open(mount.path / "d" / "f.bin", "r+b", buffering=0) as f:
        f.seek(5 * MIB)
        f.write(b"edited")
        os.fsync(f.fileno())
        [live] = live_files(store)
        assert (store / "spool" / live).stat().st_ino == inode  # the same file: nothing was copied
        assert blob_files(store) == []
    content[5 * MIB:5 * MIB + 6] = b"edited"
    assert stored_bytes(store, "/d/f.bin") == bytes(content)
    assert info(store, "/d/f.bin")["settled"] is False


def test_content_read_or_shared_elsewhere_is_copied_not_taken_over(store: Path, mount_factory) -> None:
    """A blob that another mount reads, or that another file shares, is never changed
    in place: the writer copies it, the reader goes on reading the old bytes whole
    (no damage reported), and the other file keeps its content."""
    first, second = mount_factory(store, "one"), mount_factory(store, "two")
    (first.path / "d").mkdir()
    old = os.urandom(4 * MIB)
    (first.path / "d" / "read.bin").write_bytes(old)
    (first.path / "d" / "shared.bin").write_bytes(old)
    (first.path / "d" / "twin.bin").write_bytes(old)  # the same blob as shared.bin
    eventually(lambda: (second.path / "d" / "read.bin").exists())
    with open(second.path / "d" / "read.bin", "rb") as reader:
        assert reader.read(100) == old[:100]
        for name in ("read.bin", "shared.bin"):
            with open(first.path / "d" / name, "r+b", buffering=0) as f:
                f.seek(2 * MIB)
                f.write(b"new bytes")
                os.fsync(f.fileno())
        assert reader.read() == old[100:]
    new = old[:2 * MIB] + b"new bytes" + old[2 * MIB + 9:]
    assert stored_bytes(store, "/d/read.bin") == new
    assert stored_bytes(store, "/d/shared.bin") == new
    assert stored_bytes(store, "/d/twin.bin") == old
    assert "damage" not in second.log() and "damage" not in first.log()


def test_sqlite_wal_per_row_commits_survive_remount(store: Path, tmp_path: Path) -> None:
    mounted = start_mount(store, tmp_path / "mnt")
    try:
        (mounted.path / "db").mkdir()
        db = sqlite3.connect(mounted.path / "db" / "rows.sqlite")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE rows (n INTEGER PRIMARY KEY, text TEXT)")
        db.commit()
        for n in range(400):
            db.execute("INSERT INTO rows VALUES (?, ?)", (n, f"row {n} " * 10))
            db.commit()
        db.close()
    finally:
        stop_mount(mounted)
    mounted = start_mount(store, tmp_path / "mnt")
    try:
        db = sqlite3.connect(mounted.path / "db" / "rows.sqlite")
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert [n for (n,) in db.execute("SELECT n FROM rows ORDER BY n")] == list(range(400))
        db.close()
    finally:
        stop_mount(mounted)


def test_h5py_edits_a_big_file_in_place(store: Path, mount: Mounted, tmp_path: Path) -> None:
    (mount.path / "d").mkdir()
    values = np.arange(8 * MIB // 8, dtype="f8")
    local = tmp_path / "local.h5"
    with h5py.File(local, "w") as f:
        f.create_dataset("values", data=values, chunks=(64 * 1024,))
    target = mount.path / "d" / "data.h5"
    target.write_bytes(local.read_bytes())  # in order: stored as a blob at close
    assert info(store, "/d/data.h5")["settled"] is True
    for value in (1.5, 2.5, 3.5):
        with h5py.File(target, "r+") as f:
            f["values"][12345] = value
    assert info(store, "/d/data.h5")["settled"] is False
    with h5py.File(target, "r") as f:
        assert f["values"][12345] == 3.5 and f["values"][12346] == 12346.0
    checked = tmp_path / "stored.h5"
    checked.write_bytes(stored_bytes(store, "/d/data.h5"))
    with h5py.File(checked, "r") as f:
        assert f["values"][12345] == 3.5 and f["values"][0] == 0.0


def test_unsettled_content_settles_once_and_is_stored_once(store: Path, quick_settling: None,
                                                            tmp_path: Path) -> None:
    mounted = start_mount(store, tmp_path / "mnt")
    try:
        (mounted.path / "d").mkdir()
        data = os.urandom(3 * MIB)
        write_backwards(mounted.path / "d" / "one.bin", data)
        write_backwards(mounted.path / "d" / "two.bin", data)
        first = info(store, "/d/one.bin")
        assert first["size"] == len(data)
        eventually(lambda: info(store, "/d/one.bin")["settled"] and info(store, "/d/two.bin")["settled"])
        assert info(store, "/d/one.bin")["sha256"] == info(store, "/d/two.bin")["sha256"] == sha(data)
        assert [p.read_bytes() == data for p in blob_files(store)] == [True]  # stored once
        assert live_files(store) == []
        assert (mounted.path / "d" / "two.bin").read_bytes() == data
    finally:
        stop_mount(mounted)


def test_a_held_file_does_not_settle(store: Path, quick_settling: None, tmp_path: Path) -> None:
    mounted = start_mount(store, tmp_path / "mnt")
    try:
        (mounted.path / "d").mkdir()
        fd = os.open(mounted.path / "d" / "open.bin", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.pwrite(fd, b"y" * 50, 50)  # out of order: its hash is not known
            os.pwrite(fd, b"x" * 50, 0)
            os.fsync(fd)
            time.sleep(2.5)
            assert info(store, "/d/open.bin")["settled"] is False  # a writer holds it
        finally:
            os.close(fd)
        eventually(lambda: info(store, "/d/open.bin")["settled"])
        assert stored_bytes(store, "/d/open.bin") == b"x" * 50 + b"y" * 50
        assert live_files(store) == []
    finally:
        stop_mount(mounted)


def test_another_mount_sees_an_in_place_change_at_close(store: Path, mount_factory) -> None:
    first, second = mount_factory(store, "one"), mount_factory(store, "two")
    (first.path / "d").mkdir()
    data = bytearray(os.urandom(4 * MIB))
    write_backwards(first.path / "d" / "f.bin", bytes(data))
    eventually(lambda: (second.path / "d" / "f.bin").read_bytes() == bytes(data))
    with open(first.path / "d" / "f.bin", "r+b", buffering=0) as writer:
        writer.seek(3 * MIB + 17)
        writer.write(b"changed on one")
    data[3 * MIB + 17:3 * MIB + 31] = b"changed on one"
    eventually(lambda: (second.path / "d" / "f.bin").read_bytes() == bytes(data))
    assert info(first.store, "/d/f.bin")["settled"] is False


def test_recovery_after_kill_adopts_the_unsettled_content(store: Path, tmp_path: Path) -> None:
    mounted = start_mount(store, tmp_path / "mnt")
    try:
        (mounted.path / "d").mkdir()
        data = bytearray(os.urandom(4 * MIB))
        (mounted.path / "d" / "f.bin").write_bytes(bytes(data))
        fd = os.open(mounted.path / "d" / "f.bin", os.O_RDWR)
        os.pwrite(fd, b"fsynced", MIB)
        os.fsync(fd)
        os.pwrite(fd, b"grown", len(data))  # fsynced too: the size follows the file
        os.fsync(fd)
        os.kill(mounted.process.pid, signal.SIGKILL)
        mounted.process.wait(timeout=10)
        with contextlib.suppress(OSError):  # the connection is gone with its daemon
            os.close(fd)
    finally:
        stop_mount(mounted)
    data[MIB:MIB + 7] = b"fsynced"
    data += b"grown"
    mounted = start_mount(store, tmp_path / "mnt")
    try:
        assert (mounted.path / "d" / "f.bin").read_bytes() == bytes(data)
        assert len(live_files(store)) == 1
        assert info(store, "/d/f.bin")["settled"] is False
    finally:
        stop_mount(mounted)


WRITER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], timeout=30)
db.execute("PRAGMA journal_mode=WAL")
db.execute("PRAGMA synchronous=FULL")
db.execute("CREATE TABLE IF NOT EXISTS rows (n INTEGER PRIMARY KEY, text TEXT)")
db.commit()
start = db.execute("SELECT coalesce(max(n), -1) + 1 FROM rows").fetchone()[0]
with open(sys.argv[2], "a", buffering=1) as done:
    for n in range(start, start + 100000):
        db.execute("INSERT INTO rows VALUES (?, ?)", (n, "payload " * (n % 50)))
        db.commit()
        done.write(f"{n}\\n")
"""


def test_kill_9_during_sqlite_commits_loses_no_committed_row(store: Path, tmp_path: Path) -> None:
    """50 rounds: a writer commits rows one by one; the daemon is killed with kill -9
    at a random moment; after a remount every row whose commit returned is there and
    the database is whole."""
    committed_log = tmp_path / "committed.txt"
    rng = random.Random(13)
    mountpoint = tmp_path / "mnt"
    mounted = start_mount(store, mountpoint)
    try:
        (mounted.path / "db").mkdir()
        db = sqlite3.connect(mounted.path / "db" / "rows.sqlite")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE rows (n INTEGER PRIMARY KEY, text TEXT)")
        db.commit()
        db.close()
    finally:
        stop_mount(mounted)
    committed_log.write_text("")
    for round_ in range(50):
        mounted = start_mount(store, mountpoint)
        writer = None
        try:
            database = mounted.path / "db" / "rows.sqlite"
            db = sqlite3.connect(database)
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",), f"round {round_}"
            have = {n for (n,) in db.execute("SELECT n FROM rows")}
            db.close()
            promised = {int(line) for line in committed_log.read_text().split()}
            assert promised <= have, f"round {round_}: lost {sorted(promised - have)[:5]}"
            writer = subprocess.Popen([sys.executable, "-c", WRITER, str(database), str(committed_log)],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.2, 0.8))
            os.kill(mounted.process.pid, signal.SIGKILL)
            mounted.process.wait(timeout=10)
        finally:
            if writer is not None:
                writer.kill()
                writer.wait(timeout=10)
            stop_mount(mounted)
    assert len(committed_log.read_text().split()) > 50  # the writer got work done


def test_info_shows_a_handed_over_identity_apart_from_the_id(store: Path, mount: Mounted) -> None:
    (mount.path / "d").mkdir()
    (mount.path / "d" / "labels.json").write_text("{}")
    before = info(store, "/d/labels.json")
    assert "identity" not in before
    (mount.path / "d" / "labels.json.tmp").write_text('{"a": 1}')
    os.replace(mount.path / "d" / "labels.json.tmp", mount.path / "d" / "labels.json")
    after = info(store, "/d/labels.json")
    assert after["identity"] == before["id"] != after["id"]
