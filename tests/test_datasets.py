"""Datasets and Projects through the mount, with real tools: mkdir, ln, ln -s, rm, mv,
readlink, stat, getfattr."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from conftest import Mounted, errors_of
from media import image_bytes, write_series
from store_state import members, poll


def sh(*args: str | os.PathLike[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, cwd=cwd)


def ok(*args: str | os.PathLike[str], cwd: Path | None = None) -> str:
    done = sh(*args, cwd=cwd)
    assert done.returncode == 0, f"{args}: {done.stderr}"
    return done.stdout


def linked_to(path: Path) -> list[str]:
    return os.getxattr(path, "user.encord.datasets").decode().splitlines()


def nlink(path: Path, expected: int) -> int:
    """st_nlink, given a second for the kernel's attribute cache to follow."""
    return (
        poll(lambda: os.stat(path).st_nlink if os.stat(path).st_nlink == expected else 0)
        or os.stat(path).st_nlink
    )


@pytest.fixture
def files(mount: Mounted) -> Path:
    """Two folders with files of the same names: /cats/a.jpg, /cats/b.jpg, /dogs/a.jpg."""
    for folder, names in (("cats", ("a.jpg", "b.jpg")), ("dogs", ("a.jpg",))):
        (mount.path / folder).mkdir()
        for i, name in enumerate(names):
            (mount.path / folder / name).write_bytes(image_bytes("JPEG", (20 + i, 10)) + folder.encode())
    return mount.path


def test_mkdir_creates_a_dataset_with_a_description(files: Path) -> None:
    dataset = files / ".datasets" / "Pets"
    dataset.mkdir()
    ok("setfattr", "-n", "user.encord.description", "-v", "all the pets", dataset)
    assert os.getxattr(dataset, "user.encord.description") == b"all the pets"
    assert os.listdir(files / ".datasets") == ["Pets"]
    assert ".datasets" not in os.listdir(files)  # hidden, like the other control entries
    assert os.listdir(dataset) == []


def test_ln_links_the_same_item_into_many_datasets(files: Path) -> None:
    for name in ("Pets", "Cats"):
        (files / ".datasets" / name).mkdir()
    ok("ln", files / "cats" / "a.jpg", files / ".datasets" / "Pets/")
    ok("ln", files / "cats" / "a.jpg", files / ".datasets" / "Cats" / "first.jpg")
    original = files / "cats" / "a.jpg"
    in_pets, in_cats = files / ".datasets" / "Pets" / "a.jpg", files / ".datasets" / "Cats" / "first.jpg"
    assert os.stat(in_pets).st_ino == os.stat(in_cats).st_ino == os.stat(original).st_ino
    assert in_pets.read_bytes() == original.read_bytes()
    assert os.getxattr(in_pets, "user.encord.kind") == b"image"
    assert nlink(original, 3) == 3
    assert linked_to(original) == ["Cats", "Pets"]
    assert os.listdir(files / "cats") == ["a.jpg", "b.jpg"]  # nothing was copied


def test_rm_in_a_dataset_takes_the_file_out_of_that_dataset_only(files: Path) -> None:
    for name in ("Pets", "Cats"):
        (files / ".datasets" / name).mkdir()
        ok("ln", files / "cats" / "a.jpg", files / ".datasets" / name / "a.jpg")
    ok("rm", files / ".datasets" / "Pets" / "a.jpg")
    assert os.listdir(files / ".datasets" / "Pets") == []
    assert os.listdir(files / ".datasets" / "Cats") == ["a.jpg"]
    assert (files / "cats" / "a.jpg").exists()
    assert linked_to(files / "cats" / "a.jpg") == ["Cats"]
    assert nlink(files / "cats" / "a.jpg", 2) == 2


def test_rm_of_the_file_removes_it_from_every_dataset(files: Path, mount: Mounted) -> None:
    for name in ("Pets", "Cats"):
        (files / ".datasets" / name).mkdir()
        ok("ln", files / "cats" / "a.jpg", files / ".datasets" / name / "a.jpg")
    ok("rm", files / "cats" / "a.jpg")
    assert os.listdir(files / ".datasets" / "Pets") == os.listdir(files / ".datasets" / "Cats") == []
    assert members(mount.store, "Pets") == members(mount.store, "Cats") == {}


def test_names_in_a_view_stay_distinct_and_stable(files: Path, mount: Mounted) -> None:
    (files / ".datasets" / "Pets").mkdir()
    ok("ln", files / "cats" / "a.jpg", files / ".datasets" / "Pets/")
    taken = sh(
        "ln", files / "dogs" / "a.jpg", files / ".datasets" / "Pets/"
    )  # the kernel sees the name taken
    assert taken.returncode != 0 and "File exists" in taken.stderr
    ok("ln", files / "dogs" / "a.jpg", files / ".datasets" / "Pets" / "dog-a.jpg")
    with_cli = subprocess.run(  # the CLI adds both folders: the second a.jpg gets its own name
        ["encfs", "dataset", "add", "Pets", "/cats", "/dogs", "--store", str(mount.store)],
        capture_output=True,
        text=True,
    )
    assert with_cli.returncode == 0, with_cli.stderr
    view = sorted(os.listdir(files / ".datasets" / "Pets"))
    assert view == ["a.jpg", "b.jpg", "dog-a.jpg"]  # dogs/a.jpg was already there as dog-a.jpg
    ok("rm", files / ".datasets" / "Pets" / "dog-a.jpg")
    subprocess.run(
        ["encfs", "dataset", "add", "Pets", "/dogs", "--store", str(mount.store)],
        check=True,
        capture_output=True,
    )
    dog_id = os.stat(files / "dogs" / "a.jpg").st_ino
    assert sorted(os.listdir(files / ".datasets" / "Pets")) == ["a.jpg", f"a~{dog_id}.jpg", "b.jpg"]
    ok("rm", files / ".datasets" / "Pets" / "b.jpg")  # others leaving does not rename anything
    assert sorted(os.listdir(files / ".datasets" / "Pets")) == ["a.jpg", f"a~{dog_id}.jpg"]
    assert os.stat(files / ".datasets" / "Pets" / f"a~{dog_id}.jpg").st_ino == dog_id


def test_mv_renames_datasets_and_view_names(files: Path) -> None:
    (files / ".datasets" / "Pets").mkdir()
    ok("ln", files / "cats" / "a.jpg", files / ".datasets" / "Pets/")
    ok("mv", files / ".datasets" / "Pets", files / ".datasets" / "Animals")
    assert os.listdir(files / ".datasets") == ["Animals"]
    assert linked_to(files / "cats" / "a.jpg") == ["Animals"]
    ok("mv", files / ".datasets" / "Animals" / "a.jpg", files / ".datasets" / "Animals" / "tabby.jpg")
    assert os.listdir(files / ".datasets" / "Animals") == ["tabby.jpg"]
    assert os.listdir(files / "cats") == ["a.jpg", "b.jpg"]  # the file keeps its own name
    (files / ".datasets" / "Other").mkdir()
    ok("mv", files / ".datasets" / "Animals" / "tabby.jpg", files / ".datasets" / "Other/")
    assert os.listdir(files / ".datasets" / "Animals") == []
    assert linked_to(files / "cats" / "a.jpg") == ["Other"]
    ok("mv", files / "cats" / "a.jpg", files / "dogs" / "renamed.jpg")  # the view name stays
    assert os.listdir(files / ".datasets" / "Other") == ["tabby.jpg"]
    shown = files / ".datasets" / "Other" / "tabby.jpg"
    assert os.stat(shown).st_ino == os.stat(files / "dogs" / "renamed.jpg").st_ino


def test_rmdir_deletes_an_empty_dataset_and_keeps_files(files: Path) -> None:
    (files / ".datasets" / "Pets").mkdir()
    ok("ln", files / "cats" / "a.jpg", files / ".datasets" / "Pets/")
    refused = sh("rmdir", files / ".datasets" / "Pets")
    assert "Directory not empty" in refused.stderr
    ok("rm", files / ".datasets" / "Pets" / "a.jpg")
    ok("rmdir", files / ".datasets" / "Pets")
    assert os.listdir(files / ".datasets") == []
    assert (files / "cats" / "a.jpg").exists()


def test_writing_through_a_dataset_changes_the_one_item(files: Path) -> None:
    (files / ".datasets" / "Pets").mkdir()
    ok("ln", files / "cats" / "a.jpg", files / ".datasets" / "Pets/")
    (files / ".datasets" / "Pets" / "a.jpg").write_bytes(b"new bytes")
    assert (files / "cats" / "a.jpg").read_bytes() == b"new bytes"


def test_a_symlink_to_a_folder_makes_a_synced_dataset(files: Path, mount: Mounted) -> None:
    (files / "cats" / "kittens").mkdir()
    (files / "cats" / "kittens" / "k.jpg").write_bytes(image_bytes("JPEG"))
    ok("ln", "-s", "../cats", files / ".datasets" / "Cats")
    link = files / ".datasets" / "Cats"
    assert os.readlink(link) == "../cats"
    assert sorted(os.listdir(link)) == ["a.jpg", "b.jpg", "kittens"]  # the folder itself
    assert sorted(members(mount.store, "Cats").values()) == [
        "/cats/a.jpg",
        "/cats/b.jpg",
        "/cats/kittens/k.jpg",
    ]
    assert linked_to(files / "cats" / "kittens" / "k.jpg") == ["Cats"]
    info = subprocess.run(
        ["encfs", "folder", "info", "/cats", "--store", str(mount.store)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "synced with Dataset: Cats" in info

    ok("cp", files / "dogs" / "a.jpg", files / "cats" / "copied.jpg")  # copied in: joins
    ok("mv", files / "dogs" / "a.jpg", files / "cats" / "kittens" / "moved.jpg")  # moved in: joins
    assert linked_to(files / "cats" / "copied.jpg") == ["Cats"]
    assert linked_to(files / "cats" / "kittens" / "moved.jpg") == ["Cats"]
    ok("mv", files / "cats" / "b.jpg", files / "dogs" / "b.jpg")  # moved out: leaves, and the log says so
    assert linked_to(files / "dogs" / "b.jpg") == []
    assert "it left synced Dataset 'Cats'" in poll(lambda: "left synced" in mount.log() and mount.log())
    ok("rm", files / "cats" / "copied.jpg")  # deleted: leaves
    assert sorted(members(mount.store, "Cats").values()) == [
        "/cats/a.jpg",
        "/cats/kittens/k.jpg",
        "/cats/kittens/moved.jpg",
    ]


def test_moving_a_folder_in_and_out_of_a_synced_folder(files: Path, mount: Mounted) -> None:
    ok("ln", "-s", "../cats", files / ".datasets" / "Cats")
    ok("mv", files / "dogs", files / "cats" / "dogs")
    assert linked_to(files / "cats" / "dogs" / "a.jpg") == ["Cats"]
    ok("mv", files / "cats" / "dogs", files / "dogs")
    assert linked_to(files / "dogs" / "a.jpg") == []
    assert sorted(members(mount.store, "Cats").values()) == ["/cats/a.jpg", "/cats/b.jpg"]


def test_turning_sync_off_keeps_the_files_as_links(files: Path, mount: Mounted) -> None:
    ok("ln", "-s", "../cats", files / ".datasets" / "Cats")
    ok("encfs", "dataset", "unsync", "Cats", "--store", mount.store)
    view = files / ".datasets" / "Cats"
    assert poll(lambda: not view.is_symlink())  # the mount's cached link lasts up to a second
    assert view.is_dir()
    assert sorted(os.listdir(view)) == ["a.jpg", "b.jpg"]
    (files / "cats" / "c.jpg").write_bytes(b"later")  # no longer joins
    assert linked_to(files / "cats" / "c.jpg") == []
    ok("mv", files / "cats" / "a.jpg", files / "dogs" / "cat.jpg")  # an ordinary link stays
    assert linked_to(files / "dogs" / "cat.jpg") == ["Cats"]


def test_rm_of_a_synced_dataset_link_deletes_the_dataset_not_the_folder(files: Path) -> None:
    ok("ln", "-s", "../cats", files / ".datasets" / "Cats")
    ok("rm", files / ".datasets" / "Cats")
    assert os.listdir(files / ".datasets") == []
    assert sorted(os.listdir(files / "cats")) == ["a.jpg", "b.jpg"]
    assert linked_to(files / "cats" / "a.jpg") == []


def test_projects_show_the_files_of_their_datasets(files: Path) -> None:
    (files / ".datasets" / "Pets").mkdir()
    ok("ln", files / "dogs" / "a.jpg", files / ".datasets" / "Pets" / "dog.jpg")
    ok("ln", "-s", "../cats", files / ".datasets" / "Cats")
    (files / ".projects" / "Labelling").mkdir()
    project = files / ".projects" / "Labelling"
    ok("ln", "-s", "../../.datasets/Pets", project / "Pets")
    ok("ln", "-s", "../../.datasets/Cats", project / "Cats")
    assert sorted(os.listdir(project)) == ["Cats", "Pets"]
    assert os.readlink(project / "Pets") == "../../.datasets/.readonly/Pets"  # the Dataset, read-only
    assert os.listdir(project / "Pets") == ["dog.jpg"]
    assert sorted(os.listdir(project / "Cats")) == ["a.jpg", "b.jpg"]  # a synced Dataset's files
    assert (project / "Pets" / "dog.jpg").read_bytes() == (files / "dogs" / "a.jpg").read_bytes()
    assert os.stat(project / "Cats" / "a.jpg").st_ino == os.stat(files / "cats" / "a.jpg").st_ino
    assert ".readonly" not in os.listdir(files / ".datasets")
    info = subprocess.run(
        ["encfs", "info", str(files / "dogs" / "a.jpg"), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "ENCFS_STORE": str(files.parent / "store")},
    )
    assert '"projects": [\n    "Labelling"\n  ]' in info.stdout, info.stderr
    ok("rm", project / "Pets")  # detaches; the Dataset and the file stay
    assert os.listdir(project) == ["Cats"]
    assert os.listdir(files / ".datasets" / "Pets") == ["dog.jpg"]


def test_a_project_shows_its_files_read_only(files: Path, mount: Mounted) -> None:
    (files / ".datasets" / "Pets").mkdir()
    ok("ln", files / "dogs" / "a.jpg", files / ".datasets" / "Pets" / "dog.jpg")
    (files / ".projects" / "Labelling").mkdir()
    shown = files / ".projects" / "Labelling" / "Pets"
    ok("ln", "-s", "../../.datasets/Pets", shown)
    before = (files / "dogs" / "a.jpg").read_bytes()
    attempts = {
        "write": lambda: (shown / "dog.jpg").write_bytes(b"changed"),
        "remove": lambda: os.unlink(shown / "dog.jpg"),
        "rename": lambda: os.rename(shown / "dog.jpg", shown / "cat.jpg"),
        "create": lambda: (shown / "new.jpg").write_bytes(b"new"),
        "chmod": lambda: os.chmod(shown / "dog.jpg", 0o600),
        "setxattr": lambda: os.setxattr(shown / "dog.jpg", "user.note", b"x"),
        "truncate": lambda: os.truncate(shown / "dog.jpg", 0),
    }
    for what, attempt in attempts.items():
        with pytest.raises(OSError) as refused:
            attempt()
        assert refused.value.errno == errno.EROFS, what
    assert (files / "dogs" / "a.jpg").read_bytes() == before
    assert os.listdir(shown) == ["dog.jpg"]
    assert "a Project shows its Datasets' files read-only" in errors_of(mount)
    (files / ".datasets" / "Pets" / "dog.jpg").write_bytes(b"through the Dataset")  # the Dataset is writable
    assert (shown / "dog.jpg").read_bytes() == b"through the Dataset"


def test_groups_and_series_are_linked_as_one_item(files: Path, mount: Mounted) -> None:
    frames = files / "cats" / "burst"
    frames.mkdir()
    for i in range(3):
        (frames / f"f{i}.png").write_bytes(image_bytes("PNG", (30 + i, 20)))
    ok("setfattr", "-n", "user.encord.batch", "-v", "image_group", frames)
    (files / ".datasets" / "Groups").mkdir()
    ok("ln", files / "cats" / "burst.imagegroup", files / ".datasets" / "Groups/")
    assert os.listdir(files / ".datasets" / "Groups") == ["burst.imagegroup"]
    assert linked_to(frames / "f0.png") == []
    assert linked_to(files / "cats" / "burst.imagegroup") == ["Groups"]


def test_two_mounts_see_the_same_dataset_changes(store: Path, mount_factory) -> None:
    first, second = mount_factory(store, "one"), mount_factory(store, "two")
    (first.path / "cats").mkdir()
    (first.path / "cats" / "a.jpg").write_bytes(image_bytes("JPEG"))
    (first.path / ".datasets" / "Pets").mkdir()
    ok("ln", first.path / "cats" / "a.jpg", first.path / ".datasets" / "Pets/")
    seen = poll(lambda: os.path.exists(second.path / ".datasets" / "Pets" / "a.jpg"))
    assert seen
    assert linked_to(second.path / "cats" / "a.jpg") == ["Pets"]
    ok("rm", second.path / ".datasets" / "Pets" / "a.jpg")
    assert poll(lambda: os.listdir(first.path / ".datasets" / "Pets") == [])
    assert linked_to(first.path / "cats" / "a.jpg") == []
    assert errors_of(first) == errors_of(second) == ""


def test_dicom_slices_are_linked_through_their_series(mount: Mounted) -> None:
    study = mount.path / "study"
    study.mkdir()
    write_series(study, generate_uid(), [0.0, 1.0, 2.0])
    (study / "notes.txt").write_text("read me")
    (mount.path / ".datasets" / "Scans").mkdir()
    refused = sh("ln", study / "slice0.dcm", mount.path / ".datasets" / "Scans/")
    assert "Operation not permitted" in refused.stderr
    assert "a DICOM slice is linked through its series" in errors_of(mount)
    ok("ln", study / "Chest CT.dcmseries", mount.path / ".datasets" / "Scans/")
    assert os.listdir(mount.path / ".datasets" / "Scans") == ["Chest CT.dcmseries"]
    ok("ln", "-s", "../study", mount.path / ".datasets" / "Study")  # synced: the series and the notes
    assert sorted(members(mount.store, "Study")) == ["Chest CT.dcmseries", "notes.txt"]
    (study / "more").mkdir()
    write_series(study / "more", generate_uid(), [5.0])  # joins as a new series, not as a slice
    assert sorted(members(mount.store, "Study").values()) == [
        "/study/Chest CT.dcmseries",
        "/study/more/Chest CT.dcmseries",
        "/study/notes.txt",
    ]


def test_deleting_a_synced_folder_leaves_its_dataset_standard(files: Path, mount: Mounted) -> None:
    ok("ln", "-s", "../cats", files / ".datasets" / "Cats")
    ok("rm", "-r", files / "cats")
    view = files / ".datasets" / "Cats"
    assert poll(lambda: not view.is_symlink())
    assert view.is_dir() and os.listdir(view) == []
    assert "is no longer synced" in poll(lambda: "no longer synced" in mount.log() and mount.log())
