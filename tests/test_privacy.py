"""The store is private: another local user can read neither file contents nor names
from it, and a store that other users can enter is made private again at the next
open, with a warning."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from encfs.store import init_store

from conftest import start_mount, stop_mount
from store_state import explain

SECRET = b"the patient's scan, not for other users " * 100
SECRET_NAME = "secret-name-of-a-patient.dcm"


@pytest.fixture
def other_user() -> Iterator[str]:
    """A real local user that is not the store's owner; removed at the end."""
    name = f"encfs-other-{uuid.uuid4().hex[:8]}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    try:
        yield name
    finally:
        subprocess.run(["userdel", "--remove", name], capture_output=True)


@pytest.fixture
def open_parent() -> Iterator[Path]:
    """A folder every user may enter (pytest's own temporary folders are private, which
    would hide the store whatever its modes)."""
    parent = Path(tempfile.mkdtemp(prefix="encfs-privacy-", dir="/tmp"))
    parent.chmod(0o755)
    try:
        yield parent
    finally:
        shutil.rmtree(parent, ignore_errors=True)


def as_user(user: str, *command: str | os.PathLike[str]) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["runuser", "-u", user, "--", *(str(c) for c in command)],
                          capture_output=True, timeout=60)


def encfs(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "encfs", *(str(a) for a in args)],
                          capture_output=True, text=True, timeout=60)


def filled_store(parent: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A store holding one file (content SECRET, name SECRET_NAME); returns the store
    and the path of that file's blob."""
    store = init_store(parent / "store")
    mounted = start_mount(store, tmp_path / "mnt")
    try:
        (mounted.path / "data").mkdir()
        (mounted.path / "data" / SECRET_NAME).write_bytes(SECRET)
        (mounted.path / "data" / SECRET_NAME).chmod(0o644)  # readable by all on the mount
    finally:
        stop_mount(mounted)
    blobs = [p for p in (store / "blobs").rglob("*") if p.is_file()]
    assert len(blobs) == 1 and blobs[0].read_bytes() == SECRET
    return store, blobs[0]


def modes(store: Path) -> dict[str, int]:
    found = {".": stat.S_IMODE(store.stat().st_mode)}
    for path in store.rglob("*"):
        found[str(path.relative_to(store))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def assert_private(store: Path) -> None:
    for name, mode in modes(store).items():
        path = store / name
        expected = 0o700 if path.is_dir() else 0o600
        assert mode == expected, f"{name}: {oct(mode)}"


def assert_unreadable_by(user: str, store: Path, blob: Path) -> None:
    for command in (["ls", store], ["ls", store / "blobs"], ["cat", blob],
                    ["cat", store / "meta.lmdb" / "data.mdb"], ["cat", store / "log" / "encfs.log"],
                    ["cat", store / "encfs-store.json"]):
        done = as_user(user, *command)
        assert done.returncode != 0, (command, done.stdout[:200])
        assert b"Permission denied" in done.stderr, (command, done.stderr)
    found = as_user(user, "grep", "-r", "-l", "-a", SECRET_NAME, store)
    assert found.stdout == b"", found.stdout


def test_another_user_can_read_nothing_of_the_store(
    tmp_path: Path, open_parent: Path, other_user: str,
) -> None:
    store, blob = filled_store(open_parent, tmp_path)
    assert (store / "log" / "encfs.log").read_text()  # the mount wrote to it
    assert_private(store)
    assert_unreadable_by(other_user, store, blob)
    # the owner still reads it all
    assert encfs("ls", "/data", "--store", store).stdout.split() == [SECRET_NAME]


def test_a_store_open_to_other_users_is_made_private_at_the_next_mount(
    tmp_path: Path, open_parent: Path, other_user: str,
) -> None:
    store, blob = filled_store(open_parent, tmp_path)
    for path in [store, *store.rglob("*")]:  # what stores made before this were like
        path.chmod(0o755 if path.is_dir() else 0o644)
    assert as_user(other_user, "cat", blob).stdout == SECRET  # the leak being fixed

    mounted = start_mount(store, tmp_path / "mnt2")
    try:
        assert (mounted.path / "data" / SECRET_NAME).read_bytes() == SECRET
    finally:
        stop_mount(mounted)
    assert_private(store)
    assert_unreadable_by(other_user, store, blob)
    log = (store / "log" / "encfs.log").read_text()
    assert "could be read by other users: made it private again" in log, log
    assert "could be read by other users" in mounted.log()  # and on the mount's stderr


def test_the_cli_makes_an_open_store_private_and_says_so(tmp_path: Path, open_parent: Path) -> None:
    store, _ = filled_store(open_parent, tmp_path)
    store.chmod(0o755)
    (store / "blobs").chmod(0o755)
    done = encfs("ls", "/data", "--store", store)
    assert done.returncode == 0, explain(done)
    assert done.stdout.split() == [SECRET_NAME]
    assert "warning: the store" in done.stderr and "made it private again" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert stat.S_IMODE(store.stat().st_mode) == 0o700
    assert stat.S_IMODE((store / "blobs").stat().st_mode) == 0o700
    again = encfs("ls", "/data", "--store", store)
    assert again.stderr == "", again.stderr  # once fixed, nothing more to say
