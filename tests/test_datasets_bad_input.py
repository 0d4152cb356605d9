"""Bad input to Datasets and Projects: the right errno (or CLI exit), a clear line in
/.encfs/errors, and nothing changed."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from encfs.cli import main

from conftest import Mounted, errors_of
from store_state import explain, refused, snapshot


@pytest.fixture
def tree(mount: Mounted) -> Mounted:
    """/cats/a.jpg, /cats/kittens/; Dataset Pets holding a.jpg; Project Labelling with Pets."""
    root = mount.path
    (root / "cats" / "kittens").mkdir(parents=True)
    (root / "cats" / "a.jpg").write_bytes(b"a cat")
    (root / ".datasets" / "Pets").mkdir()
    os.link(root / "cats" / "a.jpg", root / ".datasets" / "Pets" / "a.jpg")
    (root / ".datasets" / "Empty").mkdir()
    (root / ".projects" / "Labelling").mkdir()
    os.symlink("../../.datasets/Pets", root / ".projects" / "Labelling" / "Pets")
    return mount


def fails_with(code: int, call: Callable[[], object]) -> None:
    with pytest.raises(OSError) as raised:
        call()
    assert raised.value.errno == code, f"{raised.value} (expected {errno.errorcode[code]})"


def check_refused(mount: Mounted, code: int, call: Callable[[], object], *phrases: str) -> None:
    """The call fails with `code`, the user's error log says why, and nothing changed."""
    before = snapshot(mount.store)
    fails_with(code, call)
    log = errors_of(mount)
    for phrase in phrases:
        assert phrase in log, log
    assert snapshot(mount.store) == before


def cli(mount: Mounted, *args: str) -> object:
    return CliRunner().invoke(main, [*args, "--store", str(mount.store)])


def test_ln_of_a_folder(tree: Mounted) -> None:
    root = tree.path
    before = snapshot(tree.store)
    fails_with(
        errno.EPERM, lambda: os.link(root / "cats" / "kittens", root / ".datasets" / "Pets" / "kittens")
    )
    assert snapshot(tree.store) == before  # the kernel refuses hard links of directories itself
    check_refused(
        tree,
        errno.EPERM,
        lambda: os.symlink("../../cats/kittens", root / ".datasets" / "Pets" / "k"),
        "link /.datasets/Pets/k: a Dataset holds links to files",
    )


def test_ln_of_a_path_outside_the_mount(tree: Mounted, tmp_path: Path) -> None:
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"elsewhere")
    before = snapshot(tree.store)
    fails_with(errno.EXDEV, lambda: os.link(outside, tree.path / ".datasets" / "Pets" / "outside.jpg"))
    assert snapshot(tree.store) == before
    check_refused(
        tree,
        errno.EINVAL,
        lambda: os.symlink(str(tmp_path), tree.path / ".datasets" / "Synced"),
        f"link /.datasets/Synced: the target {tmp_path} is outside this mount",
    )
    check_refused(
        tree,
        errno.EINVAL,
        lambda: os.symlink("../../../x", tree.path / ".datasets" / "Synced"),
        "is outside this mount",
    )
    refused(
        cli(tree, "dataset", "add", "Pets", str(outside)),
        f"{outside} is not a file or folder in Files",
        code=2,
    )
    assert snapshot(tree.store) == before


def test_a_dataset_name_that_exists(tree: Mounted) -> None:
    root = tree.path
    check_refused(
        tree,
        errno.EEXIST,
        lambda: os.rename(root / ".datasets" / "Empty", root / ".datasets" / "Pets"),
        "rename /.datasets/Pets: a Dataset named 'Pets' exists",
    )
    check_refused(tree, errno.EEXIST, lambda: os.symlink("../cats", root / ".datasets" / "Pets"))
    before = snapshot(tree.store)
    refused(cli(tree, "dataset", "create", "Pets"), "a Dataset named 'Pets' exists")
    refused(cli(tree, "dataset", "rename", "Empty", "Pets"), "a Dataset named 'Pets' exists")
    refused(cli(tree, "project", "create", "Labelling"), "a Project named 'Labelling' exists")
    assert snapshot(tree.store) == before
    assert "dataset create /.datasets/Pets: a Dataset named 'Pets' exists" in errors_of(tree)


def test_a_file_into_a_project_directly(tree: Mounted) -> None:
    project = tree.path / ".projects" / "Labelling"
    check_refused(
        tree, errno.EPERM, lambda: (project / "new.jpg").write_bytes(b"x"), "a Project holds Datasets only"
    )
    check_refused(
        tree,
        errno.EPERM,
        lambda: os.link(tree.path / "cats" / "a.jpg", project / "a.jpg"),
        "link /.projects/Labelling/a.jpg: a Project holds Datasets only",
    )
    check_refused(tree, errno.EPERM, lambda: os.mkdir(project / "sub"), "a Project holds Datasets only")
    check_refused(
        tree,
        errno.EPERM,
        lambda: (tree.path / ".datasets" / "Pets" / "new.jpg").write_bytes(b"x"),
        "a Dataset holds links to files that live in folders",
    )


def test_ln_s_to_something_that_is_not_a_folder(tree: Mounted) -> None:
    root = tree.path
    check_refused(
        tree,
        errno.ENOTDIR,
        lambda: os.symlink("../cats/a.jpg", root / ".datasets" / "Synced"),
        "link /.datasets/Synced: /cats/a.jpg is not a folder",
    )
    check_refused(
        tree,
        errno.ENOENT,
        lambda: os.symlink("../nowhere", root / ".datasets" / "Synced"),
        "/nowhere is not a file or folder in Files",
    )
    check_refused(
        tree,
        errno.EPERM,
        lambda: os.symlink("../../cats", root / ".projects" / "Labelling" / "cats"),
        "a Project holds Datasets only",
    )
    check_refused(
        tree,
        errno.EINVAL,
        lambda: os.symlink("../../.datasets/Empty", root / ".projects" / "Labelling" / "Other"),
        "name the link after the Dataset",
    )


def test_deleting_a_dataset_attached_to_a_project(tree: Mounted) -> None:
    root = tree.path
    os.unlink(root / ".datasets" / "Pets" / "a.jpg")  # empty, but still attached
    check_refused(
        tree,
        errno.EBUSY,
        lambda: os.rmdir(root / ".datasets" / "Pets"),
        "rmdir /.datasets/Pets: Dataset 'Pets' is attached to Project Labelling",
    )
    before = snapshot(tree.store)
    refused(cli(tree, "dataset", "rm", "Pets"), "attached to Project Labelling", "--force")
    assert snapshot(tree.store) == before
    result = cli(tree, "dataset", "rm", "Pets", "--force")
    assert result.exit_code == 0, explain(result)
    assert os.listdir(root / ".projects" / "Labelling") == []


def test_removing_a_file_that_is_not_in_the_dataset(tree: Mounted) -> None:
    (tree.path / "cats" / "b.jpg").write_bytes(b"b cat")
    before = snapshot(tree.store)
    refused(
        cli(tree, "dataset", "remove", "Pets", "cats/a.jpg", "cats/b.jpg"), "not in Dataset 'Pets'", code=2
    )
    assert snapshot(tree.store) == before  # a.jpg stays too: all or nothing
    assert "dataset remove /cats/b.jpg: not in Dataset 'Pets'" in errors_of(tree)
    fails_with(errno.ENOENT, lambda: os.unlink(tree.path / ".datasets" / "Pets" / "b.jpg"))
    refused(cli(tree, "dataset", "remove", "Nope", "cats/a.jpg"), "no Dataset is named 'Nope'", code=2)
    assert snapshot(tree.store) == before


def test_links_that_cannot_be_made(tree: Mounted) -> None:
    root = tree.path
    check_refused(
        tree,
        errno.EEXIST,
        lambda: os.link(root / "cats" / "a.jpg", root / ".datasets" / "Pets" / "again.jpg"),
        "the file is already in Dataset 'Pets'",
    )
    os.symlink("../cats", root / ".datasets" / "Synced")
    check_refused(
        tree,
        errno.EPERM,
        lambda: os.link(root / ".datasets" / "Pets" / "a.jpg", root / "cats" / "a2.jpg"),
        "hard links between folders are refused",
    )
    before = snapshot(tree.store)
    refused(cli(tree, "dataset", "add", "Synced", "cats/a.jpg"), "synced with a folder")
    refused(cli(tree, "dataset", "add", "Pets", "cats", "--duplicates", "often"), "often")
    assert snapshot(tree.store) == before
