"""A root mount shared by several Linux users, before any organisation user exists:
a local disk for all of them (modes, owners, groups, sticky and setgid bits, checked
per caller), and their `encfs` commands, run through the mount with their identity.

The users are real (useradd), made for the module and removed after it."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from encfs.store import init_store

from conftest import Mounted, start_mount, stop_mount

REPOSITORY = Path(__file__).resolve().parents[1]
# A non-root user cannot run root's Python here; the forwarding client needs only the
# standard library, so the system's Python runs it.
USER_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int


@dataclass(frozen=True)
class People:
    alice: User
    bob: User
    carol: User
    team: str  # alice and bob are in it, carol is not
    team_gid: int


@pytest.fixture(scope="module")
def people() -> Iterator[People]:
    tag = uuid.uuid4().hex[:6]
    team = f"encfs-m-{tag}-team"
    names = [f"encfs-m-{tag}-{who}" for who in ("alice", "bob", "carol")]
    made: list[str] = []
    subprocess.run(["groupadd", team], check=True)
    try:
        for name in names:
            subprocess.run(["useradd", "-M", "-N", "-g", "users", "-s", "/bin/sh", name], check=True)
            made.append(name)
        for name in names[:2]:
            subprocess.run(["usermod", "-a", "-G", team, name], check=True)
        users = [User(n, pwd.getpwnam(n).pw_uid, pwd.getpwnam(n).pw_gid) for n in names]
        yield People(*users, team=team, team_gid=grp.getgrnam(team).gr_gid)
    finally:
        for name in made:
            subprocess.run(["userdel", name], capture_output=True)
        subprocess.run(["groupdel", team], capture_output=True)


@pytest.fixture
def shared(store: Path) -> Iterator[Mounted]:
    """A root mount every user can reach (pytest's own folders are private to root),
    with /shared a sticky folder open to all, like /tmp."""
    place = Path(tempfile.mkdtemp(prefix="encfs-mu-"))
    place.chmod(0o755)
    mounted = start_mount(store, place / "mnt")
    try:
        (mounted.path / "shared").mkdir()
        (mounted.path / "shared").chmod(0o1777)
        yield mounted
    finally:
        stop_mount(mounted)
        shutil.rmtree(place, ignore_errors=True)


def run_as(user: User, *command: str, umask: str = "022") -> subprocess.CompletedProcess[str]:
    """A shell command run by `user` with their groups (runuser starts a login's groups)."""
    script = f"umask {umask}; " + " ".join(_quote(part) for part in command)
    return subprocess.run(["runuser", "-u", user.name, "--", "sh", "-c", script], capture_output=True,
                          text=True, cwd="/", timeout=60)


def encfs_as(user: User, store: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    """`encfs ARGUMENTS --store STORE` run by `user` (no ENCFS_STORE of the test's)."""
    return subprocess.run(
        ["runuser", "-u", user.name, "--", "env", "-u", "ENCFS_STORE", f"PYTHONPATH={REPOSITORY}",
         USER_PYTHON, "-m", "encfs", *arguments, "--store", str(store)],
        capture_output=True, text=True, cwd="/", timeout=60)


def _quote(part: str) -> str:
    return "'" + part.replace("'", "'\\''") + "'"


def owner_of(path: Path) -> tuple[int, int, int]:
    info = os.stat(path)
    return info.st_uid, info.st_gid, info.st_mode & 0o7777


# ---------------------------------------------------------------- modes through the mount


def test_a_private_file_is_unreadable_by_another_user(shared: Mounted, people: People) -> None:
    secret = shared.path / "shared" / "secret.txt"
    assert run_as(people.alice, "sh", "-c", f"echo alice only > {secret}", umask="077").returncode == 0

    assert owner_of(secret) == (people.alice.uid, people.alice.gid, 0o600)
    assert run_as(people.alice, "cat", str(secret)).stdout == "alice only\n"
    refused = run_as(people.bob, "cat", str(secret))
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    assert run_as(people.bob, "sh", "-c", f"echo bob > {secret}").returncode != 0
    assert secret.read_text() == "alice only\n"


def test_a_private_folder_hides_its_files_even_just_after_its_owner_looked(shared: Mounted,
                                                                           people: People) -> None:
    """The kernel caches names and attributes for every user of the mount; its check
    is still per caller, so bob cannot ride on what alice's stat cached, neither just
    after it nor once the cache has expired."""
    home = shared.path / "shared" / "alice-home"
    assert run_as(people.alice, "mkdir", "-m", "700", str(home)).returncode == 0
    assert run_as(people.alice, "sh", "-c", f"echo x > {home}/plan.txt").returncode == 0
    for pause in (0, 0, 1.2):  # within the kernel's one-second caches, and after
        assert run_as(people.alice, "stat", f"{home}/plan.txt").returncode == 0
        time.sleep(pause)
        for command in (["stat", f"{home}/plan.txt"], ["ls", str(home)], ["cat", f"{home}/plan.txt"],
                        ["touch", f"{home}/new"]):
            refused = run_as(people.bob, *command)
            assert refused.returncode != 0 and "Permission denied" in refused.stderr, command
    assert sorted(os.listdir(home)) == ["plan.txt"]


def test_new_files_and_folders_belong_to_their_creator(shared: Mounted, people: People) -> None:
    folder = shared.path / "shared" / "bobs"
    assert run_as(people.bob, "mkdir", str(folder)).returncode == 0
    assert run_as(people.bob, "touch", f"{folder}/a.txt").returncode == 0

    assert owner_of(folder) == (people.bob.uid, people.bob.gid, 0o755)
    assert owner_of(folder / "a.txt") == (people.bob.uid, people.bob.gid, 0o644)
    listed = run_as(people.bob, "stat", "-c", "%U %G", f"{folder}/a.txt").stdout.split()
    assert listed == [people.bob.name, "users"]


def test_a_group_folder_lets_members_in_and_keeps_others_out(shared: Mounted, people: People) -> None:
    team = shared.path / "team"
    team.mkdir()
    os.chown(team, 0, people.team_gid)
    team.chmod(0o2770)

    assert run_as(people.alice, "sh", "-c", f"echo draft > {team}/notes.txt", umask="002").returncode == 0
    assert run_as(people.bob, "sh", "-c", f"echo edited >> {team}/notes.txt").returncode == 0
    assert (team / "notes.txt").read_text() == "draft\nedited\n"
    for command in (["ls", str(team)], ["touch", f"{team}/carol.txt"], ["cat", f"{team}/notes.txt"]):
        refused = run_as(people.carol, *command)
        assert refused.returncode != 0 and "Permission denied" in refused.stderr, command
    assert sorted(os.listdir(team)) == ["notes.txt"]


def test_a_setgid_folder_passes_its_group_and_bit_down(shared: Mounted, people: People) -> None:
    team = shared.path / "team"
    team.mkdir()
    os.chown(team, 0, people.team_gid)
    team.chmod(0o2775)

    assert run_as(people.alice, "mkdir", "-p", f"{team}/a/b").returncode == 0
    assert run_as(people.alice, "touch", f"{team}/a/b/file").returncode == 0

    assert owner_of(team / "a") == (people.alice.uid, people.team_gid, 0o2755)
    assert owner_of(team / "a" / "b") == (people.alice.uid, people.team_gid, 0o2755)
    assert owner_of(team / "a" / "b" / "file") == (people.alice.uid, people.team_gid, 0o644)
    assert run_as(people.alice, "touch", f"{shared.path}/shared/plain").returncode == 0
    assert owner_of(shared.path / "shared" / "plain")[:2] == (people.alice.uid, people.alice.gid)


def test_in_a_sticky_folder_only_the_owner_removes_or_renames(shared: Mounted, people: People) -> None:
    tmp = shared.path / "shared"
    assert run_as(people.alice, "sh", "-c", f"echo mine > {tmp}/alice.txt", umask="000").returncode == 0
    assert owner_of(tmp / "alice.txt")[2] == 0o666  # bob may write it, but not remove it

    for command in (["rm", "-f", f"{tmp}/alice.txt"], ["mv", f"{tmp}/alice.txt", f"{tmp}/bob.txt"]):
        refused = run_as(people.bob, *command)
        assert refused.returncode != 0 and "Operation not permitted" in refused.stderr, command
    assert run_as(people.bob, "sh", "-c", f"echo bob >> {tmp}/alice.txt").returncode == 0
    assert sorted(os.listdir(tmp)) == ["alice.txt"]
    assert run_as(people.alice, "mv", f"{tmp}/alice.txt", f"{tmp}/renamed.txt").returncode == 0
    assert run_as(people.alice, "rm", f"{tmp}/renamed.txt").returncode == 0
    assert os.listdir(tmp) == []


def test_only_root_gives_a_file_away(shared: Mounted, people: People) -> None:
    path = shared.path / "shared" / "a.txt"
    assert run_as(people.alice, "touch", str(path)).returncode == 0

    refused = run_as(people.alice, "chown", people.bob.name, str(path))
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
    refused = run_as(people.carol, "chgrp", people.team, str(path))
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
    assert owner_of(path)[:2] == (people.alice.uid, people.alice.gid)
    assert run_as(people.alice, "chgrp", people.team, str(path)).returncode == 0  # a group of hers
    assert owner_of(path)[:2] == (people.alice.uid, people.team_gid)
    os.chown(path, people.bob.uid, -1)
    assert owner_of(path)[:2] == (people.bob.uid, people.team_gid)


def test_only_the_owner_changes_modes_and_sets_times(shared: Mounted, people: People) -> None:
    path = shared.path / "shared" / "a.txt"
    assert run_as(people.alice, "touch", str(path), umask="000").returncode == 0

    refused = run_as(people.bob, "chmod", "600", str(path))
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
    assert owner_of(path)[2] == 0o666
    refused = run_as(people.bob, "touch", "-d", "2001-01-01", str(path))
    assert refused.returncode != 0 and "Operation not permitted" in refused.stderr
    assert time.gmtime(os.stat(path).st_mtime).tm_year != 2001
    assert run_as(people.bob, "touch", str(path)).returncode == 0  # "now": writing is enough
    assert run_as(people.alice, "touch", "-d", "2001-01-01", str(path)).returncode == 0
    assert time.gmtime(os.stat(path).st_mtime).tm_year == 2001
    assert run_as(people.alice, "chmod", "640", str(path)).returncode == 0
    assert owner_of(path)[2] == 0o640


def test_writing_or_giving_a_group_clears_setuid_and_setgid(shared: Mounted, people: People) -> None:
    tool = shared.path / "shared" / "tool"
    assert run_as(people.alice, "sh", "-c", f"echo '#!/bin/sh' > {tool} && chmod 6777 {tool}").returncode == 0
    assert owner_of(tool)[2] == 0o6777

    assert run_as(people.bob, "sh", "-c", f"echo 'echo hi' >> {tool}").returncode == 0
    assert owner_of(tool)[2] == 0o777
    assert run_as(people.alice, "chmod", "6755", str(tool)).returncode == 0
    assert run_as(people.alice, "chgrp", people.team, str(tool)).returncode == 0
    assert owner_of(tool)[2] & 0o6000 == 0


def test_access_answers_for_the_caller(shared: Mounted, people: People) -> None:
    path = shared.path / "shared" / "a.txt"
    assert run_as(people.alice, "touch", str(path), umask="022").returncode == 0
    assert run_as(people.alice, "test", "-w", str(path)).returncode == 0
    assert run_as(people.bob, "test", "-r", str(path)).returncode == 0
    assert run_as(people.bob, "test", "-w", str(path)).returncode != 0


def test_a_single_user_mount_serves_only_root(store: Path, people: People) -> None:
    place = Path(tempfile.mkdtemp(prefix="encfs-mu-"))
    place.chmod(0o755)
    mountpoint = place / "mnt"
    mountpoint.mkdir()
    process = subprocess.Popen(
        [sys.executable, "-m", "encfs", "mount", "--foreground", "--single-user", "--store", str(store),
         str(mountpoint)], cwd=REPOSITORY, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mounted = Mounted(store, mountpoint, process, place / "out")
    try:
        deadline = time.monotonic() + 20
        while not os.path.ismount(mountpoint) and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.05)
        (mountpoint / "root-only").mkdir()
        (mountpoint / "root-only").chmod(0o777)
        refused = run_as(people.alice, "ls", str(mountpoint))
        assert refused.returncode != 0 and "Permission denied" in refused.stderr
    finally:
        stop_mount(mounted)
        shutil.rmtree(place, ignore_errors=True)


# ---------------------------------------------------------------- a user's encfs commands


def test_a_users_commands_run_with_their_identity(shared: Mounted, people: People) -> None:
    created = encfs_as(people.alice, shared.store, "folder", "create", "/shared/reports")
    assert created.returncode == 0, created.stderr
    assert "created folder /shared/reports" in created.stdout
    assert owner_of(shared.path / "shared" / "reports") == (people.alice.uid, people.alice.gid, 0o755)

    (shared.path / "shared" / "reports" / "q1.txt").write_text("numbers\n")
    listed = encfs_as(people.bob, shared.store, "ls", "/shared/reports")
    assert listed.returncode == 0, listed.stderr
    assert "q1.txt" in listed.stdout
    info = encfs_as(people.bob, shared.store, "info", "/shared/reports")
    assert info.returncode == 0 and f"uid:{people.alice.uid}" in info.stdout


def test_a_path_inside_the_mount_names_the_file(shared: Mounted, people: People) -> None:
    (shared.path / "shared" / "x").mkdir()
    listed = encfs_as(people.bob, shared.store, "ls", str(shared.path / "shared"))
    assert listed.returncode == 0 and "x/" in listed.stdout


def test_a_users_command_is_refused_where_the_modes_refuse(shared: Mounted, people: People) -> None:
    private = shared.path / "private"
    private.mkdir(mode=0o700)
    (shared.path / "readonly").mkdir(mode=0o755)

    for arguments in (["folder", "create", "/private/x"], ["ls", "/private"],
                      ["folder", "create", "/readonly/x"], ["rm", "-r", "--yes", "/readonly"],
                      ["mv", "/readonly", "/shared/taken"]):
        refused = encfs_as(people.bob, shared.store, *arguments)
        assert refused.returncode == 1, arguments
        assert "permission denied" in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    assert sorted(os.listdir(shared.path)) == ["private", "readonly", "shared"]
    assert os.listdir(private) == [] and os.listdir(shared.path / "readonly") == []
    errors = run_as(people.bob, "cat", str(shared.path / ".encfs" / "errors")).stdout
    assert "mkdir /private" in errors and "permission denied" in errors
    assert "/private" not in (shared.path / ".encfs" / "errors").read_text()  # root's own list


def test_a_users_command_cannot_read_local_files_with_the_daemons_rights(shared: Mounted,
                                                                          people: People) -> None:
    refused = encfs_as(people.bob, shared.store, "upload", "/shared", "/etc/shadow")
    assert refused.returncode != 0 and "cannot read /etc/shadow: Permission denied" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert os.listdir(shared.path / "shared") == []


def test_a_users_upload_reads_their_files_with_their_rights(shared: Mounted, people: People) -> None:
    """The user's own command opens the files and passes the descriptors: what they may
    read is uploaded (as theirs), what they may not is refused before anything is sent."""
    place = Path(tempfile.mkdtemp(prefix="encfs-mu-up-"))
    try:
        place.chmod(0o755)
        own, alices = place / "bob-notes.txt", place / "alice-secret.txt"
        own.write_text("bob's notes\n")
        os.chown(own, people.bob.uid, people.bob.gid)
        own.chmod(0o600)  # root's daemon could read it anyway: only bob's command opens it
        alices.write_text("alice's secret\n")
        os.chown(alices, people.alice.uid, people.alice.gid)
        alices.chmod(0o600)
        done = encfs_as(people.bob, shared.store, "upload", "/shared", str(own))
        assert done.returncode == 0, done.stderr
        uploaded = shared.path / "shared" / "bob-notes.txt"
        assert uploaded.read_text() == "bob's notes\n"
        assert owner_of(uploaded)[:2] == (people.bob.uid, people.bob.gid)
        refused = encfs_as(people.bob, shared.store, "upload", "/shared", str(alices), str(own), "--replace")
        assert refused.returncode != 0 and f"cannot read {alices}: Permission denied" in refused.stderr
        assert sorted(os.listdir(shared.path / "shared")) == ["bob-notes.txt"]
        folder = encfs_as(people.bob, shared.store, "upload", "/shared", str(place))
        assert folder.returncode != 0 and "not local files" in folder.stderr
        assert "Traceback" not in folder.stderr
        private = shared.path / "private-up"
        private.mkdir(mode=0o755)
        into = encfs_as(people.bob, shared.store, "upload", "/private-up", str(own))
        assert into.returncode == 1 and "permission denied" in into.stderr, into.stderr
        assert os.listdir(private) == []
    finally:
        shutil.rmtree(place, ignore_errors=True)


def test_a_user_cannot_open_the_store_and_needs_a_running_mount(store: Path, people: People) -> None:
    assert os.stat(store).st_mode & 0o777 == 0o700
    refused = run_as(people.alice, "ls", str(store))
    assert refused.returncode != 0 and "Permission denied" in refused.stderr
    without_mount = encfs_as(people.alice, store, "ls", "/")
    assert without_mount.returncode != 0
    assert without_mount.returncode == 3 and "Permission denied" in without_mount.stderr
    assert "no mount of it is running" in without_mount.stderr and "Traceback" not in without_mount.stderr


def test_store_owner_commands_are_not_run_for_other_users(shared: Mounted, people: People) -> None:
    refused = encfs_as(people.alice, shared.store, "fsck")
    assert refused.returncode != 0 and "only for the store's owner" in refused.stderr


def test_a_users_own_store_is_used_directly(people: People) -> None:
    """A store the user can open is theirs: no mount is asked (their own encfs runs)."""
    place = Path(tempfile.mkdtemp(prefix="encfs-mu-"))
    place.chmod(0o755)
    try:
        own = init_store(place / "store")
        subprocess.run(["chown", "-R", f"{people.carol.uid}:{people.carol.gid}", str(own)], check=True)
        from encfs.remote import mount_for

        assert mount_for(["ls", "--store", str(own)]) is None  # root: always direct
        probe = subprocess.run(
            ["runuser", "-u", people.carol.name, "--", "env", f"PYTHONPATH={REPOSITORY}", USER_PYTHON, "-c",
             f"from encfs.remote import mount_for; print(mount_for(['ls', '--store', '{own}']))"],
            capture_output=True, text=True, cwd="/")
        assert probe.stdout.strip() == "None", probe.stderr
    finally:
        shutil.rmtree(place, ignore_errors=True)


def test_the_daemon_decides_who_asks_and_which_store(shared: Mounted, people: People) -> None:
    """A request made by hand (not by encfs's own client) still runs as the user the
    socket says, on the mount's own store, and never a command for the owner only."""
    (shared.path / "private").mkdir(mode=0o700)
    script = (
        "import sys; from pathlib import Path; from encfs.remote import RunningMount, run_through; "
        f"mount = RunningMount(Path('{shared.path}'), Path('/nowhere')); "
        "print('status', run_through(mount, sys.argv[1:]))"
    )

    def ask(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["runuser", "-u", people.bob.name, "--", "env", f"PYTHONPATH={REPOSITORY}",
                               USER_PYTHON, "-c", script, *argv], capture_output=True, text=True, cwd="/")

    fsck = ask("fsck", "--repair")
    assert "status 1" in fsck.stdout and "only for the store's owner" in fsck.stderr
    elsewhere = ask("ls", "/", "--store", "/nowhere")
    assert "status 0" in elsewhere.stdout and "shared/" in elsewhere.stdout
    private = ask("ls", "/private")
    assert "status 1" in private.stdout and "permission denied" in private.stderr


def test_search_shows_only_what_the_caller_could_find(shared: Mounted, people: People) -> None:
    hidden = shared.path / "shared" / "alice-home"
    assert run_as(people.alice, "mkdir", "-m", "700", str(hidden)).returncode == 0
    assert run_as(people.alice, "sh", "-c", f"echo x > {hidden}/quarterly-secret.txt").returncode == 0
    public = shared.path / "shared" / "quarterly-public.txt"
    assert run_as(people.alice, "sh", "-c", f"echo x > {public}").returncode == 0

    searched = shared.path / ".search" / "quarterly"
    assert run_as(people.alice, "ls", str(searched)).stdout.split() == ["quarterly-public.txt",
                                                                          "quarterly-secret.txt"]
    assert run_as(people.bob, "ls", str(searched)).stdout.split() == ["quarterly-public.txt"]
    by_cli = encfs_as(people.bob, shared.store, "search", "quarterly")
    assert "quarterly-public.txt" in by_cli.stdout and "secret" not in by_cli.stdout
    assert "secret" in encfs_as(people.alice, shared.store, "search", "quarterly").stdout


def test_a_users_commands_count_their_groups(shared: Mounted, people: People) -> None:
    team = shared.path / "team"
    team.mkdir()
    os.chown(team, 0, people.team_gid)
    team.chmod(0o2770)

    made = encfs_as(people.bob, shared.store, "folder", "create", "/team/plans")
    assert made.returncode == 0, made.stderr
    assert owner_of(team / "plans") == (people.bob.uid, people.team_gid, 0o2755)
    assert "plans/" in encfs_as(people.alice, shared.store, "ls", "/team").stdout
    refused = encfs_as(people.carol, shared.store, "ls", "/team")
    assert refused.returncode == 1 and "permission denied" in refused.stderr


def test_only_root_or_user_allow_other_serves_other_users(people: People) -> None:
    from test_cli_bad_input import python_for

    fuse_conf = Path("/etc/fuse.conf")
    lines = fuse_conf.read_text().splitlines() if fuse_conf.exists() else []
    assert "user_allow_other" not in [line.split("#")[0].strip() for line in lines], \
        "this test expects /etc/fuse.conf without user_allow_other"
    place = Path(tempfile.mkdtemp(prefix="encfs-mu-"))
    try:
        place.chmod(0o777)
        deps = place / "deps"
        deps.mkdir()
        interpreter, extra = python_for(people.carol.name, deps)
        env = [f"PYTHONPATH={REPOSITORY}{os.pathsep + extra if extra else ''}", "HOME=/nonexistent"]
        as_carol = ["runuser", "-u", people.carol.name, "--", "env", *env, interpreter, "-m", "encfs"]
        store, mountpoint = place / "carol-store", place / "mnt"
        assert subprocess.run([*as_carol, "init", "--store", str(store)], capture_output=True).returncode == 0
        run_as(people.carol, "mkdir", str(mountpoint))
        refused = subprocess.run([*as_carol, "mount", "--multi-user", "--store", str(store), str(mountpoint)],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 3 and "user_allow_other" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr and not os.path.ismount(mountpoint)
    finally:
        shutil.rmtree(place, ignore_errors=True)


# ---------------------------------------------------------------- the rules, without a mount


def test_the_rules_read_modes_as_the_kernel_does() -> None:
    from encfs.model import Attributes, Folder
    from encfs.posix import READ, SEARCH, WRITE, Credentials, may, may_remove, new_ownership

    def attrs(mode: int, uid: int, gid: int) -> Attributes:
        return Attributes(1, mode, uid, gid, 0, 0, 0, 0, 1)

    alice, bob = Credentials(1000, 100, frozenset({500})), Credentials(1001, 100)
    root = Credentials(0, 0)
    private, team = attrs(0o100600, 1000, 100), attrs(0o040770, 0, 500)
    assert may(alice, private, READ | WRITE) and not may(bob, private, READ)
    assert may(alice, team, WRITE | SEARCH) and not may(bob, team, SEARCH)
    assert may(root, private, READ | WRITE) and not may(root, private, SEARCH)  # x on no one's file
    sticky = attrs(0o041777, 0, 0)
    assert may_remove(alice, sticky, private) and not may_remove(bob, sticky, private)
    assert may_remove(root, sticky, private)
    owner_only = attrs(0o100400, 1000, 100)
    assert may(bob, owner_only, 0) and not may(alice, owner_only, WRITE)  # the owner's bits, not others'

    def folder(mode: int, gid: int) -> Folder:
        return Folder(id=2, parent=1, name="f", mode=mode, uid=0, gid=gid, owner="", created_ns=0,
                      mtime_ns=0, ctime_ns=0, atime_ns=0)

    from encfs.model import Actor

    actor = Actor.from_ids(1000, 100)
    assert new_ownership(actor, folder(0o040755, 0), 0o040755) == (1000, 100, 0o040755)
    assert new_ownership(actor, folder(0o042775, 500), 0o040755) == (1000, 500, 0o042755)
    assert new_ownership(actor, folder(0o042775, 500), 0o100644) == (1000, 500, 0o100644)


def test_a_killed_daemons_socket_is_cleared_by_the_next_mount(store: Path, tmp_path: Path) -> None:
    from encfs.remote import socket_path

    place = Path(tempfile.mkdtemp(prefix="encfs-mu-"))
    try:
        first = start_mount(store, place / "first")
        left = socket_path(first.path)
        assert left.exists()
        first.process.kill()
        stop_mount(first)
        assert left.exists()  # nobody removed it
        second = start_mount(init_store(tmp_path / "other"), place / "second")
        try:
            assert not left.exists() and socket_path(second.path).exists()
        finally:
            stop_mount(second)
        assert not socket_path(second.path).exists()  # a clean stop removes its own
    finally:
        shutil.rmtree(place, ignore_errors=True)


def test_a_users_dataset_commands_follow_the_modes(shared: Mounted, people: People) -> None:
    """/.datasets is root's and each Dataset its creator's (0755), as on the mount; a
    Dataset's files are listed to a user only where their folders let them reach."""
    for folder, mode in (("alice-private", 0o700), ("alice-public", 0o755)):
        (shared.path / folder).mkdir()
        os.chown(shared.path / folder, people.alice.uid, people.alice.gid)
        (shared.path / folder).chmod(mode)
        (shared.path / folder / "data.txt").write_text(f"{folder}\n")
        os.chown(shared.path / folder / "data.txt", people.alice.uid, people.alice.gid)
    (shared.path / ".datasets" / "D").mkdir()
    made = encfs_as(people.bob, shared.store, "dataset", "create", "Bobs")
    assert made.returncode == 1 and "permission denied" in made.stderr and "Traceback" not in made.stderr
    for folder in ("alice-private", "alice-public"):
        os.link(shared.path / folder / "data.txt", shared.path / ".datasets" / "D" / f"{folder}.txt")
    listed = encfs_as(people.bob, shared.store, "dataset", "ls", "D")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.split() == ["alice-public.txt", "/alice-public/data.txt"]
    assert "alice-private" in encfs_as(people.alice, shared.store, "dataset", "ls", "D").stdout
    added = encfs_as(people.bob, shared.store, "dataset", "add", "D", "/alice-public/data.txt")
    assert added.returncode == 1 and "permission denied" in added.stderr  # D is root's
    assert sorted(os.listdir(shared.path / ".datasets")) == ["D"]
    assert sorted(os.listdir(shared.path / ".datasets" / "D")) == ["alice-private.txt", "alice-public.txt"]
