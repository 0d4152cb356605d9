"""Folder access through a real mount, as real Linux users: a role x operation
matrix, the kernel's shared caches (names, attributes, pages) between users, the
`.access` file (read, write, editors' write-temp-and-rename), and the CLI."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from access_users import as_user, linux_users, runuser

from encfs.model import Actor
from encfs.store import init_store

from conftest import Mounted, start_mount, stop_mount
from media import image_bytes
from store_state import service_of

ROOT = Actor.from_ids(0, 0)


@dataclass
class Org:
    store: Path
    mount: Mounted
    alice: str  # Linux names; alice@example.com creates the folders (their admin)
    bob: str  # bob@example.com, given each role in turn
    carol: str  # carol@example.com, an org admin
    nobody: str  # a Linux user no encfs user maps

    def __truediv__(self, other: str) -> Path:
        return self.mount.path / other

    def encfs(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "encfs", *args, "--store", str(self.store)],
                              capture_output=True, text=True, timeout=60)

    def grant(self, folder: str, email: str, role: str) -> None:
        with service_of(self.store) as service:
            service.access_admin.grant(ROOT, folder, email, role)

    def revoke(self, folder: str, email: str) -> None:
        with service_of(self.store) as service:
            service.access_admin.revoke(ROOT, folder, email)


@pytest.fixture(scope="module")
def org() -> Iterator[Org]:
    base = Path(tempfile.mkdtemp(prefix="access-mount-", dir="/tmp"))
    base.chmod(0o755)  # the users must reach the mount point
    try:
        with linux_users(4) as (alice, bob, carol, nobody):
            store = init_store(base / "store")
            made = Org(store, None, alice, bob, carol, nobody)  # type: ignore[arg-type]
            with service_of(store) as service:
                for email, name in (("alice@example.com", alice), ("bob@example.com", bob),
                                    ("carol@example.com", carol)):
                    service.access_admin.add_user(ROOT, email, linux_user=name, org_admin=name == carol)
            made.mount = start_mount(store, base / "mnt")
            try:
                yield made
            finally:
                stop_mount(made.mount)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def listing(path: Path) -> Callable[[], Any]:
    return lambda: sorted(os.listdir(path))


def stat_of(path: Path) -> Callable[[], Any]:
    return lambda: os.stat(path).st_size


def read(path: Path) -> Callable[[], Any]:
    return lambda: path.read_text()


def write(path: Path, text: str, flags: int = os.O_WRONLY | os.O_TRUNC) -> Callable[[], Any]:
    def run() -> str:
        fd = os.open(path, flags, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
        return "ok"
    return run


def call(function: Callable[..., Any], *args: Any) -> Callable[[], Any]:
    def run() -> str:
        function(*args)
        return "ok"
    return run


def found_by_search(org: Org, folder: str) -> Callable[[], Any]:
    """ENOENT unless /.search/f.txt shows the folder's f.txt."""
    def run() -> str:
        links = org / ".search" / "f.txt"
        if not any(os.readlink(links / name).endswith(f"/{folder}/f.txt") for name in os.listdir(links)):
            raise FileNotFoundError(2, "not found by search")
        return "ok"
    return run


def errors_seen(org: Org, user: str) -> str:
    return as_user(user, read(org / ".encfs" / "errors"))


def made_by_alice(org: Org, folder: str, doomed: bool = False, images: bool = False) -> None:
    png = image_bytes("PNG") if images else b""

    def make() -> str:
        (org / folder).mkdir()
        (org / folder / "f.txt").write_text("data")
        (org / folder / "g.txt").write_text("more")
        if doomed:
            (org / folder / "d.txt").write_text("to delete")
        if images:
            (org / folder / "shots").mkdir()
            (org / folder / "shots" / "1.png").write_bytes(png)
        (org / folder / "empty").mkdir()
        (org / folder / "sub").mkdir()
        return "ok"
    assert as_user(org.alice, make) == "ok"


ROLES = ["none", "viewer", "editor", "admin", "org admin"]


def expected(role: str, needs: str) -> str:
    """What a user with `role` gets for an operation needing `needs`."""
    order = ["none", "viewer", "editor", "admin", "org admin"]
    if role == "none":
        return "EENOENT"
    return "ok" if order.index(role) >= order.index(needs) else "EEACCES"


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(org: Org, role: str) -> None:
    tag = role.replace(" ", "-")
    folder, other = f"M-{tag}", f"O-{tag}"
    made_by_alice(org, folder, doomed=True, images=True)
    made_by_alice(org, other)
    actor = org.carol if role == "org admin" else org.bob
    email = "carol@example.com" if role == "org admin" else "bob@example.com"
    if role in ("viewer", "editor", "admin"):
        org.grant(f"/{folder}", "bob@example.com", role)
    if role != "org admin":
        org.grant(f"/{other}", "bob@example.com", "editor")
    dataset = f"D-{tag}"
    assert as_user(actor, call(os.mkdir, org / ".datasets" / dataset)) == "ok"
    here, there = org / folder, org / other

    def got(function: Callable[[], Any]) -> str:
        result = as_user(actor, function)
        return result if isinstance(result, str) and result.startswith("E") else "ok"

    table = [
        ("list", listing(here), "viewer"),
        ("stat", stat_of(here / "f.txt"), "viewer"),
        ("read", read(here / "f.txt"), "viewer"),
        (".access read", read(here / ".access"), "viewer"),
        ("search", found_by_search(org, folder), "viewer"),
        ("ln into a Dataset", call(os.link, here / "f.txt", org / ".datasets" / dataset / "f"), "viewer"),
        ("write", write(here / "f.txt", "changed"), "editor"),
        ("create", write(here / "new.txt", "x", os.O_WRONLY | os.O_CREAT | os.O_EXCL), "editor"),
        ("setfattr", call(os.setxattr, here / "g.txt", "user.note", b"1"), "editor"),
        ("rename", call(os.rename, here / "g.txt", here / "h.txt"), "editor"),
        ("move out", call(os.rename, here / "f.txt", there / "f-moved.txt"), "editor"),
        ("move in", call(os.rename, there / "g.txt", here / "g-moved.txt"), "editor"),
        ("mkdir", call(os.mkdir, here / "made"), "editor"),
        ("rmdir", call(os.rmdir, here / "empty"), "editor"),
        ("batch", call(os.setxattr, here / "shots", "user.encord.batch", b"image_group"), "editor"),
        ("delete", call(os.unlink, here / "d.txt"), "editor"),
        (".access write", write(here / ".access", f"{email} admin\nalice@example.com admin\n"), "admin"),
    ]
    outcomes = {name: got(function) for name, function, _ in table}
    wanted = {name: expected(role, needs) for name, _, needs in table}
    assert outcomes == wanted
    if role == "viewer":
        assert "needs editor on the folder; bob@example.com has viewer there" in errors_seen(org, org.bob)
    if role == "none":
        assert folder not in as_user(actor, listing(org.mount.path))


def test_nobody_sees_an_empty_root_and_changes_nothing(org: Org) -> None:
    made_by_alice(org, "N")
    assert as_user(org.nobody, listing(org.mount.path)) == []
    assert as_user(org.nobody, call(os.mkdir, org / "Mine")) == "EEACCES"
    assert "is not a user of this organisation" in errors_seen(org, org.nobody)
    assert as_user(org.nobody, stat_of(org / "N" / "f.txt")) == "EENOENT"


def test_kernel_caches_do_not_leak_between_users(org: Org) -> None:
    made_by_alice(org, "Secret")
    secret = org / "Secret" / "f.txt"
    for _ in range(2):  # within the cache time, and again after it
        assert as_user(org.alice, stat_of(secret)) == 4
        assert as_user(org.bob, stat_of(secret)) == "EENOENT"
        assert as_user(org.alice, listing(org / "Secret")) == ["empty", "f.txt", "g.txt", "sub"]
        assert as_user(org.bob, listing(org / "Secret")) == "EENOENT"
        assert as_user(org.alice, read(secret)) == "data"
        assert as_user(org.bob, read(secret)) == "EENOENT"
        assert as_user(org.bob, write(secret, "x")) == "EENOENT"
        assert as_user(org.bob, listing(org.mount.path)).count("Secret") == 0
        assert as_user(org.alice, stat_of(secret)) == 4  # bob's miss is not cached for alice
        time.sleep(1.1)
    org.grant("/Secret", "bob@example.com", "viewer")
    assert as_user(org.bob, read(secret)) == "data"
    org.revoke("/Secret", "bob@example.com")
    assert as_user(org.bob, read(secret)) == "EENOENT"  # at once, though he just read it
    assert as_user(org.bob, stat_of(secret)) == "EENOENT"


def test_a_working_directory_inside_a_revoked_folder_reaches_nothing(org: Org) -> None:
    made_by_alice(org, "Cwd")
    org.grant("/Cwd", "bob@example.com", "viewer")

    def enter() -> Any:
        os.chdir(org / "Cwd")
        return sorted(os.listdir("."))

    assert as_user(org.bob, enter) == ["empty", "f.txt", "g.txt", "sub"]
    org.revoke("/Cwd", "bob@example.com")
    assert as_user(org.bob, enter) == "EENOENT"
    assert as_user(org.bob, read(org / "Cwd" / "sub" / ".." / "f.txt")) == "EENOENT"


def test_access_file_round_trip_and_refusals(org: Org) -> None:
    made_by_alice(org, "Acc")
    text = as_user(org.alice, read(org / "Acc" / ".access"))
    assert "alice@example.com admin\n" in text and "carol@example.com admin" in text
    assert ".access" not in as_user(org.alice, listing(org / "Acc"))
    new = "alice@example.com admin\nbob@example.com editor\n"
    assert as_user(org.alice, write(org / "Acc" / ".access", new)) == "ok"
    assert "bob@example.com editor\n" in as_user(org.bob, read(org / "Acc" / ".access"))
    for bad, errno_name in (("ghost@example.com viewer\n", "EEINVAL"), ("bob@example.com owner\n", "EEINVAL"),
                            ("carol@example.com viewer\n", "EEPERM"), ("x" * 70000, "EEINVAL"),
                            ("bob@example.com viewer\nbob@example.com editor\n", "EEINVAL")):
        assert as_user(org.alice, write(org / "Acc" / ".access", bad)) == errno_name
    assert "line 1: no user ghost@example.com" in errors_seen(org, org.alice)
    assert as_user(org.bob, write(org / "Acc" / ".access", "bob@example.com admin\n")) == "EEACCES"
    assert "bob@example.com editor\n" in as_user(org.alice, read(org / "Acc" / ".access"))

    def save_like_an_editor() -> Any:  # write a temporary file beside it, then rename it over
        temporary = org / "Acc" / ".access.tmp"
        temporary.write_text("alice@example.com admin\nbob@example.com viewer\n")
        os.rename(temporary, org / "Acc" / ".access")
        return sorted(os.listdir(org / "Acc"))

    assert as_user(org.alice, save_like_an_editor) == ["empty", "f.txt", "g.txt", "sub"]
    assert "bob@example.com viewer\n" in as_user(org.alice, read(org / "Acc" / ".access"))
    assert as_user(org.alice, call(os.unlink, org / "Acc" / ".access")) == "EEPERM"


def test_cli_as_a_user_and_real_runuser(org: Org) -> None:
    made_by_alice(org, "Cli")
    done = org.encfs("access", "grant", "/Cli", "bob@example.com", "admin", "--as", "bob@example.com")
    assert (done.returncode, done.stderr) == (2, "encfs: /Cli: no such file or folder\n")  # not his to know
    org.grant("/Cli", "bob@example.com", "viewer")
    assert "bob@example.com viewer" in org.encfs("access", "ls", "/Cli", "--as", "bob@example.com").stdout
    done = org.encfs("access", "grant", "/Cli", "bob@example.com", "admin", "--as", "bob@example.com")
    assert done.returncode == 1 and "needs admin on the folder; bob@example.com has viewer" in done.stderr
    done = org.encfs("user", "add", "eve@example.com", "--as", "bob@example.com")
    assert done.returncode == 1 and "for org admins and root" in done.stderr
    assert "Traceback" not in done.stderr
    listed = runuser(org.bob, "ls", str(org / "Cli"))
    assert listed.returncode == 0 and listed.stdout.split() == ["empty", "f.txt", "g.txt", "sub"]
    refused = runuser(org.bob, "touch", str(org / "Cli" / "new"))
    assert refused.returncode != 0 and "Permission denied" in refused.stderr


def test_append_to_access_and_groups_through_the_mount(org: Org) -> None:
    made_by_alice(org, "Grp")
    with service_of(org.store) as service:
        service.access_admin.add_group(ROOT, "readers")
        service.access_admin.change_members(ROOT, "readers", ["bob@example.com"], [])

    def append() -> str:
        with open(org / "Grp" / ".access", "a") as out:
            out.write("@readers viewer\n")
        return "ok"

    assert as_user(org.bob, listing(org / "Grp")) == "EENOENT"
    assert as_user(org.alice, append) == "ok"
    assert as_user(org.bob, listing(org / "Grp")) == ["empty", "f.txt", "g.txt", "sub"]
    assert "@readers viewer" in as_user(org.bob, read(org / "Grp" / ".access"))
    with service_of(org.store) as service:
        service.access_admin.change_members(ROOT, "readers", [], ["bob@example.com"])
    assert as_user(org.bob, listing(org / "Grp")) == "EENOENT"


def test_dataset_access_file_and_views(org: Org) -> None:
    made_by_alice(org, "Dv")
    assert as_user(org.alice, call(os.mkdir, org / ".datasets" / "Alices")) == "ok"
    linked = org / ".datasets" / "Alices" / "f.txt"
    assert as_user(org.alice, call(os.link, org / "Dv" / "f.txt", linked)) == "ok"
    assert as_user(org.bob, listing(org / ".datasets" / "Alices")) == "EENOENT"
    assert "Alices" not in as_user(org.bob, listing(org / ".datasets"))
    assert as_user(org.alice, write(org / ".datasets" / "Alices" / ".access",
                                    "alice@example.com admin\nbob@example.com viewer\n")) == "ok"
    assert as_user(org.bob, listing(org / ".datasets" / "Alices")) == []  # he may not view the folder Dv
    org.grant("/Dv", "bob@example.com", "viewer")
    assert as_user(org.bob, listing(org / ".datasets" / "Alices")) == ["f.txt"]
    linked_to = as_user(org.bob, lambda: os.getxattr(org / "Dv" / "f.txt", "user.encord.datasets").decode())
    assert linked_to == "Alices"
    assert as_user(org.bob, call(os.unlink, org / ".datasets" / "Alices" / "f.txt")) == "EEACCES"
    assert as_user(org.alice, write(org / ".datasets" / "Alices" / ".access", "bob@example.com editor\n")
                   ) == "EEINVAL"  # Datasets have viewers and admins


def test_a_mount_as_one_user(org: Org) -> None:
    made_by_alice(org, "Solo")
    made_by_alice(org, "NotBobs")
    org.grant("/Solo", "bob@example.com", "viewer")
    mountpoint = org.mount.path.parent / "solo"
    mountpoint.mkdir()
    output = org.mount.path.parent / "solo.out"
    with open(output, "wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "encfs", "mount", "--foreground", "--store",
                                    str(org.store), str(mountpoint), "--as", "bob@example.com"],
                                   stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    solo = Mounted(org.store, mountpoint, process, output)
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mountpoint):
            assert process.poll() is None and time.monotonic() < deadline, solo.log()
            time.sleep(0.05)
        assert "Solo" in as_user(org.bob, listing(mountpoint))
        assert "NotBobs" not in as_user(org.bob, listing(mountpoint))
        assert as_user(org.bob, read(mountpoint / "Solo" / "f.txt")) == "data"
        assert as_user(org.bob, write(mountpoint / "Solo" / "f.txt", "x")) == "EEACCES"
        assert as_user(org.alice, listing(mountpoint)) == "EEACCES"  # bob's mount, not hers
        assert sorted(os.listdir(mountpoint)) == as_user(org.bob, listing(mountpoint))  # root sees bob's view
    finally:
        stop_mount(solo)
    done = org.encfs("mount", str(mountpoint), "--as", "nobody@example.com")
    assert done.returncode != 0 and "no user nobody@example.com" in done.stderr


def test_tricks_never_reach_what_a_user_cannot_see(org: Org) -> None:
    made_by_alice(org, "Hidden")
    made_by_alice(org, "Shared")
    org.grant("/Shared", "bob@example.com", "editor")
    assert as_user(org.bob, call(os.mkdir, org / ".datasets" / "BobsOwn")) == "ok"
    hidden, shared = org / "Hidden", org / "Shared"
    assert as_user(org.bob, stat_of(shared / ".." / "Hidden" / "f.txt")) == "EENOENT"
    assert as_user(org.bob, call(os.link, hidden / "f.txt", org / ".datasets" / "BobsOwn" / "f")) == "EENOENT"
    assert as_user(org.bob, call(os.rename, shared / "g.txt", hidden / "g.txt")) == "EENOENT"
    assert as_user(org.bob, call(os.rename, hidden / "g.txt", shared / "stolen.txt")) == "EENOENT"
    assert as_user(org.bob, call(os.symlink, "../Hidden/f.txt", shared / "link")) == "ok"  # only text
    assert as_user(org.bob, read(shared / "link")) == "EENOENT"  # following it meets Hidden
    (hidden / "unique-secret-name.txt").write_text("x")  # as root
    assert as_user(org.bob, listing(org / ".search" / "unique-secret")) == []
    found = org / ".search" / "unique-secret" / "unique-secret-name.txt"
    assert as_user(org.bob, stat_of(found)) == "EENOENT"
    assert as_user(org.alice, listing(org / ".search" / "unique-secret")) == ["unique-secret-name.txt"]
    assert as_user(org.bob, read(hidden / ".access")) == "EENOENT"

    entry = pwd.getpwnam(org.bob)

    def become_bob() -> None:
        os.setgroups([])
        os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
        os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)

    sitter = subprocess.Popen(["sleep", "60"], cwd=shared, preexec_fn=become_bob)  # bob's process, in /Shared
    try:
        cwd = Path(f"/proc/{sitter.pid}/cwd")
        assert "f.txt" in as_user(org.bob, listing(cwd))
        org.revoke("/Shared", "bob@example.com")
        assert as_user(org.bob, listing(cwd)) == "EENOENT"
        assert as_user(org.bob, read(cwd / "f.txt")) == "EENOENT"
        assert as_user(org.bob, write(cwd / "new.txt", "x", os.O_WRONLY | os.O_CREAT)) == "EENOENT"
    finally:
        sitter.kill()
        sitter.wait()


def test_a_store_becomes_an_organisation_while_mounted(org: Org) -> None:
    base = Path(tempfile.mkdtemp(prefix="access-turn-", dir="/tmp"))
    base.chmod(0o755)
    try:
        store = init_store(base / "store")
        mounted = start_mount(store, base / "mnt")
        try:
            (mounted.path / "Plain").mkdir()
            (mounted.path / "Plain" / "f.txt").write_text("data")  # root's, 0644: others may read
            assert as_user(org.bob, read(mounted.path / "Plain" / "f.txt")) == "data"
            assert as_user(org.bob, write(mounted.path / "Plain" / "f.txt", "x")) == "EEACCES"  # modes
            with service_of(store) as service:
                service.access_admin.add_user(ROOT, "alice@example.com", linux_user=org.alice)
            deadline = time.monotonic() + 3
            while as_user(org.bob, stat_of(mounted.path / "Plain" / "f.txt")) != "EENOENT":
                assert time.monotonic() < deadline, "bob (no user) still sees the folder"
                time.sleep(0.1)
            assert as_user(org.bob, listing(mounted.path)) == []
            assert as_user(org.alice, listing(mounted.path)) == []  # root's folder: no grant for her
            with service_of(store) as service:
                service.access_admin.grant(ROOT, "/Plain", "alice@example.com", "editor")
            assert as_user(org.alice, write(mounted.path / "Plain" / "f.txt", "hers")) == "ok"
        finally:
            stop_mount(mounted)
    finally:
        shutil.rmtree(base, ignore_errors=True)
