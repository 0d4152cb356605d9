"""The seed's example, exactly: moving "chicken.mp4" from mirrored Dataset "Animal
videos" to mirrored Dataset "Chicken videos" makes it visible in every Project
associated with "Chicken videos" (and no longer in "Animal videos")."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from click.testing import CliRunner

from encfs.cli import main

from conftest import Mounted, errors_of
from media import video_file
from store_state import explain, members, poll


def encfs(store: Path, *args: str, input: str | None = None) -> str:
    result = CliRunner().invoke(main, [*args, "--store", str(store)], input=input)
    assert result.exit_code == 0, explain(result)
    return result.stdout


def visible(project_dataset: Path) -> list[str]:
    return sorted(os.listdir(project_dataset))


def test_moving_chicken_between_mirrored_datasets(mount: Mounted, tmp_path: Path) -> None:
    store, root = mount.store, mount.path
    encfs(store, "dataset", "create", "Animal videos", "--mirrored")
    encfs(store, "dataset", "create", "Chicken videos", "--mirrored")
    encfs(store, "project", "create", "Poultry", "--dataset", "Chicken videos")
    (root / ".projects" / "Farm birds").mkdir()
    os.symlink("../../.datasets/Chicken videos", root / ".projects" / "Farm birds" / "Chicken videos")
    encfs(store, "project", "create", "Zoo", "--dataset", "Animal videos")

    chicken = video_file(tmp_path / "chicken.mp4")
    subprocess.run(["cp", str(chicken), str(root / "Animal videos/")], check=True)
    assert os.getxattr(root / "Animal videos" / "chicken.mp4", "user.encord.kind") == b"video"
    assert visible(root / ".projects" / "Zoo" / "Animal videos") == ["chicken.mp4"]
    assert visible(root / ".projects" / "Poultry" / "Chicken videos") == []

    subprocess.run(
        ["mv", str(root / "Animal videos" / "chicken.mp4"), str(root / "Chicken videos/")], check=True
    )

    moved = root / "Chicken videos" / "chicken.mp4"
    assert os.getxattr(moved, "user.encord.datasets") == b"Chicken videos"
    assert members(store, "Animal videos") == {}
    assert members(store, "Chicken videos") == {"chicken.mp4": "/Chicken videos/chicken.mp4"}
    for project in ("Poultry", "Farm birds"):
        shown = root / ".projects" / project / "Chicken videos" / "chicken.mp4"
        assert visible(shown.parent) == ["chicken.mp4"]
        assert shown.read_bytes() == chicken.read_bytes()
        assert os.stat(shown).st_ino == os.stat(moved).st_ino
    assert visible(root / ".projects" / "Zoo" / "Animal videos") == []
    assert "moved /Chicken videos/chicken.mp4: it left synced Dataset 'Animal videos'" in poll(
        lambda: "left synced" in mount.log() and mount.log()
    )
    assert errors_of(mount) == ""


def test_the_same_move_from_the_cli_asks_first(mount: Mounted, tmp_path: Path) -> None:
    store, root = mount.store, mount.path
    encfs(store, "dataset", "create", "Animal videos", "--mirrored")
    encfs(store, "dataset", "create", "Chicken videos", "--mirrored")
    encfs(store, "project", "create", "Poultry", "--dataset", "Chicken videos")
    encfs(store, "upload", "Animal videos", str(video_file(tmp_path / "chicken.mp4")))

    asked = CliRunner().invoke(
        main, ["mv", "Animal videos/chicken.mp4", "Chicken videos/", "--store", str(store)], input="n\n"
    )
    assert asked.exit_code == 1 and "Dataset Animal videos" in asked.stderr
    assert members(store, "Animal videos") == {"chicken.mp4": "/Animal videos/chicken.mp4"}

    encfs(store, "mv", "--yes", str(root / "Animal videos" / "chicken.mp4"), str(root / "Chicken videos"))
    assert members(store, "Chicken videos") == {"chicken.mp4": "/Chicken videos/chicken.mp4"}
    assert poll(lambda: visible(root / ".projects" / "Poultry" / "Chicken videos") == ["chicken.mp4"])
    assert "projects:         Poultry" in encfs(store, "info", "Chicken videos/chicken.mp4")
