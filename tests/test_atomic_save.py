"""Atomic saves ("write a temporary file, then rename it over the original") keep the
file's place: its Datasets (and so its Projects), client metadata and Encord identity."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import Mounted, errors_of
from store_state import poll, stored_bytes


@pytest.fixture
def labelled(mount: Mounted) -> Path:
    """/data/notes.txt in Dataset Pets (attached to Project P), with client metadata."""
    folder = mount.path / "data"
    folder.mkdir()
    (folder / "notes.txt").write_text("hello world\n")
    (mount.path / ".datasets" / "Pets").mkdir()
    os.link(folder / "notes.txt", mount.path / ".datasets" / "Pets" / "notes.txt")
    (mount.path / ".projects" / "P").mkdir()
    os.symlink("../../.datasets/Pets", mount.path / ".projects" / "P" / "Pets")
    os.setxattr(folder / "notes.txt", "user.encord.client_metadata", b'{"label": "cat"}')
    return folder / "notes.txt"


def encord_id(path: Path) -> bytes:
    return os.getxattr(path, "user.encord.id")


def place_of(mount: Mounted, path: Path) -> tuple[bytes, bytes, bytes, list[str]]:
    return (os.getxattr(path, "user.encord.datasets"), os.getxattr(path, "user.encord.client_metadata"),
            encord_id(path), sorted(os.listdir(mount.path / ".datasets" / "Pets")))


def test_sed_i_keeps_the_file_in_its_datasets(mount: Mounted, labelled: Path) -> None:
    before = place_of(mount, labelled)
    done = subprocess.run(["sed", "-i", "s/hello/goodbye/", str(labelled)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert labelled.read_text() == "goodbye world\n"
    assert place_of(mount, labelled) == before == (b"Pets", b'{"label": "cat"}', before[2], ["notes.txt"])
    view = mount.path / ".datasets" / "Pets" / "notes.txt"
    assert poll(lambda: view.read_text() == "goodbye world\n")  # the view's cached entry lasts a second
    assert (mount.path / ".projects" / "P" / "Pets" / "notes.txt").read_text() == "goodbye world\n"
    assert poll(lambda: labelled.stat().st_nlink == 2)
    assert stored_bytes(mount.store, "/.datasets/Pets/notes.txt") == b"goodbye world\n"


def test_python_tempfile_and_os_replace_keep_the_place(mount: Mounted, labelled: Path) -> None:
    before = place_of(mount, labelled)
    with tempfile.NamedTemporaryFile("w", dir=labelled.parent, delete=False) as temporary:
        temporary.write("saved by python\n")
        temporary.flush()
        os.fsync(temporary.fileno())
        os.replace(temporary.name, labelled)  # replaced while still open, as some libraries do
    assert labelled.read_text() == "saved by python\n"
    assert place_of(mount, labelled) == before
    assert sorted(os.listdir(labelled.parent)) == ["notes.txt"]
    info = json.loads(subprocess.run([sys.executable, "-m", "encfs", "info", "--json", "/data/notes.txt",
                                      "--store", str(mount.store)], capture_output=True, text=True).stdout)
    assert info["datasets"] == ["Pets"] and info["projects"] == ["P"]
    assert info["client_metadata"] == {"label": "cat"}
    assert "notes.txt" not in errors_of(mount)  # nothing was dropped


def test_the_inode_and_its_attributes_follow_the_new_file(mount: Mounted, labelled: Path) -> None:
    """As on any disk: the name now refers to the new file's inode, with its mode,
    times and user.* attributes; Encord's attributes follow the name."""
    os.setxattr(labelled, "user.old", b"old")
    new = labelled.parent / ".notes.txt.swp"
    new.write_text("new\n")
    os.chmod(new, 0o600)
    os.setxattr(new, "user.new", b"new")
    os.utime(new, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    inode = new.stat().st_ino
    os.rename(new, labelled)
    st = labelled.stat()
    assert (st.st_ino, st.st_mode & 0o777, st.st_mtime_ns) == (inode, 0o600, 1_600_000_000_000_000_000)
    assert os.getxattr(labelled, "user.new") == b"new"
    assert "user.old" not in os.listxattr(labelled)
    assert os.getxattr(labelled, "user.encord.datasets") == b"Pets"


def test_a_file_moved_over_one_elsewhere_takes_its_place_there(mount: Mounted, labelled: Path) -> None:
    elsewhere = mount.path / "incoming"
    elsewhere.mkdir()
    (elsewhere / "notes.txt").write_text("from elsewhere\n")
    identity = encord_id(labelled)
    os.rename(elsewhere / "notes.txt", labelled)
    assert os.getxattr(labelled, "user.encord.datasets") == b"Pets"
    assert encord_id(labelled) == identity
    assert os.listdir(elsewhere) == []


def test_a_new_file_in_both_datasets_keeps_its_own_view_name(mount: Mounted, labelled: Path) -> None:
    new = labelled.parent / "draft.txt"
    new.write_text("draft\n")
    os.link(new, mount.path / ".datasets" / "Pets" / "draft.txt")
    os.rename(new, labelled)
    assert poll(lambda: sorted(os.listdir(mount.path / ".datasets" / "Pets")) == ["draft.txt"])
    assert poll(lambda: labelled.stat().st_nlink == 2)


def test_rsync_of_an_existing_file_keeps_the_place(mount: Mounted, labelled: Path, tmp_path: Path) -> None:
    local = tmp_path / "notes.txt"
    local.write_text("synced by rsync\n")
    done = subprocess.run(["rsync", "--checksum", str(local), str(labelled)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert labelled.read_text() == "synced by rsync\n"
    assert os.getxattr(labelled, "user.encord.datasets") == b"Pets"


def test_replacing_a_file_with_a_symlink_removes_it_from_its_datasets(mount: Mounted, labelled: Path) -> None:
    """A link is not a file: `ln -sf` over a file deletes it, Datasets included."""
    (labelled.parent / "other.txt").write_text("other")
    done = subprocess.run(["ln", "-sf", "other.txt", str(labelled)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert os.readlink(labelled) == "other.txt"
    assert poll(lambda: os.listdir(mount.path / ".datasets" / "Pets") == [])
