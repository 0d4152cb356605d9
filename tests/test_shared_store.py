"""Two mounts of one store, and the CLI beside them, see each other's changes within
about a second."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from encfs.cli import main

VISIBLE_WITHIN = 3.0


def eventually(check: Callable[[], bool], timeout: float = VISIBLE_WITHIN) -> float:
    """Seconds until check() held; fails the test after `timeout`."""
    start = time.monotonic()
    while True:
        try:
            if check():
                return time.monotonic() - start
        except OSError:
            pass
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not visible within {timeout} s")
        time.sleep(0.05)


def test_two_mounts_see_each_other(store: Path, mount_factory) -> None:
    first = mount_factory(store, "one")
    second = mount_factory(store, "two")
    (first.path / "shared").mkdir()
    eventually(lambda: (second.path / "shared").is_dir())
    (first.path / "shared" / "f.txt").write_text("version 1")
    eventually(lambda: (second.path / "shared" / "f.txt").read_text() == "version 1")
    (second.path / "shared" / "f.txt").write_text("version 2 is longer")
    eventually(lambda: (first.path / "shared" / "f.txt").read_text() == "version 2 is longer")
    (second.path / "shared" / "f.txt").write_text("v3")  # shorter: size and content must follow
    eventually(lambda: (first.path / "shared" / "f.txt").read_text() == "v3")
    (first.path / "shared" / "f.txt").rename(first.path / "shared" / "g.txt")
    eventually(lambda: not (second.path / "shared" / "f.txt").exists()
               and (second.path / "shared" / "g.txt").read_text() == "v3")
    (second.path / "shared" / "g.txt").unlink()
    eventually(lambda: list((first.path / "shared").iterdir()) == [])


def test_cli_and_mount_see_each_other(store: Path, mount_factory, tmp_path: Path) -> None:
    mounted = mount_factory(store, "mnt")
    runner = CliRunner()
    assert runner.invoke(main, ["folder", "create", "--store", str(store), "from-cli"]).exit_code == 0
    eventually(lambda: (mounted.path / "from-cli").is_dir())
    (tmp_path / "up.txt").write_text("uploaded")
    result = runner.invoke(main, ["upload", "--store", str(store), "from-cli", str(tmp_path / "up.txt")])
    assert result.exit_code == 0, result.output
    eventually(lambda: (mounted.path / "from-cli" / "up.txt").read_text() == "uploaded")
    (mounted.path / "from-cli" / "made-on-mount.txt").write_text("m")
    listing = runner.invoke(main, ["ls", "--store", str(store), "from-cli"]).output.split()
    assert "made-on-mount.txt" in listing
    assert runner.invoke(main, ["rm", "--store", str(store), "from-cli/up.txt"]).exit_code == 0
    eventually(lambda: not (mounted.path / "from-cli" / "up.txt").exists())


def test_reader_on_other_mount_keeps_old_content_until_reopen(store: Path, mount_factory) -> None:
    first = mount_factory(store, "one")
    second = mount_factory(store, "two")
    (first.path / "d").mkdir()
    (first.path / "d" / "f").write_bytes(b"A" * 10_000)
    eventually(lambda: (second.path / "d" / "f").exists())
    with open(second.path / "d" / "f", "rb") as reader:
        (first.path / "d" / "f").write_bytes(b"B" * 10_000)
        assert reader.read() == b"A" * 10_000  # an open descriptor keeps its version
    eventually(lambda: (second.path / "d" / "f").read_bytes() == b"B" * 10_000)


def test_closing_a_reader_does_not_publish_a_writers_bytes(store: Path, mount_factory) -> None:
    """On one mount a reader sees the writer's bytes at once, but they reach other
    mounts when the writer closes, not when some reader does."""
    first = mount_factory(store, "one")
    second = mount_factory(store, "two")
    (first.path / "d").mkdir()
    (first.path / "d" / "f").write_bytes(b"old")
    eventually(lambda: (second.path / "d" / "f").read_bytes() == b"old")
    with open(first.path / "d" / "f", "r+b", buffering=0) as writer:
        writer.write(b"new")
        with open(first.path / "d" / "f", "rb") as reader:
            assert reader.read() == b"new"
        time.sleep(1.5)  # past the other mount's caches
        assert (second.path / "d" / "f").read_bytes() == b"old"
    eventually(lambda: (second.path / "d" / "f").read_bytes() == b"new")


def test_a_file_removed_elsewhere_can_be_written_again_at_once(store: Path, mount_factory) -> None:
    """The kernel keeps a removed name for up to a second: opening it to write must
    still create the file, and opening it to read must say it is gone."""
    first, second = mount_factory(store, "one"), mount_factory(store, "two")
    (first.path / "shared").mkdir()
    name = "labels.json"
    (first.path / "shared" / name).write_text("v1")
    for remover in ("other mount", "cli"):
        assert (first.path / "shared" / name).read_text() in ("v1", "again")  # the name is cached
        if remover == "cli":
            result = CliRunner().invoke(main, ["rm", "--store", str(store), f"shared/{name}"])
            assert result.exit_code == 0, result.output
        else:
            eventually(lambda: (second.path / "shared" / name).exists())
            (second.path / "shared" / name).unlink()
        (first.path / "shared" / name).write_text("again")  # open(O_WRONLY | O_CREAT | O_TRUNC)
        assert (first.path / "shared" / name).read_text() == "again"
        eventually(lambda: (second.path / "shared" / name).read_text() == "again")
    (first.path / "shared" / name).stat()
    (second.path / "shared" / name).unlink()
    with pytest.raises(FileNotFoundError):
        (first.path / "shared" / name).read_text()


def test_a_file_made_elsewhere_is_opened_not_refused(store: Path, mount_factory, tmp_path: Path) -> None:
    """The kernel remembers a missing name for up to a second: an O_CREAT open of a
    name made meanwhile by another mount or the CLI opens that file, as on a local
    disk; with O_EXCL it is EEXIST, and a folder of that name is EISDIR."""
    first, second = mount_factory(store, "one"), mount_factory(store, "two")
    (first.path / "shared").mkdir()
    eventually(lambda: (second.path / "shared").is_dir())
    for name in ("appended.txt", "truncated.txt", "exclusive.txt", "folder"):
        assert not (first.path / "shared" / name).exists()  # the kernel now holds "missing"
    (second.path / "shared" / "appended.txt").write_text("made on two;")
    (second.path / "shared" / "truncated.txt").write_text("made on two")
    (second.path / "shared" / "exclusive.txt").write_text("made on two")
    made = CliRunner().invoke(main, ["folder", "create", "--store", str(store), "shared/folder"])
    assert made.exit_code == 0, made.output

    with open(first.path / "shared" / "appended.txt", "a") as f:
        f.write(" appended on one")
    with open(first.path / "shared" / "truncated.txt", "w") as f:
        f.write("replaced on one")
    with pytest.raises(FileExistsError):
        os.open(first.path / "shared" / "exclusive.txt", os.O_WRONLY | os.O_CREAT | os.O_EXCL)
    with pytest.raises(IsADirectoryError):
        os.open(first.path / "shared" / "folder", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)

    assert (first.path / "shared" / "appended.txt").read_text() == "made on two; appended on one"
    assert (first.path / "shared" / "truncated.txt").read_text() == "replaced on one"
    assert (first.path / "shared" / "exclusive.txt").read_text() == "made on two"
    eventually(lambda: (second.path / "shared" / "truncated.txt").read_text() == "replaced on one")


def test_writers_on_two_mounts_last_close_wins_whole(store: Path, mount_factory) -> None:
    """Each mount's writer works on its own draft of the file; the last close stores
    its whole version. Neither a mix of the two nor a blob of the lost version is left."""
    first, second = mount_factory(store, "one"), mount_factory(store, "two")
    (first.path / "shared").mkdir()
    (first.path / "shared" / "log.txt").write_text("base\n")
    eventually(lambda: (second.path / "shared" / "log.txt").read_text() == "base\n")
    with open(first.path / "shared" / "log.txt", "a") as on_first, \
            open(second.path / "shared" / "log.txt", "a") as on_second:
        on_first.write("from one, a longer line\n")
        on_second.write("from two\n")
        on_first.flush()
        on_second.flush()
        on_first.close()  # stored first ...
    # ... and the second close, later, wins
    assert eventually(lambda: (first.path / "shared" / "log.txt").read_text() == "base\nfrom two\n") >= 0
    assert (second.path / "shared" / "log.txt").read_text() == "base\nfrom two\n"
    blobs = [p for p in (store / "blobs").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in blobs] == [b"base\nfrom two\n"]
    assert os.listdir(store / "spool") == []
