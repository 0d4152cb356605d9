"""FOLDER/.activity and `encfs activity`: one JSON line per change in the folder and
its subfolders (time, user, action, paths, item), written with the change."""

from __future__ import annotations

import errno
import json
import os
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from encfs.activity import iso_time

from conftest import Mounted
from media import image_bytes
from store_state import os_refused

ROOT = Path(__file__).resolve().parent.parent


def activity(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / ".activity").read_text().splitlines()]


def actions(folder: Path) -> list[tuple[str, list[str]]]:
    return [(entry["action"], entry["paths"]) for entry in activity(folder)]


def encfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "encfs", *args, "--store", str(store)], capture_output=True,
                          text=True, cwd=ROOT, timeout=60)


def test_each_action_is_one_line(mount: Mounted) -> None:
    f = mount.path / "F"
    f.mkdir()
    (f / "a.jpg").write_bytes(b"first")
    item = os.stat(f / "a.jpg").st_ino  # item ids are the inode numbers
    (f / "a.jpg").write_bytes(b"second")
    os.rename(f / "a.jpg", f / "b.jpg")
    os.chmod(f / "b.jpg", 0o600)
    (mount.path / ".datasets" / "D").mkdir()
    os.link(f / "b.jpg", mount.path / ".datasets" / "D" / "b.jpg")
    os.unlink(mount.path / ".datasets" / "D" / "b.jpg")
    (f / "sub").mkdir()
    os.unlink(f / "b.jpg")
    os_refused(errno.EILSEQ, lambda: os.open(bytes(f) + b"/caf\xe9.jpg", os.O_CREAT | os.O_WRONLY))
    shown = actions(f)
    assert shown == [
        ("upload", ["/F/a.jpg"]),
        ("write", ["/F/a.jpg"]),
        ("write", ["/F/a.jpg"]),
        ("rename", ["/F/a.jpg", "/F/b.jpg"]),
        ("access change", ["/F/b.jpg"]),
        ("Dataset link", ["/.datasets/D/b.jpg", "/F/b.jpg"]),
        ("Dataset unlink", ["/.datasets/D/b.jpg"]),
        ("new folder", ["/F/sub"]),
        ("delete", ["/F/b.jpg"]),
        ("refused attempt", ["/F/caf\\xe9.jpg"]),
    ], "\n".join(map(str, shown))
    entries = activity(f)
    assert {entry["user"] for entry in entries} == {f"uid:{os.getuid()}"}
    assert all(entry["item"] == item for entry in [*entries[:7], entries[8]])
    assert entries[-1]["operation"] == "create" and "UTF-8" in entries[-1]["reason"]
    assert [entry["seq"] for entry in entries] == sorted(entry["seq"] for entry in entries)


def test_moves_are_in_and_out_seen_from_each_folder(mount: Mounted) -> None:
    for name in ("A", "B", "A/deep"):
        (mount.path / name).mkdir()
    (mount.path / "A" / "deep" / "x.txt").write_bytes(b"x")
    os.rename(mount.path / "A" / "deep" / "x.txt", mount.path / "B" / "x.txt")
    move = ["/A/deep/x.txt", "/B/x.txt"]
    assert actions(mount.path / "A")[-1] == ("move out", move)
    assert actions(mount.path / "A" / "deep")[-1] == ("move out", move)
    assert actions(mount.path / "B")[-1] == ("move in", move)
    assert ("move", move) in actions(mount.path)  # both sides inside the root


def test_a_folder_shows_its_subfolders_changes_and_not_its_siblings(mount: Mounted) -> None:
    (mount.path / "F" / "sub" / "deeper").mkdir(parents=True)
    (mount.path / "G").mkdir()
    (mount.path / "F" / "sub" / "deeper" / "x.txt").write_bytes(b"x")
    (mount.path / "G" / "y.txt").write_bytes(b"y")
    assert ("upload", ["/F/sub/deeper/x.txt"]) in actions(mount.path / "F")
    assert all("/G/" not in path for _, paths in actions(mount.path / "F") for path in paths)
    assert actions(mount.path / "G") == [("upload", ["/G/y.txt"]), ("write", ["/G/y.txt"])]
    os.chmod(mount.path / "F" / "sub", 0o700)
    assert actions(mount.path / "F" / "sub")[-1] == ("access change", ["/F/sub"])  # its own change
    assert actions(mount.path / "F")[-1] == ("access change", ["/F/sub"])


def test_batch_is_one_line(mount: Mounted) -> None:
    frames = mount.path / "cams" / "views"
    frames.mkdir(parents=True)
    for n in range(2):
        (frames / f"f{n}.png").write_bytes(image_bytes("PNG"))
    done = subprocess.run(["setfattr", "-n", "user.encord.batch", "-v", "image_group", str(frames)],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert actions(mount.path / "cams")[-1] == ("batch", ["/cams/views"])


def test_the_activity_file_is_reachable_not_listed_and_not_a_name(mount: Mounted) -> None:
    (mount.path / "F").mkdir()
    (mount.path / "F" / "x.txt").write_bytes(b"x")
    assert os.listdir(mount.path / "F") == ["x.txt"]
    found = subprocess.run(["find", str(mount.path)], capture_output=True, text=True).stdout
    assert ".activity" not in found
    assert (mount.path / "F" / ".activity").stat().st_mode & 0o777 == 0o444
    os_refused(errno.EACCES, lambda: (mount.path / "F" / ".activity").write_text("x"))
    os_refused(errno.ENOENT, (mount.path / "missing" / ".activity").read_text)
    os_refused(errno.ENOTDIR, (mount.path / "F" / "x.txt" / ".activity").read_text)
    os_refused(errno.ENOENT, (mount.path / ".datasets" / ".activity").read_text)
    done = encfs(mount.store, "folder", "create", "/F/.activity")
    assert done.returncode != 0 and "reserved" in done.stderr, done.stderr
    assert os.listdir(mount.path / "F") == ["x.txt"]


def test_cli_text_json_and_since(mount: Mounted) -> None:
    (mount.path / "F").mkdir()
    (mount.path / "F" / "old.txt").write_bytes(b"old")
    time.sleep(0.05)
    middle = time.time_ns()
    time.sleep(0.05)
    (mount.path / "F" / "new.txt").write_bytes(b"new")
    text = encfs(mount.store, "activity", "/F")
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert len(lines) == 4 and " upload /F/old.txt (item " in lines[0] and f"uid:{os.getuid()}" in lines[0]
    as_json = encfs(mount.store, "activity", "/F", "--json")
    entries = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert entries == activity(mount.path / "F")
    assert set(entries[0]) == {"seq", "time", "user", "action", "paths", "item"}
    since = encfs(mount.store, "activity", "/F", "--json", "--since", iso_time(middle))
    assert [json.loads(line)["paths"] for line in since.stdout.splitlines()] == [["/F/new.txt"]] * 2
    recent = encfs(mount.store, "activity", str(mount.path / "F"), "--since", "1h")
    assert recent.stdout == text.stdout  # a path on the mount names the same folder
    assert encfs(mount.store, "activity", "/F", "--since", "2999-01-01T00:00:00Z").stdout == ""


def test_cli_refusals_are_clear(mount: Mounted) -> None:
    (mount.path / "F").mkdir()
    (mount.path / "F" / "x.txt").write_bytes(b"x")
    for args, phrase in ((["/missing"], "no such file or folder"), (["/F/x.txt"], "folders"),
                         (["/F", "--since", "yesterday"], "neither a time")):
        done = encfs(mount.store, "activity", *args)
        assert done.returncode != 0, done
        assert phrase in done.stderr and "Traceback" not in done.stderr, done.stderr


def test_follow_prints_changes_as_they_happen(mount: Mounted) -> None:
    (mount.path / "F").mkdir()
    (mount.path / "F" / "before.txt").write_bytes(b"b")
    follower = subprocess.Popen(
        [sys.executable, "-m", "encfs", "activity", "/F", "--follow", "--json", "--store", str(mount.store)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT)
    lines = Lines(follower)
    try:
        assert json.loads(lines.next(10.0))["paths"] == ["/F/before.txt"]
        lines.next(5.0)  # its write
        (mount.path / "G").mkdir()
        (mount.path / "G" / "elsewhere.txt").write_bytes(b"e")
        (mount.path / "F" / "after.txt").write_bytes(b"a")
        later = json.loads(lines.next(5.0))
        assert later["paths"] == ["/F/after.txt"] and later["action"] == "upload"
    finally:
        follower.terminate()
        follower.wait(timeout=10)
    assert follower.returncode == 0 and follower.stderr is not None
    assert b"Traceback" not in follower.stderr.read()


class Lines:
    """Lines of a process's output, each waited for at most a given time."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        self.fd = process.stdout.fileno()
        self.buffer = b""

    def next(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            ready, _, _ = select.select([self.fd], [], [], max(0.0, deadline - time.monotonic()))
            assert ready, "no activity line in time"
            chunk = os.read(self.fd, 65536)
            assert chunk, "the command ended"
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def test_grants_changed_are_access_changes_in_the_folders_activity(mount: Mounted) -> None:
    (mount / "Team").mkdir()
    assert encfs(mount.store, "user", "add", "ann@example.com", "--uid", "4242").returncode == 0
    assert encfs(mount.store, "access", "grant", "/Team", "ann@example.com", "viewer").returncode == 0
    (mount / "Team" / ".access").write_text("ann@example.com editor\n")  # root: admin everywhere
    assert encfs(mount.store, "access", "revoke", "/Team", "ann@example.com").returncode == 0
    assert [a for a in actions(mount / "Team") if a[0] == "access change"] == [
        ("access change", ["/Team"])] * 3
