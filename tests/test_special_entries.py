"""Symbolic links, FIFOs, sockets and device nodes in folders: entries of their own,
made and used with real tools through a real mount."""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from encfs.model import Actor

from conftest import Mounted, errors_of, start_mount, stop_mount
from store_state import os_refused, service_of


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, cwd=cwd)


def encfs(mount: Mounted, *args: str) -> subprocess.CompletedProcess[str]:
    return run(sys.executable, "-m", "encfs", *args, "--store", str(mount.store))


def test_ln_s_keeps_relative_and_absolute_targets_as_given(mount: Mounted, folder: Path) -> None:
    (folder / "epoch=9.ckpt").write_bytes(b"weights")
    assert run("ln", "-s", "epoch=9.ckpt", str(folder / "last.ckpt")).returncode == 0
    assert run("ln", "-s", "/etc/hostname", str(folder / "host")).returncode == 0
    inside = str(folder / "epoch=9.ckpt")  # an absolute path into the mount stays absolute too
    assert run("ln", "-s", inside, str(folder / "by-path")).returncode == 0
    assert run("readlink", str(folder / "last.ckpt")).stdout == "epoch=9.ckpt\n"
    assert os.readlink(folder / "host") == "/etc/hostname"
    assert os.readlink(folder / "by-path") == inside
    assert (folder / "last.ckpt").read_bytes() == b"weights"
    assert (folder / "by-path").read_bytes() == b"weights"
    assert (folder / "host").read_text() == Path("/etc/hostname").read_text()
    link = os.lstat(folder / "last.ckpt")
    assert stat.S_ISLNK(link.st_mode) and link.st_size == len("epoch=9.ckpt") and link.st_nlink == 1
    assert os.stat(folder / "last.ckpt").st_size == 7  # stat follows it
    assert "last.ckpt -> epoch=9.ckpt" in run("ls", "-l", str(folder)).stdout


def test_links_survive_a_remount_and_encfs_ls_shows_them(store: Path, tmp_path: Path) -> None:
    first = start_mount(store, tmp_path / "one")
    try:
        (first.path / "runs" / "run-17").mkdir(parents=True)
        os.symlink("run-17", first.path / "runs" / "latest")
        os.mkfifo(first.path / "runs" / "pipe")
    finally:
        stop_mount(first)
    second = start_mount(store, tmp_path / "two")
    try:
        assert os.readlink(second.path / "runs" / "latest") == "run-17"
        assert os.path.isdir(second.path / "runs" / "latest")
        assert stat.S_ISFIFO(os.lstat(second.path / "runs" / "pipe").st_mode)
        listing = encfs(second, "ls", "-l", "/runs")
        assert listing.returncode == 0, listing.stderr
        assert "symlink" in listing.stdout and "latest -> run-17" in listing.stdout
        assert "fifo" in listing.stdout and "pipe" in listing.stdout
        info = json.loads(encfs(second, "info", "--json", "/runs/latest").stdout)
        assert info["type"] == "symlink" and info["target"] == "run-17"
    finally:
        stop_mount(second)


def test_o_nofollow_and_loops_are_eloop(folder: Path) -> None:
    (folder / "real").write_text("x")
    os.symlink("real", folder / "link")
    os_refused(errno.ELOOP, lambda: os.open(folder / "link", os.O_RDONLY | os.O_NOFOLLOW))
    os.symlink("loop-b", folder / "loop-a")
    os.symlink("loop-a", folder / "loop-b")
    os_refused(errno.ELOOP, lambda: (folder / "loop-a").read_text())
    os.symlink("self", folder / "self")
    os_refused(errno.ELOOP, lambda: os.stat(folder / "self"))
    os.symlink("nowhere", folder / "dangling")
    os_refused(errno.ENOENT, lambda: os.stat(folder / "dangling"))
    assert os.readlink(folder / "dangling") == "nowhere"


def test_ln_sf_replaces_a_link_and_rm_removes_only_the_link(folder: Path) -> None:
    (folder / "epoch=8.ckpt").write_text("eight")
    (folder / "epoch=9.ckpt").write_text("nine")
    os.symlink("epoch=8.ckpt", folder / "last.ckpt")
    assert run("ln", "-sf", "epoch=9.ckpt", str(folder / "last.ckpt")).returncode == 0
    assert os.readlink(folder / "last.ckpt") == "epoch=9.ckpt"
    assert (folder / "last.ckpt").read_text() == "nine"
    assert run("ln", "-sfn", "epoch=8.ckpt", str(folder / "last.ckpt")).returncode == 0
    assert (folder / "last.ckpt").read_text() == "eight"
    os.unlink(folder / "last.ckpt")
    assert sorted(os.listdir(folder)) == ["epoch=8.ckpt", "epoch=9.ckpt"]
    os.symlink("epoch=9.ckpt", folder / "moved")
    os.rename(folder / "moved", folder / "renamed")
    assert os.readlink(folder / "renamed") == "epoch=9.ckpt"


def test_links_are_not_items_not_searched_and_never_join_a_dataset(mount: Mounted, folder: Path) -> None:
    (folder / "cat.jpg").write_bytes(b"not really")
    os.symlink("cat.jpg", folder / "cat-link.jpg")
    assert os.listdir(mount.path / ".search" / "cat") == ["cat.jpg"]
    found = encfs(mount, "search", "cat-link")
    assert found.stdout == ""
    with pytest.raises(OSError):
        os.getxattr(folder / "cat-link.jpg", "user.encord.kind", follow_symlinks=False)
    (mount.path / ".datasets" / "Pets").mkdir()
    os_refused(errno.EPERM, lambda: os.link(folder / "cat-link.jpg", mount.path / ".datasets" / "Pets" / "c",
                                            follow_symlinks=False))
    assert "only files join Datasets" in errors_of(mount)
    added = encfs(mount, "dataset", "add", "Pets", "/data")
    assert added.returncode == 0, added.stderr
    assert os.listdir(mount.path / ".datasets" / "Pets") == ["cat.jpg"]
    moved = encfs(mount, "mv", "/data/cat-link.jpg", "/data/kitten-link.jpg")
    assert moved.returncode == 0, moved.stderr
    assert os.readlink(folder / "kitten-link.jpg") == "cat.jpg"
    removed = encfs(mount, "rm", "/data/kitten-link.jpg")
    assert removed.returncode == 0, removed.stderr
    assert os.listdir(folder) == ["cat.jpg"]


def test_hard_links_between_folders_stay_refused(mount: Mounted, folder: Path) -> None:
    (folder / "a.txt").write_text("a")
    os_refused(errno.EPERM, lambda: os.link(folder / "a.txt", folder / "b.txt"))
    done = run("ln", str(folder / "a.txt"), str(folder / "c.txt"))
    assert done.returncode != 0 and "Operation not permitted" in done.stderr
    assert "hard links between folders are refused" in errors_of(mount)
    assert sorted(os.listdir(folder)) == ["a.txt"]


def test_a_fifo_carries_data_between_processes(folder: Path) -> None:
    assert run("mkfifo", str(folder / "pipe")).returncode == 0
    assert stat.S_ISFIFO(os.lstat(folder / "pipe").st_mode)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append((folder / "pipe").read_bytes()))
    reader.start()
    with open(folder / "pipe", "wb") as writer:
        writer.write(b"through the pipe")
    reader.join(timeout=10)
    assert received == [b"through the pipe"]


def test_a_unix_socket_binds_and_accepts_in_a_folder(folder: Path) -> None:
    path = str(folder / "server.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        server.bind(path)
        server.listen(1)
        assert stat.S_ISSOCK(os.lstat(path).st_mode)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            client.connect(path)
            conn, _ = server.accept()
            client.sendall(b"ping")
            assert conn.recv(4) == b"ping"
            conn.close()
        finally:
            client.close()
    finally:
        server.close()
    os.unlink(path)
    assert not os.path.lexists(path)


def test_mknod_as_root_makes_device_nodes_with_their_numbers(mount: Mounted, folder: Path) -> None:
    assert run("mknod", str(folder / "null-ish"), "c", "1", "3").returncode == 0
    assert run("mknod", str(folder / "disk-ish"), "b", "259", "70000").returncode == 0
    char, block = os.lstat(folder / "null-ish"), os.lstat(folder / "disk-ish")
    assert stat.S_ISCHR(char.st_mode) and (os.major(char.st_rdev), os.minor(char.st_rdev)) == (1, 3)
    assert stat.S_ISBLK(block.st_mode) and (os.major(block.st_rdev), os.minor(block.st_rdev)) == (259, 70000)
    with service_of(mount.store) as service:  # stored, not only cached by the kernel
        stored = service.stat(Actor.local(), "/data/disk-ish")
    assert stored.rdev == block.st_rdev
    os.symlink("disk-ish", folder / "link")
    os.mkfifo(folder / "pipe")
    fsck = encfs(mount, "fsck")
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr
    os.unlink(folder / "link")
    os.unlink(folder / "pipe")
    os.unlink(folder / "null-ish")
    assert sorted(os.listdir(folder)) == ["disk-ish"]


def test_special_entries_are_refused_at_the_root(mount: Mounted) -> None:
    os_refused(errno.EPERM, lambda: os.symlink("x", mount.path / "latest"))
    os_refused(errno.EPERM, lambda: os.mkfifo(mount.path / "pipe"))
    assert "the root holds folders only" in errors_of(mount)


def test_rm_r_of_a_folder_removes_its_links(mount: Mounted, folder: Path) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "f").write_text("x")
    os.symlink("f", folder / "sub" / "link")
    os.mkfifo(folder / "sub" / "pipe")
    assert run("rm", "-r", str(folder / "sub")).returncode == 0
    assert os.listdir(folder) == []
    fsck = encfs(mount, "fsck")
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_git_clone_keeps_symlinks(tmp_path: Path, folder: Path) -> None:
    source = tmp_path / "repo"
    source.mkdir()
    (source / "README.md").write_text("hello\n")
    (source / "docs").mkdir()
    (source / "docs" / "guide.md").write_text("guide\n")
    os.symlink("README.md", source / "LINK.md")
    os.symlink("../README.md", source / "docs" / "up.md")
    git = ["git", "-c", "user.email=t@example.com", "-c", "user.name=t", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "first"]):
        done = run(*git, *args, cwd=source)
        assert done.returncode == 0, done.stderr
    clone = folder / "clone"
    done = run(*git, "clone", "-q", str(source), str(clone))
    assert done.returncode == 0, done.stderr
    # git probes the disk at clone and writes core.symlinks=false where links cannot be made
    assert run("git", "-C", str(clone), "config", "core.symlinks").stdout.strip() in ("", "true")
    assert os.readlink(clone / "LINK.md") == "README.md"
    assert (clone / "docs" / "up.md").read_text() == "hello\n"
    status = run("git", "-C", str(clone), "status", "--porcelain")
    assert status.returncode == 0 and status.stdout == ""


def test_a_hugging_face_cache_layout_resolves_through_its_links(folder: Path) -> None:
    """snapshots/REV/FILE -> ../../blobs/SHA, as huggingface_hub lays out its cache."""
    repo = folder / "hub" / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "snapshots" / "abc123" / "sub").mkdir(parents=True)
    files = {"config.json": b'{"layers": 2}', "sub/weights.bin": os.urandom(3 << 20)}
    for name, data in files.items():
        sha = f"{abs(hash(name)):x}"
        (repo / "blobs" / sha).write_bytes(data)
        depth = "../" * (name.count("/") + 2)
        os.symlink(f"{depth}blobs/{sha}", repo / "snapshots" / "abc123" / name)
    (repo / "refs" / "main").write_text("abc123")
    revision = (repo / "refs" / "main").read_text()
    for name, data in files.items():
        assert (repo / "snapshots" / revision / name).read_bytes() == data
        assert os.path.realpath(repo / "snapshots" / revision / name).startswith(str(repo / "blobs"))
    found = run("find", str(repo / "snapshots"), "-type", "l")
    assert sorted(Path(line).name for line in found.stdout.split()) == ["config.json", "weights.bin"]
