"""Every `encfs` command, found from the click group (a new command is covered without
editing this file), run as a real process with bad inputs: a missing, wrong or damaged
store, paths that are missing, run through a file, are not UTF-8, empty or huge, bad
--metadata, unknown options. Each must end with a non-zero exit and a short plain
message on stderr: never a Python traceback, never death by a signal."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import pytest
from PIL import Image

import encfs
from encfs.cli import main
from encfs.meta.check import used_size

from damage import DAMAGED, break_page_headers, break_record, cut_short
from damage import encfs as run_encfs

MAX_MESSAGE_LINES = 5  # click's usage errors: "Usage", "Try --help", a blank line, "Error: ..."
HUGE = "x" * 5000  # past NAME_MAX and PATH_MAX
WORKERS = 3
REFUSED, DAMAGED_STORE, ANY = "refused", "damaged", "any"


def leaf_commands(group: click.Group = main, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                                                          click.Command]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from leaf_commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


COMMANDS = dict(leaf_commands())


def arguments_of(command: click.Command) -> list[click.Argument]:
    return [p for p in command.params if isinstance(p, click.Argument)]


def has_store(command: click.Command) -> bool:
    return any(p.name == "store_dir" for p in command.params)


LOCAL_ROLES = {"files", "images"}  # local files the command reads
NAME_ROLES = {"name", "new_name", "datasets", "query", "description"}  # text, not paths


class World:
    """A template store (/a with two images, /b empty, Dataset ds, Project pr) and local
    files; each run gets its own copy of the store, so a run changes nothing for the next."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.image = root / "local.png"
        Image.new("RGB", (8, 8), (200, 0, 0)).save(self.image)
        self.template = root / "template"
        for args in (("init",), ("folder", "create", "/a"), ("folder", "create", "/b"),
                     ("upload", "/a", self.image), ("mv", "/a/local.png", "/a/img0.png"),
                     ("upload", "/a", self.image), ("dataset", "create", "ds", "--add", "/a"),
                     ("project", "create", "pr", "--dataset", "ds")):
            done = run_encfs(*args, "--store", self.template)
            assert done.returncode == 0, done.stderr
        self.count = 0

    def fresh(self) -> Path:
        self.count += 1
        place = self.root / f"case{self.count}"
        place.mkdir()
        shutil.copytree(self.template, place / "store")
        (place / "mnt").mkdir()
        return place

    def plausible(self, argument: click.Argument, place: Path) -> list[str]:
        """A value that would be fine, so that the bad input under test is the only fault."""
        if argument.nargs == -1 and not argument.required:
            return []
        role = argument.name or ""
        if role in LOCAL_ROLES:
            return [str(self.image)]
        if role == "mountpoint":
            return [str(place / "mnt")]
        if role in NAME_ROLES:
            return ["ds"] if role in ("name", "datasets") else ["x"]
        return ["/a"]

    def bad_values(self, argument: click.Argument, place: Path) -> dict[str, str | bytes]:
        role = argument.name or ""
        local = role in LOCAL_ROLES or role == "mountpoint"
        return {
            "missing": str(place / "no-such-thing") if local else "/no/such/thing",
            "through a file": str(self.image / "sub") if local else "/a/img0.png/sub",
            "not UTF-8": os.fsencode(str(place)) + b"/\xff\xfe" if local else b"/a/\xff\xfe",
            "empty": "",
            "huge": HUGE if role in NAME_ROLES else "/" + HUGE,
        }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return World(tmp_path_factory.mktemp("bad-input"))


def store_cases(world: World, place: Path) -> dict[str, tuple[Path, str]]:
    """Bad stores: the --store value, and what must happen: REFUSED, DAMAGED (refused as
    damaged metadata), or ANY (a command that does not read the damaged record may work)."""
    a_file = place / "a-file"
    a_file.write_text("not a store\n")
    not_a_store = place / "not-a-store"
    not_a_store.mkdir()
    (not_a_store / "something").write_text("x")
    cut, flipped, pages = (world.fresh() / "store" for _ in range(3))
    cut_short(cut, used_size(cut / "meta.lmdb") // 2)
    break_record(flipped, b'"name":"img0.png"')
    break_page_headers(pages)
    return {
        "missing store": (place / "no-store", REFUSED), "store is a file": (a_file, REFUSED),
        "store path through a file": (a_file / "sub", REFUSED), "not a store": (not_a_store, REFUSED),
        "store in /proc": (Path("/proc/encfs-store"), REFUSED), "data.mdb cut short": (cut, DAMAGED_STORE),
        "pages damaged": (pages, DAMAGED_STORE), "record damaged": (flipped, ANY),
    }


def check(done: subprocess.CompletedProcess[bytes], case: str) -> list[str]:
    """What is wrong with how a bad input ended (nothing: an empty list)."""
    problems = []
    out, err = done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace")
    if done.returncode < 0:
        problems.append(f"{case}: killed by signal {-done.returncode}")
    elif done.returncode == 0:
        problems.append(f"{case}: exit 0")
    if "Traceback" in out + err:
        problems.append(f"{case}: traceback:\n{err[-1500:]}")
    elif not err.strip() or len(err.strip().splitlines()) > MAX_MESSAGE_LINES:
        problems.append(f"{case}: no short message on stderr: {err[-600:]!r}")
    try:
        done.stderr.decode()
    except UnicodeDecodeError:
        problems.append(f"{case}: stderr is not UTF-8 text: {err[-300:]!r}")
    if any(ord(c) < 32 and c not in "\n\t" for c in err):
        problems.append(f"{case}: control characters on stderr: {err[-300:]!r}")
    return problems


# (command, argument) pairs for which a bad-looking value is still a good input.
ANY_TEXT = {
    (("search",), "query"),  # searching for anything is fine: no match is an answer
    (("dataset", "describe"), "description"),  # a description is free text
    (("folder", "create"), "path") ,  # a new name: refused only if it cannot be one
    (("mv",), "target"), (("folder", "mv"), "target"),
}
# ...and which of the bad values each may accept
ACCEPTED = {"search": {"missing", "through a file", "not UTF-8", "huge"},
            "describe": {"missing", "through a file", "not UTF-8", "huge", "empty"},
            "create": {"missing"}, "mv": {"missing"}}


def may_succeed(words: tuple[str, ...], argument: str, case: str) -> bool:
    return (words, argument) in ANY_TEXT and case in ACCEPTED[words[-1]]


@pytest.mark.parametrize("words", list(COMMANDS), ids=[" ".join(w) for w in COMMANDS])
def test_every_command_fails_clearly_on_bad_input(world: World, words: tuple[str, ...]) -> None:
    command = COMMANDS[words]
    runs: list[tuple[str, list[str | bytes], bool, bool]] = []  # case, argv, damaged, may succeed
    place = world.fresh()
    arguments = arguments_of(command)
    good = {a.name: world.plausible(a, place) for a in arguments}
    store_args = ["--store", str(place / "store")] if has_store(command) else []

    def argv(replace: str | None = None, value: str | bytes = "") -> list[str | bytes]:
        values: list[str | bytes] = []
        for a in arguments:
            values += [value] if a.name == replace else good[a.name]
        return [*words, *values]

    if has_store(command):
        for case, (store, expected) in store_cases(world, place).items():
            if case == "missing store" and words == ("init",):
                continue  # init makes it
            if case == "record damaged" and words == ("mount",):
                continue  # it mounts (the record is read later): test_damaged_store covers that mount
            damaged = expected == DAMAGED_STORE and words != ("init",)  # init refuses any existing store
            runs.append((case, [*argv(), "--store", str(store)], damaged, expected == ANY))
    for a in arguments:
        for case, value in world.bad_values(a, place).items():
            runs.append((f"{a.name} {case}", [*argv(a.name, value), *store_args], False,
                         may_succeed(words, a.name or "", case)))
    runs.append(("unknown option", [*argv(), "--no-such-option", *store_args], False, False))
    if any(p.name == "metadata" for p in command.params):
        for case, text in (("not JSON", "{"), ("not an object", "[1]"), ("nested deep", "[" * 100_000),
                           ("huge number", "1" * 100_000)):
            runs.append((f"--metadata {case}", [*argv(), "--metadata", text, *store_args], False, False))

    def one(run: tuple[str, list[str | bytes], bool, bool]) -> list[str]:
        case, args, damaged, succeeds = run
        done = run_encfs(*args, stdin=subprocess.DEVNULL, cwd=place)
        problems = check(done, f"{' '.join(words)} [{case}]")
        if succeeds and done.returncode == 0:
            problems = [p for p in problems if not p.endswith("exit 0") and "no short message" not in p]
        if damaged and not problems and (done.returncode != 3 or DAMAGED not in done.stderr.decode()):
            problems.append(f"{case}: not refused as damaged metadata: {done.stderr!r}")
        return problems

    try:
        with ThreadPoolExecutor(WORKERS) as pool:
            problems = [p for found in pool.map(one, runs) for p in found]
    finally:
        if os.path.ismount(place / "mnt"):  # a bad input that mounted: take it down, and say so
            subprocess.run(["fusermount3", "-u", str(place / "mnt")], capture_output=True)
            problems = ["a bad input mounted the store"]
    assert not problems, "\n".join(problems)


def test_the_table_covers_every_command() -> None:
    assert {("ls",), ("init",), ("mount",), ("folder", "create"), ("dataset", "sync"),
            ("project", "ls")} <= set(COMMANDS)
    assert len(COMMANDS) >= 30


def test_init_refuses_a_file_a_path_through_a_file_and_proc(tmp_path: Path) -> None:
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for store, phrase in ((a_file, "is a file"), (a_file / "sub", "is a file, not a directory"),
                          (Path("/proc/encfs-store"), "cannot create a store at /proc/encfs-store")):
        done = run_encfs("init", "--store", store)
        err = done.stderr.decode()
        assert done.returncode == 3 and phrase in err and "Traceback" not in err, err
    assert a_file.read_text() == "x"


# ---------------------------------------------------------------- as a user who may not write


def python_for(user: str, deps: Path) -> tuple[str, str]:
    """(interpreter, extra PYTHONPATH) that `user` can run encfs with: this one if the
    user may run it, else the system's of the same version with encfs's dependencies
    copied where the user can read them."""
    probe = ["runuser", "-u", user, "--"]
    if subprocess.run([*probe, sys.executable, "-c", "import click, lmdb, platformdirs, xxhash"],
                      capture_output=True).returncode == 0:
        return sys.executable, ""
    system = shutil.which(f"python{sys.version_info.major}.{sys.version_info.minor}", path="/usr/bin:/bin")
    assert system, "no interpreter the test user may run: install python3 for all users"
    import click as click_module
    import lmdb
    import platformdirs
    import xxhash

    for module in (click_module, lmdb, platformdirs, xxhash):
        source = Path(module.__file__).parent  # type: ignore[arg-type]
        shutil.copytree(source, deps / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    return system, str(deps)


@pytest.fixture
def user() -> Iterator[tuple[str, Path]]:
    """A real non-root user and a directory it may read (not write), removed afterwards."""
    name = f"encfs-t{os.getpid() % 100000}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True, capture_output=True)
    shared = Path(tempfile.mkdtemp(prefix="encfs-user-"))
    try:
        shared.chmod(0o755)
        yield name, shared
    finally:
        shutil.rmtree(shared, ignore_errors=True)
        subprocess.run(["userdel", "-r", name], capture_output=True)


def test_a_user_who_may_not_write_gets_a_message(user: tuple[str, Path]) -> None:
    name, shared = user
    deps = shared / "deps"
    deps.mkdir()
    interpreter, extra = python_for(name, deps)
    worktree = str(Path(encfs.__file__).parents[1])
    home = pwd.getpwnam(name).pw_dir
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "ENCFS_STORE": f"{home}/store",
           "PYTHONPATH": os.pathsep.join(p for p in (worktree, extra) if p)}
    private = shared / "private"  # another user's store: not even readable
    assert run_encfs("init", "--store", private).returncode == 0
    private.chmod(0o700)
    readable = shared / "readable"  # readable, but its metadata cannot be locked by this user
    assert run_encfs("init", "--store", readable).returncode == 0
    subprocess.run(["chmod", "-R", "go+rX", str(readable)], check=True)  # stores are made private
    for args, phrase in ((("init", "--store", shared / "store"), "Permission denied"),
                         (("ls", "--store", private), "Permission denied"),
                         (("ls", "--store", readable), "cannot open the metadata"),
                         (("folder", "create", "/x", "--store", readable), "cannot open the metadata")):
        done = subprocess.run(["runuser", "-u", name, "--", "env", *(f"{k}={v}" for k, v in env.items()),
                               interpreter, "-m", "encfs", *map(str, args)], capture_output=True, timeout=60)
        err = done.stderr.decode(errors="replace")
        assert done.returncode == 3 and phrase in err and "Traceback" not in err, (args, err)
    assert not (shared / "store").exists()
