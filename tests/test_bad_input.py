"""Bad input, one test each: through a real mount with real system calls, and through the
CLI and the service where the mount cannot express it. Every refusal must carry the
right errno (or a non-zero exit and a message), leave a line in /.encfs/errors, and
change nothing."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from encfs.cli import main
from encfs.errors import InvalidInput
from encfs.model import Actor, Folder, Item
from encfs.store import init_store

from conftest import Mounted, errors_of, start_mount, stop_mount
from store_state import explain, os_refused, poll, refused, service_of, sha, snapshot, sync_files

MiB = 1 << 20


# ---------------------------------------------------------------- helpers


def cli(*args: str | os.PathLike[str], store: Path | None = None) -> Result:
    argv = [str(a) for a in args]
    if store is not None:
        argv += ["--store", str(store)]
    return CliRunner().invoke(main, argv)


def run(*args: str | os.PathLike[str], env: dict[str, str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "encfs", *(str(a) for a in args)],
                          capture_output=True, text=True, env=full_env, timeout=timeout)



def create_file(path: Path) -> None:
    with open(path, "w"):
        pass



def new_error_lines(mounted: Mounted, before: str) -> list[str]:
    now = errors_of(mounted)
    assert now.startswith(before) or len(now.splitlines()) >= 100, (before, now)
    return now[len(before):].splitlines()


def refusal_recorded(mounted: Mounted, before: str, *phrases: str) -> list[str]:
    lines = new_error_lines(mounted, before)
    assert any(all(p in line for p in phrases) for line in lines), (phrases, lines)
    return lines


@pytest.fixture(autouse=True)
def outside_any_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Relative CLI arguments must not match local files by accident."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)


def big_draft(spool: Path) -> bool:
    for entry in spool.iterdir():
        with contextlib.suppress(FileNotFoundError):
            if entry.stat().st_size > 2 * MiB:
                return True
    return False


@pytest.fixture
def filled(folder: Path, mount: Mounted) -> Path:
    """`data` with a file and a subfolder holding a file."""
    (folder / "a.txt").write_bytes(b"alpha")
    (folder / "sub").mkdir()
    (folder / "sub" / "b.txt").write_bytes(b"beta")
    return folder


# ---------------------------------------------------------------- the root takes folders only


def test_file_created_at_the_root_is_refused(mount: Mounted, folder: Path) -> None:
    before, errors_before = snapshot(mount.store), errors_of(mount)
    os_refused(errno.EPERM, lambda: create_file(mount.path / "stray.txt"))
    os_refused(errno.EPERM, lambda: os.open(mount.path / "stray2.txt", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    os_refused(errno.EPERM, lambda: os.mknod(mount.path / "stray3.txt"))
    lines = refusal_recorded(mount, errors_before, "/stray.txt", "root")
    assert any("/stray2.txt" in line for line in lines), lines
    assert not (mount.path / "stray.txt").exists()
    assert sorted(os.listdir(mount.path)) == ["data"]
    assert snapshot(mount.store) == before


def test_file_moved_into_the_root_is_refused(mount: Mounted, filled: Path) -> None:
    before, errors_before = snapshot(mount.store), errors_of(mount)
    os_refused(errno.EPERM, lambda: os.rename(filled / "a.txt", mount.path / "a.txt"))
    refusal_recorded(mount, errors_before, "/a.txt", "root")
    assert (filled / "a.txt").read_bytes() == b"alpha"
    assert sorted(os.listdir(mount.path)) == ["data"]
    assert snapshot(mount.store) == before

    errors_before = errors_of(mount)
    refused(cli("mv", "data/a.txt", "/", store=mount.store), "root")
    refusal_recorded(mount, errors_before, "/a.txt", "root")
    assert snapshot(mount.store) == before


def test_upload_into_the_root_is_refused(mount: Mounted, folder: Path, tmp_path: Path) -> None:
    local = tmp_path / "up.txt"
    local.write_text("up")
    before, errors_before = snapshot(mount.store), errors_of(mount)
    refused(cli("upload", "/", local, store=mount.store), "root")
    refusal_recorded(mount, errors_before, "/up.txt", "root")
    assert snapshot(mount.store) == before
    assert sorted(os.listdir(mount.path)) == ["data"]


# ---------------------------------------------------------------- names


def test_name_with_a_slash_cannot_name_one_entry(mount: Mounted, filled: Path) -> None:
    before, errors_before = snapshot(mount.store), errors_of(mount)
    # through the mount a '/' always separates names: a/b needs a folder a
    os_refused(errno.ENOENT, lambda: os.mkdir(filled / "x/y"))
    os_refused(errno.ENOENT, lambda: create_file(filled / "x/y.txt"))
    # through the CLI too
    refused(cli("folder", "create", "data/x/y", store=mount.store), "/data/x", "no such file or folder")
    refusal_recorded(mount, errors_before, "/data/x")
    assert snapshot(mount.store) == before


def test_upload_name_with_a_slash_is_refused(mount: Mounted, filled: Path, tmp_path: Path) -> None:
    """The service's upload takes a name: a '/' in it must not reach another folder."""
    local = tmp_path / "plain.txt"
    local.write_text("plain")
    before = snapshot(mount.store)
    with service_of(mount.store) as service, pytest.raises(InvalidInput):
        service.upload(Actor.local(), "/data", local, name="sub/sneaky.txt")
    assert snapshot(mount.store) == before
    assert not (filled / "sub" / "sneaky.txt").exists()


def test_name_with_nul_is_refused(mount: Mounted, filled: Path) -> None:
    before, errors_before = snapshot(mount.store), errors_of(mount)
    with service_of(mount.store) as service:
        actor = Actor.local()
        with pytest.raises(InvalidInput):
            service.create_folder(actor, "/data/a\x00b")
        with pytest.raises(InvalidInput):
            service.create_folder(actor, "/a\x00b")
        with pytest.raises(InvalidInput):
            service.create_item(actor, "/data/c\x00d.txt")
        with pytest.raises(InvalidInput):
            service.move(actor, "/data/a.txt", "/data/e\x00f.txt")
    # argv cannot carry NUL, but the CLI's commands can be handed one in-process
    refused(cli("folder", "create", "data/g\x00h", store=mount.store), "NUL")
    lines = refusal_recorded(mount, errors_before, "NUL")
    assert len([line for line in lines if "NUL" in line]) >= 5, lines
    assert snapshot(mount.store) == before
    assert (filled / "a.txt").read_bytes() == b"alpha"


def test_name_over_255_bytes_is_refused_by_the_mount(mount: Mounted, filled: Path) -> None:
    long_ascii, long_utf8 = "n" * 256, "é" * 128  # 256 bytes each
    before, errors_before = snapshot(mount.store), errors_of(mount)
    os_refused(errno.ENAMETOOLONG, lambda: os.mkdir(filled / long_ascii))
    os_refused(errno.ENAMETOOLONG, lambda: create_file(filled / long_utf8))
    os_refused(errno.ENAMETOOLONG, lambda: os.rename(filled / "a.txt", filled / long_ascii))
    lines = refusal_recorded(mount, errors_before, long_ascii, "at most 255 bytes")
    assert any(long_utf8 in line for line in lines), lines
    assert snapshot(mount.store) == before
    assert (filled / "a.txt").read_bytes() == b"alpha"
    # 255 bytes is still a name
    (filled / ("m" * 255)).write_bytes(b"fits")
    (filled / ("ü" * 127 + "x")).mkdir()
    assert (filled / ("m" * 255)).read_bytes() == b"fits"
    assert os.statvfs(mount.path).f_namemax == 255


def test_name_over_255_bytes_is_refused_by_the_cli(mount: Mounted, filled: Path) -> None:
    long_name = "q" * 256
    before, errors_before = snapshot(mount.store), errors_of(mount)
    refused(cli("folder", "create", f"data/{long_name}", store=mount.store), "at most 255 bytes")
    refused(cli("mv", "data/a.txt", f"data/{long_name}", store=mount.store), "at most 255 bytes")
    refused(cli("folder", "mv", "data/sub", f"data/{long_name}", store=mount.store), "at most 255 bytes")
    done = run("folder", "create", f"/data/{long_name}", "--store", mount.store)
    assert done.returncode != 0, explain(done)
    assert "at most 255 bytes" in done.stderr, explain(done)
    refusal_recorded(mount, errors_before, long_name, "at most 255 bytes")
    assert snapshot(mount.store) == before


NOT_UTF8 = b"\xff\xfe latin-1.jpg"  # a name from an old Latin-1 archive


def test_name_that_is_not_utf8_is_refused_by_the_mount(mount: Mounted, filled: Path) -> None:
    """Linux names are bytes; Encord names are text. Creating one is EILSEQ (as on a
    file system that takes UTF-8 names only); looking one up finds nothing."""
    before, errors_before = snapshot(mount.store), errors_of(mount)
    bad = os.path.join(bytes(filled), NOT_UTF8)
    os_refused(errno.EILSEQ, lambda: create_file(bad))  # type: ignore[arg-type]
    os_refused(errno.EILSEQ, lambda: os.mkdir(bad))
    os_refused(errno.EILSEQ, lambda: os.rename(filled / "a.txt", bad))
    os_refused(errno.ENOENT, lambda: os.stat(bad))
    os_refused(errno.ENOENT, lambda: os.unlink(bad))
    assert os.listdir(bytes(mount.path / ".search") + b"/" + NOT_UTF8[:2]) == []
    lines = refusal_recorded(mount, errors_before, "\\xff\\xfe latin-1.jpg", "is not UTF-8 text")
    assert len([line for line in lines if "not UTF-8" in line]) == 3, lines
    log = (mount.store / "log" / "encfs.log").read_text()
    assert "\\xff\\xfe latin-1.jpg' is not UTF-8 text" in log and "Traceback" not in log
    assert snapshot(mount.store) == before
    assert (filled / "a.txt").read_bytes() == b"alpha"


def test_name_that_is_not_utf8_is_refused_by_the_cli(mount: Mounted, filled: Path, tmp_path: Path) -> None:
    before, errors_before = snapshot(mount.store), errors_of(mount)
    local = tmp_path / os.fsdecode(NOT_UTF8)
    local.write_bytes(b"jpeg bytes")
    name = os.fsdecode(NOT_UTF8)
    for args in (("folder", "create", f"/data/{name}"), ("upload", "/data", str(local)),
                 ("mv", "/data/a.txt", f"/data/{name}")):
        done = run(*args, "--store", mount.store)
        assert done.returncode != 0, explain(done)
        assert "'\\xff\\xfe latin-1.jpg' is not UTF-8 text" in done.stderr, explain(done)
    done = run("search", os.fsdecode(b"\xff\xfe"), "--store", mount.store)
    assert "no files match" in done.stderr, explain(done)
    refusal_recorded(mount, errors_before, "is not UTF-8 text")
    assert snapshot(mount.store) == before


def test_dot_and_dot_dot_are_not_names(mount: Mounted, filled: Path) -> None:
    before, errors_before = snapshot(mount.store), errors_of(mount)
    # the kernel answers these itself; nothing may change
    os_refused(errno.EEXIST, lambda: os.mkdir(filled / "."))
    os_refused(errno.EEXIST, lambda: os.mkdir(filled / ".."))
    os_refused(errno.EBUSY, lambda: os.rename(filled / "a.txt", filled / ".."))
    os_refused(errno.EISDIR, lambda: create_file(filled / "."))
    # the CLI and the service refuse them as names in a Files path
    for args in (("folder", "create", "data/."), ("folder", "create", "/data/.."),
                 ("mv", "data/a.txt", "data/.."), ("folder", "mv", "data/sub", "data/sub/..")):
        refused(cli(*args, store=mount.store), "not allowed")
    with service_of(mount.store) as service:
        for bad in ("/data/.", "/data/..", "/.."):
            with pytest.raises(InvalidInput):
                service.create_folder(Actor.local(), bad)
        with pytest.raises(InvalidInput):
            service.create_item(Actor.local(), "/data/sub/../x.txt")
    refusal_recorded(mount, errors_before, "'..' is not allowed")
    refusal_recorded(mount, errors_before, "'.' is not allowed")
    assert snapshot(mount.store) == before


@pytest.mark.parametrize("name", [".encfs", ".search"])
def test_names_of_the_control_entries_are_refused_at_the_root(mount: Mounted, name: str) -> None:
    """/.encfs and /.search belong to the mount: a folder of that name could never be
    reached through it, so neither the mount nor the CLI may create one."""
    before = snapshot(mount.store)
    os_refused(errno.EEXIST, lambda: os.mkdir(mount.path / name))
    refused(cli("folder", "create", f"/{name}", store=mount.store), name)
    assert snapshot(mount.store) == before
    assert name not in os.listdir(mount.path)


# ---------------------------------------------------------------- folders


def test_rmdir_of_a_non_empty_folder_is_refused(mount: Mounted, filled: Path) -> None:
    before, errors_before = snapshot(mount.store), errors_of(mount)
    os_refused(errno.ENOTEMPTY, lambda: os.rmdir(filled))
    os_refused(errno.ENOTEMPTY, lambda: os.rmdir(filled / "sub"))
    lines = refusal_recorded(mount, errors_before, "rmdir /data", "not empty")
    assert any("/data/sub" in line and "not empty" in line for line in lines), lines
    refused(cli("folder", "rm", "data", store=mount.store), "/data", "not empty")
    assert snapshot(mount.store) == before
    assert (filled / "sub" / "b.txt").read_bytes() == b"beta"


def test_rename_of_a_folder_into_its_own_subfolder_is_refused(mount: Mounted, filled: Path) -> None:
    (filled / "sub" / "deeper").mkdir()
    before, errors_before = snapshot(mount.store), errors_of(mount)
    os_refused(errno.EINVAL, lambda: os.rename(filled, filled / "sub" / "data"))
    os_refused(errno.EINVAL, lambda: os.rename(filled, filled / "sub" / "deeper" / "x"))
    os_refused(errno.EINVAL, lambda: os.rename(filled / "sub", filled / "sub" / "deeper" / "sub"))
    assert snapshot(mount.store) == before
    # the kernel refuses these before encfs sees them; the CLI goes to the service
    refused(cli("folder", "mv", "data", "data/sub/deeper", store=mount.store), "itself")
    with service_of(mount.store) as service, pytest.raises(InvalidInput):
        service.move(Actor.local(), "/data", "/data/sub/moved")
    refusal_recorded(mount, errors_before, "/data/sub/deeper/data", "itself")
    refusal_recorded(mount, errors_before, "/data/sub/moved", "itself")
    assert snapshot(mount.store) == before
    assert sorted(os.listdir(filled)) == ["a.txt", "sub"]
    assert sorted(os.listdir(filled / "sub")) == ["b.txt", "deeper"]


# ---------------------------------------------------------------- a full disk


@contextlib.contextmanager
def mount_on_a_small_disk(tmp_path: Path) -> Iterator[tuple[Mounted, Path]]:
    """A store on a 24 MiB tmpfs, mounted; the tmpfs and the mount go at the end."""
    small = tmp_path / "small-disk"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(small)], check=True)
    try:
        store = init_store(small / "store")
        mounted = start_mount(store, tmp_path / "mnt-small")
        try:
            yield mounted, small
        finally:
            stop_mount(mounted)
    finally:
        if subprocess.run(["umount", str(small)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(small)], capture_output=True)


def free_bytes(disk: Path) -> int:
    vfs = os.statvfs(disk)
    return vfs.f_bavail * vfs.f_frsize


def test_write_past_the_free_space_is_refused(tmp_path: Path) -> None:
    with mount_on_a_small_disk(tmp_path) as (mounted, small):
        _fill_the_disk(mounted, small)


def test_fallocate_past_the_free_space_is_refused_and_takes_nothing(mount: Mounted, folder: Path) -> None:
    """On ext4 (where stores live) a fallocate larger than the free space fills the
    disk and then fails, keeping what it took; encfs must refuse it and take nothing."""
    target = folder / "f.bin"
    first = os.urandom(256 * 1024)
    sync_files({target: first})
    before, errors_before, free = snapshot(mount.store), errors_of(mount), free_bytes(mount.store)

    fd = os.open(target, os.O_WRONLY)
    try:
        os_refused(errno.ENOSPC, lambda: os.posix_fallocate(fd, 0, free + 64 * MiB))
    finally:
        os.close(fd)

    assert target.read_bytes() == first
    assert target.stat().st_size == len(first)
    assert snapshot(mount.store) == before
    assert free_bytes(mount.store) > free - 256 * MiB  # nothing of it was kept
    refusal_recorded(mount, errors_before, "/data/f.bin", "no space left")


def _fill_the_disk(mounted: Mounted, disk: Path) -> None:
    data = mounted.path / "data"
    data.mkdir()
    target, filler = data / "f.bin", data / "filler.bin"
    first = os.urandom(256 * 1024)
    sync_files({target: first, filler: os.urandom(6 * MiB)})
    store = mounted.store
    blobs_before = snapshot(store)["blobs"]
    assert len(blobs_before) == 2
    errors_before = errors_of(mounted)

    vfs = os.statvfs(disk)
    free = vfs.f_bavail * vfs.f_frsize
    too_big = free + 4 * MiB
    failures: list[OSError] = []
    fd = os.open(target, os.O_WRONLY | os.O_TRUNC)
    try:
        chunk = b"z" * MiB
        written = 0
        while written < too_big:
            written += os.write(fd, chunk)
    except OSError as exc:
        failures.append(exc)
    finally:
        try:
            os.close(fd)
        except OSError as exc:
            failures.append(exc)
    assert failures, f"wrote {too_big} bytes with {free} free"
    assert {exc.errno for exc in failures} == {errno.ENOSPC}, failures

    assert poll(lambda: target.read_bytes() == first), "the file lost its previous content"
    with service_of(store) as service:
        node = service.lookup(Actor.local(), "/data/f.bin")
        assert isinstance(node, Item)
        assert (node.blob, node.size) == (sha(first), len(first))
    assert poll(lambda: os.listdir(store / "spool") == []), os.listdir(store / "spool")
    assert snapshot(store)["blobs"] == blobs_before
    refusal_recorded(mounted, errors_before, "/data/f.bin", "no space left")

    # the CLI's upload of a local file bigger than the free space: refused, nothing kept
    local = mounted.path.parent / "too-big.bin"
    with open(local, "wb") as f:
        f.truncate(free + 4 * MiB)
    errors_before = errors_of(mounted)
    refused(cli("upload", "/data", local, store=store), "no space left")
    assert os.listdir(store / "spool") == []
    assert snapshot(store)["blobs"] == blobs_before
    assert sorted(os.listdir(data)) == ["f.bin", "filler.bin"]
    refusal_recorded(mounted, errors_before, "/data/too-big.bin", "no space left")
    local.unlink()

    os.unlink(filler)
    after = os.urandom(4 * MiB)
    sync_files({target: after, data / "new.bin": after[: MiB]})
    assert target.read_bytes() == after
    assert (data / "new.bin").read_bytes() == after[:MiB]
    assert os.listdir(store / "spool") == []


# ---------------------------------------------------------------- stores and mountpoints


STORE_COMMANDS = [
    ("ls",), ("ls", "-l", "/data"), ("info", "/data"), ("info", "--json", "/data/a.txt"),
    ("folder", "list"), ("folder", "create", "/new"), ("folder", "rm", "/data"),
    ("folder", "mv", "/data", "/other"), ("upload", "/data", "LOCAL"), ("search", "a"),
    ("rm", "/data/a.txt"), ("mv", "/data/a.txt", "/data/b.txt"), ("errors",),
]


def _bad_store(tmp_path: Path, kind: str) -> tuple[Path, str]:
    path = tmp_path / f"bad-{kind}"
    if kind == "missing":
        return path, "does not exist"
    if kind == "empty-dir":
        path.mkdir()
    elif kind == "other-dir":
        path.mkdir()
        (path / "photo.jpg").write_bytes(b"not a store")
    elif kind == "regular-file":
        path.write_text("a file, not a directory")
    return path, "not an encfs store"


def _state(path: Path) -> Any:
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return sorted(os.listdir(path))


@pytest.mark.parametrize("kind", ["missing", "empty-dir", "other-dir", "regular-file"])
def test_commands_on_a_bad_store_exit_3(kind: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad, phrase = _bad_store(tmp_path, kind)
    local = tmp_path / "a.txt"
    local.write_text("a")
    monkeypatch.chdir(tmp_path)
    before = _state(bad)
    for command in STORE_COMMANDS:
        args = [str(local) if a == "LOCAL" else a for a in command]
        refused(cli(*args, store=bad), str(bad), phrase, code=3)
        monkeypatch.setenv("ENCFS_STORE", str(bad))
        refused(cli(*args), str(bad), phrase, code=3)
        monkeypatch.delenv("ENCFS_STORE")
        assert _state(bad) == before, command
    done = run("ls", env={"ENCFS_STORE": str(bad)})
    assert done.returncode == 3, explain(done)
    assert phrase in done.stderr and str(bad) in done.stderr, explain(done)
    assert "Traceback" not in done.stderr
    assert _state(bad) == before


@pytest.mark.parametrize("background", [False, True])
def test_mount_on_a_missing_mountpoint_is_refused(store: Path, tmp_path: Path, background: bool) -> None:
    mnt = tmp_path / "no-such-dir"
    done = run("mount", *([] if background else ["--foreground"]), "--store", store, mnt)
    assert done.returncode == 3, explain(done)
    assert "does not exist" in done.stderr and str(mnt) in done.stderr, explain(done)
    assert not mnt.exists()
    assert not os.path.ismount(mnt)


@pytest.mark.parametrize("background", [False, True])
def test_mount_on_a_non_empty_mountpoint_is_refused(store: Path, tmp_path: Path, background: bool) -> None:
    mnt = tmp_path / "occupied"
    mnt.mkdir()
    (mnt / "keep.txt").write_text("mine")
    done = run("mount", *([] if background else ["--foreground"]), "--store", store, mnt)
    assert done.returncode == 3, explain(done)
    assert "not empty" in done.stderr and str(mnt) in done.stderr, explain(done)
    assert not os.path.ismount(mnt)
    assert os.listdir(mnt) == ["keep.txt"]
    assert (mnt / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("kind", ["missing", "other-dir"])
def test_mount_of_a_bad_store_is_refused(kind: str, tmp_path: Path) -> None:
    bad, phrase = _bad_store(tmp_path, kind)
    mnt = tmp_path / "mnt-bad"
    mnt.mkdir()
    before = _state(bad)
    done = run("mount", "--foreground", mnt, env={"ENCFS_STORE": str(bad)})
    assert done.returncode == 3, explain(done)
    assert phrase in done.stderr and str(bad) in done.stderr, explain(done)
    assert not os.path.ismount(mnt)
    assert _state(bad) == before


# ---------------------------------------------------------------- a killed daemon


WRITER = """
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT, 0o644)
print("open", flush=True)
chunk = b"w" * (1 << 20)
while True:
    os.write(fd, chunk)
"""


def test_killed_daemon_loses_nothing_fsynced(mount: Mounted, folder: Path, mount_factory: Any) -> None:
    synced = {folder / f"kept-{i}.bin": os.urandom(200_000 + i * 1_000) for i in range(6)}
    sync_files(synced)
    (folder / "sub").mkdir()
    sync_files({folder / "sub" / "twin.bin": synced[folder / "kept-0.bin"]})  # a shared blob
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(folder / "big.bin")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "open"
        spool = mount.store / "spool"
        assert poll(lambda: big_draft(spool)), "the big write never reached a draft"
        os.kill(mount.process.pid, signal.SIGKILL)
        mount.process.wait(timeout=10)
        writer.wait(timeout=10)  # its next write fails: the connection is gone
        subprocess.run(["fusermount3", "-uz", str(mount.path)], capture_output=True)
        assert not os.path.ismount(mount.path)
        assert os.listdir(spool), "the killed daemon's draft should still be on disk"
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait(timeout=10)

    again = mount_factory(mount.store, "mnt-again")
    assert os.listdir(mount.store / "spool") == []  # recovery removed the abandoned draft
    for path, data in synced.items():
        assert (again.path / "data" / path.name).read_bytes() == data, path.name
    assert (again.path / "data" / "sub" / "twin.bin").read_bytes() == synced[folder / "kept-0.bin"]
    _check_blob_refcounts(mount.store)

    (again.path / "data" / "after.txt").write_bytes(b"still writable")
    assert (again.path / "data" / "after.txt").read_bytes() == b"still writable"


def _check_blob_refcounts(store: Path) -> None:
    """Every item's blob file exists, every count matches its items, no blob is orphaned."""
    with service_of(store) as service:
        actor = Actor.local()
        uses: dict[str, int] = {}

        def walk(path: str) -> None:
            for node in service.list_folder(actor, path):
                child = path.rstrip("/") + "/" + node.name
                if isinstance(node, Folder):
                    walk(child)
                elif isinstance(node, Item) and node.blob is not None:
                    uses[node.blob] = uses.get(node.blob, 0) + 1
                    blob_file = Path(service.blobs.path(node.blob))
                    assert blob_file.is_file(), child
                    assert blob_file.stat().st_size == node.size, child

        walk("/")
        with service.meta.read() as r:
            counts = {sha_: r.blob(sha_) for sha_ in r.all_blobs()}
        assert {k: v[0] for k, v in counts.items() if v} == uses
        assert sorted(service.blobs.list()) == sorted(uses)
        assert json.dumps(service.info(actor, "/data"))  # the store reads cleanly

