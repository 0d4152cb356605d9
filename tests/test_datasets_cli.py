"""`encfs dataset …`, `encfs project …` and the Dataset parts of `info`, `search`, `rm`
and `mv`, through click's CliRunner on a real store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from encfs.cli import main
from encfs.model import Actor

from store_state import explain, members, refused, service_of, snapshot


def cli(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), input=input)


def ok(result: Result) -> Result:
    assert result.exit_code == 0, explain(result)
    return result


@pytest.fixture
def library(store: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """/cats/a.jpg, /cats/b.jpg, /cats/kittens/k.jpg, /dogs/a.jpg in the store ($ENCFS_STORE)."""
    monkeypatch.setenv("ENCFS_STORE", str(store))
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "local"
    for folder, names in (("cats", ("a.jpg", "b.jpg")), ("cats/kittens", ("k.jpg",)), ("dogs", ("a.jpg",))):
        ok(cli("folder", "create", folder))
        (local / folder).mkdir(parents=True)
        for name in names:
            (local / folder / name).write_bytes(f"{folder}/{name}".encode())
            ok(cli("upload", folder, str(local / folder / name)))
    return store


def item_id(store: Path, path: str) -> int:
    with service_of(store) as service:
        return service.lookup(Actor.local(), path).id


def test_create_list_describe_rename_and_delete(library: Path) -> None:
    assert (
        "created standard Dataset 'Pets': 0 files"
        in ok(cli("dataset", "create", "Pets", "--description", "all pets")).stdout
    )
    ok(cli("dataset", "rename", "Pets", "Animals"))
    ok(cli("dataset", "describe", "Animals", "furry"))
    listed = json.loads(ok(cli("dataset", "ls", "--json")).stdout)
    assert listed == [
        {
            "name": "Animals",
            "description": "furry",
            "files": 0,
            "synced_folder": None,
            "mirrored": False,
            "projects": [],
        }
    ]
    ok(cli("dataset", "rm", "Animals"))
    assert ok(cli("dataset", "ls")).stdout == ""


def test_add_to_new_dataset_takes_folders_whole(library: Path) -> None:
    out = ok(cli("dataset", "create", "Pets", "--add", "cats", "dogs/a.jpg")).stdout
    assert "4 files" in out
    dog = item_id(library, "/dogs/a.jpg")
    assert members(library, "Pets") == {
        "a.jpg": "/cats/a.jpg",
        "b.jpg": "/cats/b.jpg",
        "k.jpg": "/cats/kittens/k.jpg",
        f"a~{dog}.jpg": "/dogs/a.jpg",
    }
    shown = ok(cli("dataset", "ls", "Pets")).stdout.splitlines()
    assert f"a~{dog}.jpg\t/dogs/a.jpg" in shown
    assert ok(cli("ls", "/.datasets/Pets")).stdout.splitlines() == ["a.jpg", f"a~{dog}.jpg", "b.jpg", "k.jpg"]
    assert ok(cli("ls", "/.datasets")).stdout.splitlines() == ["Pets/"]


def test_paths_without_add_are_a_usage_error(library: Path) -> None:
    refused(cli("dataset", "create", "Pets", "cats"), "--add", code=2)
    assert ok(cli("dataset", "ls")).stdout == ""


def test_duplicates_are_skipped_or_fail_the_whole_add(library: Path) -> None:
    ok(cli("dataset", "create", "Pets", "--add", "cats/a.jpg"))
    assert (
        "added 1 files to Dataset 'Pets' (1 already there, skipped)"
        in ok(cli("dataset", "add", "Pets", "cats/a.jpg", "dogs/a.jpg")).stdout
    )
    before = snapshot(library)
    refused(
        cli("dataset", "add", "Pets", "cats/b.jpg", "dogs/a.jpg", "--duplicates", "fail"),
        "already in Dataset 'Pets'",
        "nothing was added",
    )
    assert snapshot(library) == before
    assert "already in Dataset 'Pets'" in ok(cli("errors")).stdout


def test_remove_takes_files_out_of_one_dataset(library: Path) -> None:
    ok(cli("dataset", "create", "Pets", "--add", "cats"))
    ok(cli("dataset", "create", "Cats", "--add", "cats"))
    assert (
        "removed 2 files"
        in ok(cli("dataset", "remove", "Pets", "cats/a.jpg", "/.datasets/Pets/b.jpg")).stdout
    )
    assert list(members(library, "Pets")) == ["k.jpg"]
    assert len(members(library, "Cats")) == 3
    info = json.loads(ok(cli("info", "--json", "cats/a.jpg")).stdout)
    assert info["datasets"] == ["Cats"]


def test_rm_asks_when_the_file_is_in_datasets(library: Path) -> None:
    ok(cli("dataset", "create", "Pets", "--add", "cats/a.jpg"))
    answered_no = cli("rm", "cats/a.jpg", input="n\n")
    assert answered_no.exit_code == 1
    assert "in Datasets Pets" in answered_no.stderr and "nothing changed" in answered_no.stderr
    assert list(members(library, "Pets")) == ["a.jpg"]
    no_answer = cli("rm", "cats/a.jpg", input="")
    assert no_answer.exit_code == 1 and "nothing changed" in no_answer.stderr
    ok(cli("rm", "cats/a.jpg", input="y\n"))
    assert members(library, "Pets") == {}
    ok(cli("rm", "cats/b.jpg"))  # in no Dataset: nothing to ask
    ok(cli("dataset", "add", "Pets", "dogs"))
    ok(cli("rm", "-r", "--yes", "dogs"))
    assert members(library, "Pets") == {}


def test_info_shows_linked_datasets_and_projects(library: Path) -> None:
    ok(cli("dataset", "create", "Pets", "--add", "cats/a.jpg"))
    ok(cli("dataset", "create", "Cats", "--add", "cats/a.jpg"))
    ok(cli("project", "create", "Labelling", "--dataset", "Pets"))
    shown = json.loads(ok(cli("info", "--json", "/.datasets/Pets")).stdout)
    assert (shown["type"], shown["files"], shown["projects"]) == ("dataset", 1, ["Labelling"])
    assert "datasets:         Pets" in ok(cli("info", "/.projects/Labelling")).stdout
    text = ok(cli("info", "cats/a.jpg")).stdout
    assert "datasets:         Cats, Pets" in text
    assert "projects:         Labelling" in text
    details = json.loads(ok(cli("info", "--json", "cats/b.jpg")).stdout)
    assert details["datasets"] == [] and details["projects"] == []


def test_search_in_and_not_in_datasets(library: Path) -> None:
    ok(cli("dataset", "create", "Pets", "--add", "dogs/a.jpg", "cats/kittens"))
    assert ok(cli("search", "jpg", "--in-dataset")).stdout.splitlines() == [
        "/cats/kittens/k.jpg",
        "/dogs/a.jpg",
    ]
    assert ok(cli("search", "jpg", "--not-in-dataset")).stdout.splitlines() == ["/cats/a.jpg", "/cats/b.jpg"]
    assert len(ok(cli("search", "jpg")).stdout.splitlines()) == 4


def test_sync_follows_the_folder_and_unsync_keeps_the_files(library: Path) -> None:
    ok(cli("dataset", "create", "Cats", "--sync", "cats"))
    assert sorted(members(library, "Cats")) == ["a.jpg", "b.jpg", "k.jpg"]
    assert "synced with Dataset: Cats" in ok(cli("folder", "info", "cats")).stdout
    refused(cli("dataset", "add", "Cats", "dogs/a.jpg"), "synced with a folder")
    ok(cli("mv", "--yes", "dogs/a.jpg", "cats/kittens/"))
    assert "/cats/kittens/a.jpg" in members(library, "Cats").values()
    ok(cli("dataset", "unsync", "Cats"))
    ok(cli("mv", "cats/b.jpg", "dogs/"))  # no longer synced: nothing to ask, the link stays
    assert "/dogs/b.jpg" in members(library, "Cats").values()
    refused(cli("dataset", "sync", "Cats", "cats"), "holds 1 files outside /cats")
    ok(cli("dataset", "remove", "Cats", "dogs/b.jpg"))
    ok(cli("dataset", "sync", "Cats", "cats"))
    assert "synced with /cats" in ok(cli("dataset", "ls")).stdout


def test_mv_out_of_a_synced_folder_asks(library: Path) -> None:
    ok(cli("dataset", "create", "Cats", "--sync", "cats"))
    before = snapshot(library)
    asked = cli("mv", "cats/a.jpg", "dogs/cat.jpg", input="n\n")
    assert asked.exit_code == 1
    assert "synced folder of Dataset Cats" in asked.stderr
    assert snapshot(library) == before
    refused(cli("folder", "mv", "cats/kittens", "dogs"), "synced folder of Dataset Cats")
    ok(cli("mv", "cats/a.jpg", "dogs/cat.jpg", input="y\n"))
    assert "/dogs/cat.jpg" not in members(library, "Cats").values()
    ok(cli("mv", "cats/b.jpg", "cats/kittens/"))  # within the synced folder: nothing to ask


def test_mirrored_dataset_and_upgrade(library: Path, tmp_path: Path) -> None:
    out = ok(cli("dataset", "create", "Birds", "--mirrored", "--description", "feathers")).stdout
    assert "created mirrored Dataset 'Birds' with folder /Birds" in out
    (tmp_path / "owl.jpg").write_bytes(b"owl")
    ok(cli("upload", "Birds", str(tmp_path / "owl.jpg")))
    assert members(library, "Birds") == {"owl.jpg": "/Birds/owl.jpg"}
    refused(cli("dataset", "unsync", "Birds"), "mirrored", "upgrade")
    refused(cli("dataset", "upgrade", "Birds-not"), "no Dataset", code=2)
    ok(cli("dataset", "upgrade", "Birds"))
    listed = json.loads(ok(cli("dataset", "ls", "--json")).stdout)
    assert [(d["name"], d["synced_folder"], d["mirrored"], d["files"]) for d in listed] == [
        ("Birds", None, False, 1)
    ]
    (tmp_path / "hen.jpg").write_bytes(b"hen")
    ok(cli("upload", "Birds", str(tmp_path / "hen.jpg")))  # a plain folder now
    assert members(library, "Birds") == {"owl.jpg": "/Birds/owl.jpg"}
    refused(cli("dataset", "upgrade", "Birds"), "not mirrored")


def test_projects_attach_detach_list_and_delete(library: Path) -> None:
    ok(cli("dataset", "create", "Pets", "--add", "cats/a.jpg"))
    ok(cli("dataset", "create", "Dogs", "--add", "dogs"))
    ok(cli("project", "create", "Labelling", "--description", "boxes"))
    ok(cli("project", "attach", "Labelling", "Pets", "Dogs"))
    assert ok(cli("project", "ls")).stdout.strip() == "Labelling  datasets: Dogs, Pets"
    assert ok(cli("project", "ls", "Labelling")).stdout.splitlines() == [
        "Dogs/a.jpg\t/dogs/a.jpg",
        "Pets/a.jpg\t/cats/a.jpg",
    ]
    refused(cli("project", "attach", "Labelling", "Pets"), "already attached")
    ok(cli("project", "detach", "Labelling", "Dogs"))
    refused(cli("project", "detach", "Labelling", "Dogs"), "not attached", code=2)
    ok(cli("project", "rm", "Labelling"))
    assert ok(cli("project", "ls")).stdout == ""
    assert len(members(library, "Pets")) == 1  # Datasets and files stay


def test_bulk_add_of_ten_thousand_files_is_one_command(library: Path) -> None:
    with service_of(library) as service:
        actor = Actor.local()
        service.create_folder(actor, "/bulk")
        for i in range(10_000):
            service.create_item(actor, f"/bulk/f{i:05d}.txt")
    ok(cli("dataset", "create", "Big"))
    assert "added 10000 files to Dataset 'Big'" in ok(cli("dataset", "add", "Big", "bulk")).stdout
    assert len(members(library, "Big")) == 10_000
    details = json.loads(ok(cli("info", "--json", "bulk/f09999.txt")).stdout)
    assert details["datasets"] == ["Big"]
