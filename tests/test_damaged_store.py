"""A damaged metadata file (cut short, bytes flipped, missing) is refused with one
sentence and exit 3, logged, and left as it was; a mount that meets a damaged record
answers EIO for it, logs the call and path, and keeps serving the rest."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from encfs.meta.check import used_size

from conftest import Mounted, start_mount, stop_mount
from damage import DAMAGED, PAGE, break_page_headers, break_record, cut_short, data_file, encfs


@pytest.fixture
def filled(store: Path, tmp_path: Path) -> Path:
    """A store with /a holding two images and /b empty."""
    images = []
    for index in range(2):
        image = tmp_path / f"img{index}.png"
        Image.new("RGB", (8, 8), (index * 90, 0, 0)).save(image)
        images.append(image)
    for args in (("folder", "create", "/a"), ("folder", "create", "/b"), ("upload", "/a", *images)):
        done = encfs(*args, "--store", store)
        assert done.returncode == 0, done.stderr
    return store


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"


def assert_refused_as_damaged(done: object, store: Path) -> None:
    stderr = done.stderr.decode()  # type: ignore[attr-defined]
    assert done.returncode == 3, (done.returncode, stderr)  # type: ignore[attr-defined]
    assert done.returncode != -signal.SIGBUS  # type: ignore[attr-defined]
    assert stderr.startswith(f"encfs: {DAMAGED}"), stderr
    assert len(stderr.splitlines()) == 1 and "Traceback" not in stderr, stderr
    assert DAMAGED in (store / "log" / "encfs.log").read_text()


# sizes: empty, a few bytes, the first header page only, both header pages, half, not
# a multiple of the page size, one byte short
CUTS = [0, 7, PAGE, 2 * PAGE, "half", 3 * PAGE + 1000, -1]


@pytest.mark.parametrize("cut", CUTS, ids=[str(c) for c in CUTS])
@pytest.mark.parametrize("command", [("ls", "/a"), ("search", "img"), ("info", "/a/img0.png"),
                                     ("dataset", "ls")])
def test_a_data_file_cut_short_is_refused_without_a_bus_error(filled: Path, cut: int | str,
                                                              command: tuple[str, ...]) -> None:
    size = used_size(filled / "meta.lmdb")
    cut_short(filled, size // 2 if cut == "half" else int(cut))
    before = digest(data_file(filled))
    assert_refused_as_damaged(encfs(*command, "--store", filled), filled)
    assert digest(data_file(filled)) == before  # not "repaired" into an empty store


def test_a_missing_data_file_is_refused_and_not_made_anew(filled: Path) -> None:
    data_file(filled).unlink()
    assert_refused_as_damaged(encfs("ls", "/", "--store", filled), filled)
    assert not data_file(filled).exists()


@pytest.mark.parametrize("background", [False, True], ids=["foreground", "background"])
def test_mount_of_a_data_file_cut_short_is_refused(filled: Path, tmp_path: Path, background: bool) -> None:
    cut_short(filled, used_size(filled / "meta.lmdb") // 2)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    args = ["mount", *([] if background else ["--foreground"]), str(mountpoint), "--store", str(filled)]
    output = tmp_path / "mount.out"
    with open(output, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "encfs", *args], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=out)
    try:
        returncode = process.wait(timeout=60)
    except subprocess.TimeoutExpired:  # it mounted and serves: wrong
        returncode = None
    finally:  # whatever came up goes down again, by its own pid
        stop_mount(Mounted(filled, mountpoint, process, output))
    assert returncode is not None, "the mount came up on a data file cut short"
    assert_refused_as_damaged(subprocess.CompletedProcess(args, returncode, b"", output.read_bytes()), filled)
    assert not os.path.ismount(mountpoint)


def test_flipped_bytes_in_a_record_give_the_sentence_not_a_traceback(filled: Path) -> None:
    break_record(filled, b'"name":"img0.png"')
    for command in (("ls", "/a"), ("ls", "-l", "/a"), ("info", "/a/img0.png"), ("search", "img"),
                    ("folder", "info", "/"), ("rm", "-r", "/a")):
        assert_refused_as_damaged(encfs(*command, "--store", filled), filled)
    assert encfs("ls", "/b", "--store", filled).returncode == 0  # what is intact still reads


def test_damaged_pages_are_refused_at_open(filled: Path) -> None:
    break_page_headers(filled)
    done = encfs("ls", "/", "--store", filled)
    assert_refused_as_damaged(done, filled)
    assert "MDB_CORRUPTED" in done.stderr.decode() or "MDB_PAGE_NOTFOUND" in done.stderr.decode()


def test_a_damaged_record_is_eio_on_the_mount_which_keeps_serving(filled: Path, tmp_path: Path) -> None:
    break_record(filled, b'"name":"img0.png"')
    mounted: Mounted = start_mount(filled, tmp_path / "mnt")
    try:
        assert sorted(os.listdir(mounted / "a")) == ["img0.png", "img1.png"]  # names and stat: intact
        with pytest.raises(OSError) as opening:
            (mounted / "a" / "img0.png").read_bytes()
        assert opening.value.errno == errno.EIO
        assert sorted(os.listdir(mounted.path)) == ["a", "b"]  # the rest still answers
        (mounted / "b" / "new").mkdir()
        assert mounted.process.poll() is None
        log = (filled / "log" / "encfs.log").read_text()
        damaged_lines = [line for line in log.splitlines() if DAMAGED in line]
        assert any("/a/img0.png" in line for line in damaged_lines), log
        assert "Traceback" not in log
    finally:
        stop_mount(mounted)
    assert "Traceback" not in mounted.log()


@pytest.mark.parametrize("seed", range(6))
def test_random_flipped_bytes_never_give_a_traceback_or_a_signal(filled: Path, seed: int) -> None:
    """Flip 200 random bits past the header pages (seeded: the same bits every run)."""
    path = data_file(filled)
    data = bytearray(path.read_bytes())
    chooser = random.Random(seed)
    for _ in range(200):
        data[chooser.randrange(2 * PAGE, len(data))] ^= 1 << chooser.randrange(8)
    path.write_bytes(bytes(data))
    for command in (("ls", "-l", "/a"), ("search", "img"), ("info", "/a/img1.png"), ("folder", "info", "/")):
        done = encfs(*command, "--store", filled)
        stderr = done.stderr.decode(errors="replace")
        assert done.returncode >= 0, f"{command}: killed by signal {-done.returncode}"
        assert "Traceback" not in stderr and len(stderr.splitlines()) <= 1, (command, stderr)
        if done.returncode == 3:
            assert stderr.startswith(f"encfs: {DAMAGED}"), stderr
