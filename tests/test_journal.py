"""The change journal: one record per change, in the change's transaction, bounded;
each mount follows it, so long kernel caches are never stale: a change on the same
mount shows at once on every path naming the item, another mount's within a bound."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from encfs.errors import AlreadyExists, EncfsError, NotFound
from encfs.fs.mount import LONG_CACHE_SECONDS, cache_options
from encfs.meta import journal
from encfs.model import Actor

from conftest import Mounted, start_mount, stop_mount
from store_state import os_refused, service_of

BOUND = 2.0  # another mount's change must show within this (the bench measures the real figure)


def cli(store: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "encfs", *args, "--store", str(store)], capture_output=True,
                          text=True, cwd=Path(__file__).resolve().parent.parent, timeout=60)


def records(store: Path | Any) -> list[dict[str, Any]]:
    """The journal's records, through an open service or from the store."""
    if not isinstance(store, Path):
        with store.meta.read() as r:
            return [record for _, record in r.journal_after(0)]
    with service_of(store) as service:
        return records(service)


def shows_within(check: Callable[[], bool], bound: float = BOUND) -> float:
    """Seconds until `check()` holds (fails the test past the bound)."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < bound, f"not visible within {bound} s"
        time.sleep(0.01)
    return time.monotonic() - start


def exists(path: Path) -> bool:
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    return True


def size_of(path: Path) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


# ------------------------------------------------------------------ records


def test_every_change_writes_one_record_in_its_transaction(store: Path) -> None:
    with service_of(store) as service:
        actor = Actor("alice@example.com")
        before = len(records(service))
        service.create_folder(actor, "/A")
        service.create_item(actor, "/A/x.txt")
        service.move(actor, "/A/x.txt", "/A/y.txt")
        service.set_mode(actor, "/A/y.txt", 0o600)
        service.remove_item(actor, "/A/y.txt")
        with pytest.raises(NotFound):
            service.remove_item(actor, "/A/missing")
        written = records(service)[before:]
    assert [r["a"] for r in written] == ["new folder", "upload", "rename", "access change", "delete",
                                         "refused attempt"]
    assert {r["u"] for r in written} == {"alice@example.com"}
    assert written[2]["p"] == ["/A/x.txt", "/A/y.txt"]
    assert written[-1]["r"] == "no such file or folder"


def test_a_refused_change_writes_no_change_record(store: Path) -> None:
    with service_of(store) as service:
        actor = Actor.local()
        service.create_folder(actor, "/A")
        service.create_item(actor, "/A/x.txt")
        before = len(records(service))
        with pytest.raises(AlreadyExists):
            service.create_item(actor, "/A/x.txt")  # exists: nothing changes
        assert [r["a"] for r in records(service)[before:]] == ["refused attempt"]


def test_an_upload_is_one_activity_record(store: Path, tmp_path: Path) -> None:
    source = tmp_path / "photo.jpg"
    source.write_bytes(b"abc" * 100)
    with service_of(store) as service:
        service.create_folder(Actor.local(), "/A")
        before = len(records(service))
        service.upload(Actor.local(), "/A", source)
        written = records(service)[before:]
    assert [r.get("a") for r in written if "a" in r] == ["upload"]
    assert len(written) == 2  # the content's own record (no activity) still tells mounts


def test_the_journal_is_pruned_by_count_and_keeps_the_newest(store: Path) -> None:
    with service_of(store) as service:
        for n in range(30):
            service.create_folder(Actor.local(), f"/F{n}")
        with service.meta.read() as r:
            numbers = [seq for seq, _ in r.journal_after(0)]
        last = numbers[-1]
        kept = [seq for seq in numbers if seq > last - 10]
        with service.meta.write() as w:
            dropped = journal.prune(w.txn, w.dbs, last, kept=10)
        with service.meta.read() as r:
            assert [seq for seq, _ in r.journal_after(0)] == kept and len(kept) >= 8
            assert list(r.journal_of_folder(1, 0)) == [seq for seq in kept if seq > numbers[0]]
        assert dropped == len(numbers) - len(kept)
        with service.meta.write() as w:
            journal.prune(w.txn, w.dbs, w.journal_last(), age_ns=0)
        with service.meta.read() as r:
            assert r.journal_first() == r.journal_last() == last  # the newest always stays
        service.create_folder(Actor.local(), "/after")
        with service.meta.read() as r:
            assert r.journal_last() > last


def test_mounts_keep_names_and_attributes_long(mount: Mounted) -> None:
    options = cache_options(LONG_CACHE_SECONDS)
    assert LONG_CACHE_SECONDS >= 30
    assert options["entry_timeout"] == options["attr_timeout"] == options["negative_timeout"] >= 30
    (mount.path / "F").mkdir()
    assert f"caches names and attributes for {LONG_CACHE_SECONDS:g} s" in mount.log()
    assert "following the change journal" in mount.log()


# ------------------------------------------------------------------ the same mount


def make_dataset(mount: Mounted, folder: str = "F", name: str = "a.jpg", data: bytes = b"one") -> Path:
    (mount.path / folder).mkdir(exist_ok=True)
    (mount.path / folder / name).write_bytes(data)
    (mount.path / ".datasets" / "D").mkdir()
    os.link(mount.path / folder / name, mount.path / ".datasets" / "D" / name)
    return mount.path / ".datasets" / "D" / name


def test_a_delete_shows_at_once_in_the_dataset_view(mount: Mounted) -> None:
    view = make_dataset(mount)
    assert os.stat(view).st_nlink == 2  # the kernel caches the view entry now
    assert os.listdir(view.parent) == ["a.jpg"]
    os.unlink(mount.path / "F" / "a.jpg")
    os_refused(errno.ENOENT, lambda: os.stat(view))
    os_refused(errno.ENOENT, view.read_bytes)
    assert os.listdir(view.parent) == []


def test_a_write_shows_at_once_in_the_dataset_view(mount: Mounted) -> None:
    view = make_dataset(mount)
    assert view.read_bytes() == b"one"  # pages and attributes cached under the view's path
    (mount.path / "F" / "a.jpg").write_bytes(b"two, longer")
    assert os.stat(view).st_size == len(b"two, longer")
    assert view.read_bytes() == b"two, longer"


def test_a_dataset_link_shows_at_once_in_the_folder(mount: Mounted) -> None:
    (mount.path / "F").mkdir()
    item = mount.path / "F" / "a.jpg"
    item.write_bytes(b"x")
    assert os.stat(item).st_nlink == 1
    (mount.path / ".datasets" / "D").mkdir()
    os.link(item, mount.path / ".datasets" / "D" / "a.jpg")
    assert os.stat(item).st_nlink == 2
    os.unlink(mount.path / ".datasets" / "D" / "a.jpg")
    assert os.stat(item).st_nlink == 1


def test_a_rename_shows_at_once_in_search(mount: Mounted) -> None:
    (mount.path / "F").mkdir()
    (mount.path / "F" / "zebra.txt").write_bytes(b"z")
    assert os.listdir(mount.path / ".search" / "zebra") == ["zebra.txt"]
    os.rename(mount.path / "F" / "zebra.txt", mount.path / "F" / "horse.txt")
    assert os.listdir(mount.path / ".search" / "zebra") == []
    assert not exists(mount.path / ".search" / "zebra" / "zebra.txt")
    assert os.readlink(mount.path / ".search" / "horse" / "horse.txt") == "../../F/horse.txt"


def test_a_project_shows_a_dataset_change_at_once(mount: Mounted) -> None:
    make_dataset(mount)
    (mount.path / ".projects" / "P").mkdir()
    os.symlink("../../.datasets/D", mount.path / ".projects" / "P" / "D")
    shown = mount.path / ".projects" / "P" / "D" / "a.jpg"
    assert shown.read_bytes() == b"one"
    os.unlink(mount.path / ".datasets" / "D" / "a.jpg")
    assert not exists(shown)


def test_a_synced_datasets_views_follow_its_folder_at_once(mount: Mounted) -> None:
    (mount.path / "F").mkdir()
    os.symlink("../F", mount.path / ".datasets" / "S")
    (mount.path / "F" / "a.jpg").write_bytes(b"one")
    read_only = mount.path / ".datasets" / ".readonly" / "S" / "a.jpg"
    assert read_only.read_bytes() == b"one"
    assert (mount.path / ".datasets" / "S" / "a.jpg").read_bytes() == b"one"
    (mount.path / "F" / "a.jpg").write_bytes(b"two!")
    assert read_only.read_bytes() == b"two!"
    os.unlink(mount.path / "F" / "a.jpg")
    assert not exists(read_only)
    assert not exists(mount.path / ".datasets" / "S" / "a.jpg")


# ------------------------------------------------------------------ another mount


def two_mounts(store: Path, mount_factory: Any) -> tuple[Mounted, Mounted]:
    return mount_factory(store, "a"), mount_factory(store, "b")


def test_another_mounts_create_delete_rename_show_within_the_bound(store: Path, mount_factory: Any) -> None:
    a, b = two_mounts(store, mount_factory)
    (a.path / "F").mkdir()
    shows_within(lambda: exists(b.path / "F"))
    assert not exists(b.path / "F" / "x.txt")  # b's kernel holds the absence of the name now
    (a.path / "F" / "x.txt").write_bytes(b"hello")
    shows_within(lambda: size_of(b.path / "F" / "x.txt") == 5)
    assert (b.path / "F" / "x.txt").read_bytes() == b"hello"
    (a.path / "F" / "x.txt").write_bytes(b"changed!")
    shows_within(lambda: size_of(b.path / "F" / "x.txt") == 8)
    assert (b.path / "F" / "x.txt").read_bytes() == b"changed!"  # no stale pages
    os.rename(a.path / "F" / "x.txt", a.path / "F" / "y.txt")
    shows_within(lambda: not exists(b.path / "F" / "x.txt") and exists(b.path / "F" / "y.txt"))
    os.unlink(a.path / "F" / "y.txt")
    shows_within(lambda: not exists(b.path / "F" / "y.txt"))
    assert os.listdir(b.path / "F") == []


def test_another_mounts_dataset_change_shows_within_the_bound(store: Path, mount_factory: Any) -> None:
    a, b = two_mounts(store, mount_factory)
    (a.path / "F").mkdir()
    (a.path / "F" / "a.jpg").write_bytes(b"img")
    shows_within(lambda: exists(b.path / "F" / "a.jpg"))
    assert os.stat(b.path / "F" / "a.jpg").st_nlink == 1
    assert not exists(b.path / ".datasets" / "D")
    (a.path / ".datasets" / "D").mkdir()
    shows_within(lambda: exists(b.path / ".datasets" / "D"))
    assert not exists(b.path / ".datasets" / "D" / "a.jpg")
    os.link(a.path / "F" / "a.jpg", a.path / ".datasets" / "D" / "a.jpg")
    shows_within(lambda: exists(b.path / ".datasets" / "D" / "a.jpg"))
    shows_within(lambda: os.stat(b.path / "F" / "a.jpg").st_nlink == 2)
    os.unlink(a.path / ".datasets" / "D" / "a.jpg")
    shows_within(lambda: not exists(b.path / ".datasets" / "D" / "a.jpg"))
    shows_within(lambda: os.stat(b.path / "F" / "a.jpg").st_nlink == 1)


def test_a_cli_change_shows_on_a_mount_within_the_bound(mount: Mounted, tmp_path: Path) -> None:
    (mount.path / "F").mkdir()
    (mount.path / "F" / "old.txt").write_bytes(b"old")
    assert not exists(mount.path / "F" / "new.txt")
    source = tmp_path / "new.txt"
    source.write_bytes(b"new bytes")
    done = cli(mount.store, "upload", "/F", str(source))
    assert done.returncode == 0, done.stderr
    shows_within(lambda: size_of(mount.path / "F" / "new.txt") == 9)
    done = cli(mount.store, "rm", "/F/old.txt")
    assert done.returncode == 0, done.stderr
    shows_within(lambda: not exists(mount.path / "F" / "old.txt"))


def test_the_journal_survives_a_daemon_crash_and_a_restarted_mount_catches_up(
        store: Path, tmp_path: Path, mount_factory: Any) -> None:
    other = mount_factory(store, "other")
    crashed = start_mount(store, tmp_path / "crashing")
    try:
        (crashed.path / "F").mkdir()
        (crashed.path / "F" / "kept.txt").write_bytes(b"closed before the crash")
        assert exists(other.path / "F" / "kept.txt")
        os.kill(crashed.process.pid, signal.SIGKILL)
        crashed.process.wait(timeout=10)
    finally:
        stop_mount(crashed)
    actions = [(r.get("a"), r.get("p")) for r in records(store) if "a" in r]
    assert ("upload", ["/F/kept.txt"]) in actions and ("write", ["/F/kept.txt"]) in actions
    (other.path / "F" / "while-down.txt").write_bytes(b"made while the mount was down")
    os.unlink(other.path / "F" / "kept.txt")
    restarted = start_mount(store, tmp_path / "crashing")
    try:
        assert sorted(os.listdir(restarted.path / "F")) == ["while-down.txt"]
        assert not exists(restarted.path / "F" / "later.txt")
        (other.path / "F" / "later.txt").write_bytes(b"after the restart")
        shows_within(lambda: exists(restarted.path / "F" / "later.txt"))
    finally:
        stop_mount(restarted)


def test_a_refusal_of_a_path_no_folder_can_have_is_recorded(store: Path) -> None:
    with service_of(store) as service:
        actor = Actor.local()
        service.create_folder(actor, "/A")
        for bad in ("/A/..", "/A/caf\udce9", "/A/x/../y"):
            with pytest.raises(EncfsError):
                service.create_folder(actor, bad)
        refused = [r for r in records(service) if r.get("a") == "refused attempt"]
        assert [r["p"] for r in refused] == [["/A/.."], ["/A/caf\udce9"], ["/A/x/../y"]]
        assert all(r["f"] == [2] for r in refused)  # in /A, the deepest folder that exists
        assert len(service.refusals(actor)) == 3
