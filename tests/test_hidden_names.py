"""`.fuse_hidden…` names: libfuse's own name for a file removed while open means that
only when libfuse made it (during an unlink); a user's file of that name is a file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import Mounted


@pytest.mark.parametrize("name", [".fuse_hidden123", ".fuse_hidden0000000a00000003"])
def test_a_file_renamed_to_a_fuse_hidden_name_is_kept(mount: Mounted, folder: Path, name: str) -> None:
    (folder / "notes.txt").write_bytes(b"keep me")
    os.rename(folder / "notes.txt", folder / name)
    assert (folder / name).read_bytes() == b"keep me"
    assert sorted(os.listdir(folder)) == [name]
    os.rename(folder / name, folder / "back.txt")
    assert (folder / "back.txt").read_bytes() == b"keep me"


def test_a_file_created_with_a_fuse_hidden_name_is_an_ordinary_file(mount: Mounted, folder: Path) -> None:
    path = folder / ".fuse_hidden0000000100000002"
    path.write_bytes(b"data")
    assert path.stat().st_size == 4
    (folder / "other").write_bytes(b"other")
    os.rename(folder / "other", path)  # replaces it, as any rename onto an existing name
    assert path.read_bytes() == b"other"
    path.unlink()
    assert os.listdir(folder) == []


def test_a_file_removed_while_open_leaves_no_name_behind(mount: Mounted, folder: Path) -> None:
    path = folder / "open.bin"
    path.write_bytes(b"content")
    with open(path, "rb") as reader:
        path.unlink()
        assert os.listdir(folder) == []
        assert reader.read() == b"content"
    assert os.listdir(folder) == []
