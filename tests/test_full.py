"""Full disks, full metadata maps and long logs: a change that needs room is refused
with ENOSPC and a sentence, deleting always works, and nothing grows without bound."""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import lmdb
import pytest

from encfs.errors import NoSpace
from encfs.meta import room
from encfs.meta.store import MetaStore
from encfs.model import Actor
from encfs.store import init_store

from conftest import Mounted, errors_of, start_mount, stop_mount
from store_state import explain, os_refused, poll, service_of

MiB = 1 << 20


# ---------------------------------------------------------------- helpers


def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "encfs", *(str(a) for a in args)],
                          capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout)



def create_file(path: Path) -> None:
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY))


def new_errors(mounted: Mounted, before: str) -> list[str]:
    return errors_of(mounted)[len(before):].splitlines()


def log_of(store: Path) -> str:
    return (store / "log" / "encfs.log").read_text(errors="replace")


def free_bytes(disk: Path) -> int:
    vfs = os.statvfs(disk)
    return vfs.f_bavail * vfs.f_frsize


@contextlib.contextmanager
def small_disk(tmp_path: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size`, unmounted at the end (lazily if something still holds it)."""
    disk = tmp_path / "small-disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)], check=True)
    try:
        yield disk
    finally:
        if subprocess.run(["umount", str(disk)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@contextlib.contextmanager
def mounted(store: Path, mountpoint: Path) -> Iterator[Mounted]:
    mount = start_mount(store, mountpoint)
    try:
        yield mount
    finally:
        stop_mount(mount)


def fill(disk: Path) -> Path:
    """Write a file on the disk (beside the store) until nothing more fits."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for chunk in (MiB, 64 << 10, 4096, 512):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * chunk)
    finally:
        os.close(fd)
    assert free_bytes(disk) < 4096
    return filler


# ---------------------------------------------------------------- a full disk


def test_changes_on_a_full_disk_are_refused_with_enospc_and_deleting_works(tmp_path: Path) -> None:
    with small_disk(tmp_path, "16m") as disk:
        store = init_store(disk / "store")
        with mounted(store, tmp_path / "mnt") as mount:
            data = mount.path / "data"
            data.mkdir()
            for name in ("a.bin", "b.bin", "c.log"):
                (data / name).write_bytes(os.urandom(512 * 1024))
            (data / "empty").mkdir()
            (data / "tree" / "deeper").mkdir(parents=True)
            for n in range(20):
                (data / "tree" / "deeper" / f"f{n}.txt").write_bytes(os.urandom(20_000))
            (mount.path / ".datasets" / "D").mkdir()
            os.link(data / "a.bin", mount.path / ".datasets" / "D" / "a.bin")
            assert os.listdir(mount.path / ".datasets" / "D") == ["a.bin"]

            fill(disk)
            errors_before, log_before = errors_of(mount), len(log_of(store))

            os_refused(errno.ENOSPC, lambda: (data / "new-folder").mkdir())
            os_refused(errno.ENOSPC, lambda: os.close(os.open(data / "new.txt", os.O_CREAT | os.O_WRONLY)))
            os_refused(errno.ENOSPC, lambda: os.setxattr(data / "a.bin", "user.note", b"x" * 2000))
            assert sorted(os.listdir(data)) == ["a.bin", "b.bin", "c.log", "empty", "tree"]
            assert "user.note" not in os.listxattr(data / "a.bin")

            lines = new_errors(mount, errors_before)
            assert len(lines) == 3, lines
            for line, path in zip(lines, ("/data/new-folder", "/data/new.txt", "/data/a.bin"), strict=True):
                assert path in line and "no space left on the store's disk" in line, lines
            logged = log_of(store)[log_before:]
            assert logged.count("no space left on the store's disk") == 3, logged

            # deleting works on the full disk, and frees space; so does emptying a file
            free = free_bytes(disk)
            os.truncate(data / "c.log", 0)
            assert (data / "c.log").stat().st_size == 0
            assert poll(lambda: free_bytes(disk) >= free + 512 * 1024)
            free = free_bytes(disk)
            os.unlink(mount.path / ".datasets" / "D" / "a.bin")
            assert os.listdir(mount.path / ".datasets" / "D") == []
            (data / "b.bin").unlink()
            (data / "empty").rmdir()
            subprocess.run(["rm", "-r", str(data / "tree")], check=True)
            assert sorted(os.listdir(data)) == ["a.bin", "c.log"]
            assert poll(lambda: free_bytes(disk) >= free + 512 * 1024)

            (data / "after").mkdir()  # room again
            assert (data / "a.bin").stat().st_size == 512 * 1024


def test_the_cli_on_a_full_disk_refuses_with_a_message_and_deletes(tmp_path: Path) -> None:
    with small_disk(tmp_path, "16m") as disk:
        store = init_store(disk / "store")
        assert run("folder", "create", "/data", "--store", store).returncode == 0
        assert run("folder", "create", "/data/old", "--store", store).returncode == 0
        filler = fill(disk)

        done = run("folder", "create", "/data/new", "--store", store)
        assert done.returncode == 1, explain(done)
        assert "no space left on the store's disk" in done.stderr, explain(done)
        assert "Traceback" not in done.stderr
        assert "no space left on the store's disk" in run("errors", "--store", store).stdout

        done = run("folder", "rm", "/data/old", "--store", store)
        assert done.returncode == 0, explain(done)
        filler.unlink()
        assert run("folder", "create", "/data/new", "--store", store).returncode == 0
        assert run("folder", "list", "/data", "--store", store).stdout.split() == ["new/"]


# ---------------------------------------------------------------- a full metadata map


def create_until_refused(folder: Path, limit: int = 100_000) -> tuple[int, OSError]:
    for n in range(limit):
        try:
            fd = os.open(folder / f"a-rather-long-file-name-to-fill-the-map-{n:06d}.txt",
                         os.O_CREAT | os.O_WRONLY)
        except OSError as exc:
            return n, exc
        os.close(fd)
    raise AssertionError(f"{limit} files created in a 2 MiB metadata map")


def test_a_full_map_refuses_new_files_with_enospc_and_deleting_makes_room(tmp_path: Path) -> None:
    store = tmp_path / "store"
    done = run("init", "--store", store, "--max-metadata", "2MiB")
    assert done.returncode == 0, explain(done)
    with mounted(store, tmp_path / "mnt") as mount:
        data = mount.path / "data"
        data.mkdir()
        errors_before = errors_of(mount)
        created, refusal = create_until_refused(data)
        assert refusal.errno == errno.ENOSPC, refusal
        assert created > 100
        line = new_errors(mount, errors_before)[-1]
        assert "the store's metadata has reached its maximum size (2.0 MiB)" in line, line
        assert "maximum size (2.0 MiB)" in log_of(store)
        os_refused(errno.ENOSPC, lambda: (data / "folder").mkdir())

        names = sorted(os.listdir(data))
        assert len(names) == created
        for name in names[10:]:  # deletes work, in the reserve
            (data / name).unlink()
        (data / "folder").mkdir()  # and they made room again
        (data / "folder" / "file.txt").write_bytes(b"fits")
        subprocess.run(["rm", "-r", str(data)], check=True)
        assert os.listdir(mount.path) == []


def test_a_store_without_a_maximum_uses_a_modest_map(tmp_path: Path) -> None:
    """The CLI maps the metadata, not 64 GiB of address space: it runs under a limit."""
    store = init_store(tmp_path / "store")
    assert run("folder", "create", "/data", "--store", store).returncode == 0
    done = subprocess.run(
        ["bash", "-c", f'ulimit -v 8000000; exec "{sys.executable}" -m encfs ls --store "{store}" /'],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, explain(done)
    assert done.stdout.split() == ["data/"]


def test_too_small_a_maximum_is_refused_at_init(tmp_path: Path) -> None:
    for size, phrase in (("100KiB", "at least 1.0 MiB"), ("lots", "not a size")):
        done = run("init", "--store", tmp_path / "s", "--max-metadata", size)
        assert done.returncode != 0 and phrase in done.stderr, explain(done)
        assert "Traceback" not in done.stderr
        assert not (tmp_path / "s" / "encfs-store.json").exists()


GROW = """
import sys
from pathlib import Path
from encfs.meta import room
from encfs.meta.store import MetaStore
room.MIN_MAP = 1 << 20
meta = MetaStore(Path(sys.argv[1]), max_metadata=64 << 20)
for n in range(8):
    with meta.write() as w:
        for k in range(500):
            w.txn.put(b"grown-%d-%d" % (n, k), b"v" * 1000, db=meta.dbs["info"])
print(meta.env.info()["map_size"])
"""


def test_the_map_grows_while_reads_go_on_and_other_processes_follow(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(room, "MIN_MAP", MiB)  # start tiny, so that a few MiB make it grow
    store = init_store(tmp_path / "store", max_metadata=64 * MiB)
    meta = MetaStore(store / "meta.lmdb", max_metadata=64 * MiB)
    try:
        first = meta.env.info()["map_size"]
        assert first < 8 * MiB
        stop, failures, reads = threading.Event(), [], [0]

        def read_on() -> None:
            while not stop.is_set():
                try:
                    with meta.read() as r:
                        assert r.store_id()
                        time.sleep(0.0005)
                        assert r.store_id()  # the transaction outlived no map
                    reads[0] += 1
                except Exception as exc:  # any failure is the finding
                    failures.append(exc)

        readers = [threading.Thread(target=read_on) for _ in range(4)]
        for reader in readers:
            reader.start()
        try:
            for n in range(10):
                with meta.write() as w:
                    for k in range(500):
                        w.txn.put(b"k-%d-%d" % (n, k), b"v" * 1000, db=meta.dbs["info"])
        finally:
            stop.set()
            for reader in readers:
                reader.join()
        assert failures == []
        assert reads[0] > 0
        grown = meta.env.info()["map_size"]
        assert grown > first

        # another process grows it further: this one follows (MDB_MAP_RESIZED is handled)
        done = subprocess.run([sys.executable, "-c", GROW, str(store / "meta.lmdb")],
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, explain(done)
        assert int(done.stdout) > grown
        with meta.read() as r:
            assert r.txn.get(b"grown-7-499", db=meta.dbs["info"]) == b"v" * 1000
        with meta.write() as w:
            w.txn.put(b"after", b"1", db=meta.dbs["info"])
    finally:
        meta.close()
    with pytest.raises(lmdb.Error):  # the environment is closed, not left open
        meta.env.info()


# ---------------------------------------------------------------- logs


def test_the_log_is_rotated_and_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENCFS_LOG_MAX_BYTES", "20000")
    store = init_store(tmp_path / "store")
    with mounted(store, tmp_path / "mnt") as mount:
        for n in range(600):  # the root holds folders only: each is one refusal
            at_root = mount.path / f"f{n}"
            os_refused(errno.EPERM, lambda at_root=at_root: create_file(at_root))
        done = run("folder", "create", "/", "--store", store)  # another process logs too
        assert done.returncode != 0
    logs = sorted(p.name for p in (store / "log").iterdir())
    assert logs == ["encfs.log", "encfs.log.1", "encfs.log.2", "encfs.log.3"], logs
    for name in logs:
        size = (store / "log" / name).stat().st_size
        assert 0 < size <= 20000 + 1000, (name, size)
    assert "/f599" in log_of(store) or "/f599" in (store / "log" / "encfs.log.1").read_text()


def test_a_background_daemon_writes_nothing_to_stderr(tmp_path: Path) -> None:
    store = init_store(tmp_path / "store")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    done = run("mount", mnt, "--store", store, timeout=60)
    assert done.returncode == 0, explain(done)
    pid = int(done.stdout.rsplit("(pid ", 1)[1].split(")")[0])
    try:
        assert os.readlink(f"/proc/{pid}/fd/2") == os.devnull
        assert os.readlink(f"/proc/{pid}/fd/1") == os.devnull
        os_refused(errno.EPERM, lambda: os.close(os.open(mnt / "at-root", os.O_CREAT | os.O_WRONLY)))
        assert "/at-root" in log_of(store)
        deleted = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd")]
        assert not [target for target in deleted if target.endswith("(deleted)")], deleted
    finally:
        subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True)
        deadline = time.monotonic() + 20
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.05)
        if os.path.exists(f"/proc/{pid}"):
            os.kill(pid, 9)


def test_one_huge_rm_r_at_the_maximum_map_size_works(tmp_path: Path) -> None:
    """A folder of thousands of files in a store whose metadata reached its maximum:
    `encfs rm -r` removes it all (in bounded steps, each within the reserve kept for
    deletes) and the room can be used again."""
    store = tmp_path / "store"
    done = run("init", "--store", store, "--max-metadata", "16MiB")
    assert done.returncode == 0, explain(done)
    actor = Actor.local()
    with service_of(store) as service:
        service.create_folder(actor, "/data")
        service.create_folder(actor, "/data/deeper")
        created = 0
        with pytest.raises(NoSpace):
            while True:
                folder = "/data" if created % 2 else "/data/deeper"
                service.create_item(actor, f"{folder}/frame_{created:07d}_with_a_long_name.jpg")
                created += 1
    assert created > 2_000
    removed = run("rm", "-r", "/data", "--store", store, timeout=300)
    assert removed.returncode == 0, explain(removed)
    listed = run("ls", "/", "--store", store)
    assert listed.returncode == 0 and "data" not in listed.stdout
    with service_of(store) as service:
        service.create_folder(actor, "/again")
        service.create_item(actor, "/again/fits.jpg")
    assert run("fsck", "--store", store).returncode == 0
