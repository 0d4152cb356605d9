"""The `encfs` command line, in-process through click's CliRunner and as a real process
(`python -m encfs` and the `encfs` entry point), over a real store, with and without a
mount of that store."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from PIL import Image

from encfs.cli import main
from encfs.store import MARKER

from store_state import explain, poll, refused, service_of, sha, snapshot

MOUNT_SECONDS = 20.0
EMPTY_STORE = {"tree": {}, "blobs": [], "spool": [], "datasets": {}, "projects": {}}


# ---------------------------------------------------------------- helpers


def cli(*args: str | os.PathLike[str], store: Path | None = None) -> Result:
    """Run the CLI in-process; `store` adds --store (else $ENCFS_STORE applies)."""
    argv = [str(a) for a in args]
    if store is not None:
        argv += ["--store", str(store)]
    return CliRunner().invoke(main, argv)


def run(*args: str | os.PathLike[str], store: Path | None = None, env: dict[str, str] | None = None,
        cwd: Path | None = None, program: list[str] | None = None,
        timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a real process (`python -m encfs` unless `program` is given)."""
    argv = [*(program or [sys.executable, "-m", "encfs"]), *(str(a) for a in args)]
    if store is not None:
        argv += ["--store", str(store)]
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(argv, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout)


def entry_point() -> list[str]:
    script = Path(sysconfig.get_path("scripts")) / "encfs"
    assert script.is_file(), f"the encfs entry point is not installed at {script}"
    return [str(script)]


def ok(result: Result) -> Result:
    assert result.exit_code == 0, explain(result)
    return result


def make_png(path: Path, width: int = 40, height: int = 30, colour: str = "red") -> Path:
    Image.new("RGB", (width, height), colour).save(path, format="PNG")
    return path



def info_json(path: str, store: Path | None = None) -> dict[str, Any]:
    return json.loads(ok(cli("info", "--json", path, store=store)).stdout)


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture
def env_store(store: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The fixture store, given through $ENCFS_STORE; the cwd holds no Files names."""
    monkeypatch.setenv("ENCFS_STORE", str(store))
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return store


@pytest.fixture
def local(tmp_path: Path) -> Path:
    """A local directory for files to upload."""
    path = tmp_path / "local"
    path.mkdir()
    return path


def pid_alive(pid: int) -> bool:
    """True while the process runs (a zombie nobody reaps counts as stopped)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    state = re.search(r"^State:\s+(\w)", status, re.M)
    return state is not None and state.group(1) not in ("Z", "X")


def mounted_at(path: Path) -> bool:
    target = os.path.abspath(path)
    with open("/proc/mounts") as mounts:
        return os.path.ismount(path) or any(line.split()[1] == target for line in mounts)


# ---------------------------------------------------------------- init


def test_init_with_store_option_creates_an_empty_store(tmp_path: Path) -> None:
    target = tmp_path / "new-store"
    result = ok(cli("init", store=target))
    assert str(target) in result.stdout
    assert (target / MARKER).is_file()
    assert ok(cli("ls", store=target)).stdout == ""
    assert snapshot(target) == EMPTY_STORE


def test_init_with_env_var_as_a_process(tmp_path: Path) -> None:
    target = tmp_path / "env-store"
    done = run("init", env={"ENCFS_STORE": str(target)})
    assert done.returncode == 0, explain(done)
    assert "created store" in done.stdout
    assert (target / MARKER).is_file()
    listed = run("folder", "list", env={"ENCFS_STORE": str(target)})
    assert listed.returncode == 0, explain(listed)
    assert listed.stdout == ""


def test_store_option_wins_over_env_var(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    ok(cli("init", store=first))
    ok(cli("init", store=second))
    monkeypatch.setenv("ENCFS_STORE", str(first))
    ok(cli("folder", "create", "only-in-second", store=second))
    assert ok(cli("folder", "list")).stdout == ""
    assert ok(cli("folder", "list", store=second)).stdout.strip() == "only-in-second/"


def test_init_on_an_existing_store_is_refused(store: Path) -> None:
    with service_of(store) as service:
        store_id = service.store.store_id
    ok(cli("folder", "create", "keep", store=store))
    before = snapshot(store)
    refused(cli("init", store=store), str(store), "already an encfs store", code=3)
    with service_of(store) as service:
        assert service.store.store_id == store_id
    assert snapshot(store) == before


def test_init_on_a_non_empty_directory_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    done = run("init", store=target)
    assert done.returncode == 3, explain(done)
    assert "not empty" in done.stderr and str(target) in done.stderr, explain(done)
    assert "Traceback" not in done.stderr
    assert sorted(os.listdir(target)) == ["notes.txt"]
    assert (target / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- folders


def test_folder_create_with_description_and_metadata(env_store: Path) -> None:
    result = ok(cli("folder", "create", "scans", "--description", "CT scans",
                    "--metadata", '{"site": "north", "n": 3}'))
    assert "created folder /scans" in result.stdout
    details = info_json("/scans")
    assert details["type"] == "folder"
    assert details["description"] == "CT scans"
    assert details["client_metadata"] == {"site": "north", "n": 3}
    assert ok(cli("folder", "list")).stdout.splitlines() == ["scans/  CT scans"]


def test_folder_create_nested_and_with_parents(env_store: Path) -> None:
    ok(cli("folder", "create", "a"))
    ok(cli("folder", "create", "/a/b/"))
    ok(cli("folder", "create", "-p", "x/y/z"))
    assert ok(cli("folder", "list")).stdout.splitlines() == ["a/", "x/"]
    assert ok(cli("folder", "list", "a")).stdout.splitlines() == ["b/"]
    assert ok(cli("folder", "list", "/x/y")).stdout.splitlines() == ["z/"]
    refused(cli("folder", "create", "a"), "/a", "exists")
    refused(cli("folder", "create", "missing/child"), "/missing", "no such file or folder")
    assert sorted(snapshot(env_store)["tree"]) == ["/a", "/a/b", "/x", "/x/y", "/x/y/z"]


@pytest.mark.parametrize(("metadata", "phrase"), [
    ("{not json", "not JSON"),
    ('{"a": 1', "not JSON"),
    ("[1, 2]", "must be a JSON object"),
    ('"text"', "must be a JSON object"),
    ("42", "must be a JSON object"),
])
def test_folder_create_refuses_bad_metadata(env_store: Path, metadata: str, phrase: str) -> None:
    before = snapshot(env_store)
    result = refused(cli("folder", "create", "scans", "--metadata", metadata), phrase, "--metadata")
    assert result.exit_code == 2
    assert snapshot(env_store) == before
    assert ok(cli("folder", "list")).stdout == ""


def test_folder_list_shows_folders_only(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "data"))
    ok(cli("folder", "create", "data/sub", "--description", "inner"))
    ok(cli("upload", "data", make_png(local / "a.png")))
    assert ok(cli("folder", "list", "data")).stdout.splitlines() == ["sub/  inner"]
    assert ok(cli("folder", "list", "/")).stdout.splitlines() == ["data/"]
    refused(cli("folder", "list", "data/a.png"), "not a folder")
    refused(cli("folder", "list", "nowhere"), "/nowhere", "no such file or folder")


def test_folder_rm_empty_non_empty_and_recursive(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "empty"))
    assert "removed folder /empty" in ok(cli("folder", "rm", "empty")).stdout
    ok(cli("folder", "create", "full"))
    ok(cli("folder", "create", "full/inner"))
    (local / "one.txt").write_text("one")
    (local / "two.txt").write_text("two")
    ok(cli("upload", "full", local / "one.txt"))
    ok(cli("upload", "full/inner", local / "two.txt"))
    before = snapshot(env_store)

    refused(cli("folder", "rm", "full"), "/full", "not empty")
    assert snapshot(env_store) == before

    refused(cli("folder", "rm", "full/one.txt"), "not a folder")
    assert snapshot(env_store) == before

    result = ok(cli("folder", "rm", "--recursive", "full"))
    assert "removed folder /full and 2 files" in result.stdout
    after = snapshot(env_store)
    assert after["tree"] == {}
    assert after["blobs"] == []  # no longer referenced: deleted


def test_folder_mv_rename_and_move_into(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "a"))
    ok(cli("folder", "create", "b"))
    ok(cli("upload", "a", make_png(local / "p.png")))
    result = ok(cli("folder", "mv", "a", "renamed"))
    assert "/a -> /renamed" in result.stdout
    result = ok(cli("folder", "mv", "renamed", "b"))  # an existing folder receives it
    assert "/renamed -> /b/renamed" in result.stdout
    assert sorted(snapshot(env_store)["tree"]) == ["/b", "/b/renamed", "/b/renamed/p.png"]
    assert info_json("/b/renamed/p.png")["kind"] == "image"
    before = snapshot(env_store)
    refused(cli("folder", "mv", "b/renamed/p.png", "b/x"), "not a folder")
    refused(cli("folder", "mv", "nowhere", "b"), "/nowhere", "no such file or folder")
    assert snapshot(env_store) == before


# ---------------------------------------------------------------- upload


def test_upload_many_files_with_progress(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "data"))
    files: dict[str, bytes] = {}
    for i in range(12):
        path = local / f"text-{i:02}.txt"
        path.write_text(f"line {i}\n" * (i + 1))
        files[path.name] = path.read_bytes()
    for i, colour in enumerate(("red", "green", "blue")):
        path = make_png(local / f"image-{i}.png", 20 + i, 10 + i, colour)
        files[path.name] = path.read_bytes()
    raw = local / "blob.bin"
    raw.write_bytes(os.urandom(300_000) + b"\x00")
    files[raw.name] = raw.read_bytes()

    result = ok(cli("upload", "data", *sorted(local.iterdir())))
    assert f"uploading {len(files)} files" in result.stderr  # the progress bar, on stderr
    assert f"uploaded {len(files)} files" in result.stdout
    assert "uploading" not in result.stdout

    assert sorted(ok(cli("ls", "data")).stdout.splitlines()) == sorted(files)
    for name, data in files.items():
        details = info_json(f"/data/{name}")
        assert details["size"] == len(data), name
        assert details["sha256"] == sha(data), name
        blob = env_store / "blobs" / details["sha256"][:2] / details["sha256"][2:]
        assert blob.read_bytes() == data, name
        expected = "image" if name.endswith(".png") else "text" if name.endswith(".txt") else "other"
        assert details["kind"] == expected, name
    assert info_json("/data/image-2.png")["width"] == 22
    assert snapshot(env_store)["spool"] == []


def test_upload_as_a_process_shows_progress_on_stderr(store: Path, local: Path) -> None:
    ok(cli("folder", "create", "data", store=store))
    paths = [make_png(local / f"p{i}.png", 10 + i, 10) for i in range(3)]
    done = run("upload", "/data", *paths, env={"ENCFS_STORE": str(store)})
    assert done.returncode == 0, explain(done)
    assert "uploading 3 files" in done.stderr
    assert "uploaded 3 files" in done.stdout
    assert ok(cli("ls", "/data", store=store)).stdout.splitlines() == ["p0.png", "p1.png", "p2.png"]


def test_upload_replace_gives_new_content(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "data"))
    path = local / "notes.txt"
    path.write_text("first")
    ok(cli("upload", "data", path))
    path.write_text("second version")
    before = snapshot(env_store)
    refused(cli("upload", "data", path), "/data/notes.txt", "exists")
    assert snapshot(env_store) == before
    ok(cli("upload", "--replace", "data", path))
    assert info_json("/data/notes.txt")["sha256"] == sha(b"second version")
    assert len(snapshot(env_store)["blobs"]) == 1  # the first version's blob is gone


def test_upload_into_the_root_is_refused(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "data"))
    before = snapshot(env_store)
    refused(cli("upload", "/", make_png(local / "a.png")), "root")
    assert snapshot(env_store) == before
    assert ok(cli("ls", "/")).stdout.splitlines() == ["data/"]


def test_upload_into_a_missing_folder_or_a_file_is_refused(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "data"))
    ok(cli("upload", "data", make_png(local / "a.png")))
    before = snapshot(env_store)
    refused(cli("upload", "nowhere", local / "a.png"), "/nowhere", "no such file or folder")
    refused(cli("upload", "data/a.png", local / "a.png"), "/data/a.png", "not a folder")
    assert snapshot(env_store) == before


def test_upload_of_a_missing_local_file_stores_nothing(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "data"))
    good = make_png(local / "good.png")
    missing = local / "missing.png"
    before = snapshot(env_store)
    result = refused(cli("upload", "data", good, missing), str(missing))
    assert result.exit_code != 0
    refused(cli("upload", "data", local), str(local))  # a directory is not a file either
    assert snapshot(env_store) == before
    assert ok(cli("ls", "data")).stdout == ""


def test_upload_with_a_name_conflict_stores_nothing(env_store: Path, local: Path) -> None:
    """One name among many already exists (no --replace): refused before anything is stored."""
    ok(cli("folder", "create", "data"))
    (local / "taken.txt").write_text("old")
    ok(cli("upload", "data", local / "taken.txt"))
    fresh = [make_png(local / f"fresh-{i}.png", 5 + i, 5) for i in range(3)]
    (local / "taken.txt").write_text("new")
    before = snapshot(env_store)
    refused(cli("upload", "data", *fresh, local / "taken.txt"), "/data/taken.txt", "exists")
    assert snapshot(env_store) == before
    assert ok(cli("ls", "data")).stdout.splitlines() == ["taken.txt"]


# ---------------------------------------------------------------- ls, info, search


def test_ls_and_ls_long(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "data"))
    ok(cli("folder", "create", "data/sub"))
    png = make_png(local / "a.png")
    text = local / "b.txt"
    text.write_text("hello\n")
    ok(cli("upload", "data", png, text))
    assert ok(cli("ls")).stdout.splitlines() == ["data/"]
    assert ok(cli("ls", "/data")).stdout.splitlines() == ["a.png", "b.txt", "sub/"]
    assert ok(cli("ls", "data/a.png")).stdout.splitlines() == ["a.png"]

    long = ok(cli("ls", "-l", "data")).stdout.splitlines()
    when = r"\d{4}-\d\d-\d\d \d\d:\d\d"
    assert len(long) == 3
    assert re.fullmatch(rf"image\s+{png.stat().st_size}\s+{when}\s+a\.png", long[0]), long
    assert re.fullmatch(rf"text\s+6\s+{when}\s+b\.txt", long[1]), long
    assert re.fullmatch(rf"folder\s+-\s+{when}\s+sub/", long[2]), long
    assert ok(cli("ls", "--long", "data")).stdout.splitlines() == long
    refused(cli("ls", "nowhere"), "/nowhere", "no such file or folder", code=2)


def test_info_text_and_json_for_an_image(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "data"))
    png = make_png(local / "photo.png", 64, 48)
    ok(cli("upload", "data", png))

    details = info_json("data/photo.png")
    assert details["type"] == "file"
    assert details["kind"] == "image"
    assert details["mime"] == "image/png"
    assert (details["width"], details["height"]) == (64, 48)
    assert details["size"] == png.stat().st_size
    assert details["sha256"] == sha(png.read_bytes())
    assert details["path"] == "/data/photo.png"
    assert details["name"] == "photo.png"

    text = ok(cli("info", "/data/photo.png")).stdout
    fields = dict(re.split(r":\s+", line, maxsplit=1) for line in text.splitlines())
    assert fields["kind"] == "image"
    assert fields["mime"] == "image/png"
    assert fields["width"] == "64"
    assert fields["height"] == "48"
    assert fields["path"] == "/data/photo.png"

    folder = info_json("data")
    assert folder["type"] == "folder"
    assert folder["files"] == 1
    refused(cli("info", "data/nope.png"), "/data/nope.png", "no such file or folder", code=2)


def test_search_by_name_and_kind(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "a"))
    ok(cli("folder", "create", "b"))
    (local / "cat-notes.txt").write_text("about cats")
    ok(cli("upload", "a", make_png(local / "Cat.png"), local / "cat-notes.txt",
           make_png(local / "dog.png"), make_png(local / "bobcat.png")))
    ok(cli("upload", "b", local / "Cat.png"))

    assert ok(cli("search", "cat")).stdout.splitlines() == [
        "/a/Cat.png", "/a/bobcat.png", "/a/cat-notes.txt", "/b/Cat.png",
    ]
    assert ok(cli("search", "CAT", "--kind", "image")).stdout.splitlines() == [
        "/a/Cat.png", "/a/bobcat.png", "/b/Cat.png",
    ]
    assert ok(cli("search", "cat", "--kind", "text")).stdout.splitlines() == ["/a/cat-notes.txt"]
    hits = [json.loads(line) for line in ok(cli("search", "dog", "--json")).stdout.splitlines()]
    assert hits == [{"path": "/a/dog.png", "kind": "image", "size": (local / "dog.png").stat().st_size}]

    none = ok(cli("search", "zebra"))
    assert none.stdout == ""
    assert "no files match 'zebra'" in none.stderr
    refused(cli("search", "cat", "--kind", "spaceship"), "spaceship")
    refused(cli("search", ""), "give some text")

    done = run("search", "cat", "--kind", "image", env={"ENCFS_STORE": str(env_store)})
    assert done.returncode == 0, explain(done)
    assert done.stdout.splitlines() == ["/a/Cat.png", "/a/bobcat.png", "/b/Cat.png"]


# ---------------------------------------------------------------- rm, mv, errors


def test_rm_files_and_folders(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "data"))
    ok(cli("folder", "create", "data/sub"))
    (local / "a.txt").write_text("a")
    (local / "b.txt").write_text("b")
    (local / "c.txt").write_text("c")
    ok(cli("upload", "data", local / "a.txt", local / "b.txt"))
    ok(cli("upload", "data/sub", local / "c.txt"))

    assert "removed /data/a.txt" in ok(cli("rm", "data/a.txt")).stdout
    assert ok(cli("ls", "data")).stdout.splitlines() == ["b.txt", "sub/"]
    assert sha(b"a") not in snapshot(env_store)["blobs"]

    before = snapshot(env_store)
    refused(cli("rm", "data/sub"), "/data/sub", "-r")
    refused(cli("rm", "data/nothing.txt"), "/data/nothing.txt", "no such file or folder")
    assert snapshot(env_store) == before

    ok(cli("rm", "-r", "data/sub"))
    assert ok(cli("ls", "data")).stdout.splitlines() == ["b.txt"]
    ok(cli("rm", "--recursive", "data"))
    assert snapshot(env_store) == EMPTY_STORE


def test_mv_file_into_folder_and_rename(env_store: Path, local: Path) -> None:
    ok(cli("folder", "create", "in"))
    ok(cli("folder", "create", "out"))
    png = make_png(local / "a.png")
    ok(cli("upload", "in", png))

    assert "/in/a.png -> /out/a.png" in ok(cli("mv", "in/a.png", "out")).stdout
    assert "/out/a.png -> /out/b.png" in ok(cli("mv", "/out/a.png", "/out/b.png")).stdout
    assert ok(cli("ls", "in")).stdout == ""
    assert ok(cli("ls", "out")).stdout.splitlines() == ["b.png"]
    details = info_json("out/b.png")
    assert details["sha256"] == sha(png.read_bytes())
    assert details["kind"] == "image"

    ok(cli("mv", "out", "in"))  # folders too
    assert sorted(snapshot(env_store)["tree"]) == ["/in", "/in/out", "/in/out/b.png"]

    before = snapshot(env_store)
    refused(cli("mv", "in/out/b.png", "/"), "root")
    refused(cli("mv", "in/nothing.png", "in/x.png"), "/in/nothing.png", "no such file or folder")
    refused(cli("mv", "in", "in/out"), "itself")
    assert snapshot(env_store) == before


def test_errors_lists_refusals(env_store: Path, local: Path) -> None:
    assert ok(cli("errors")).stdout == ""
    ok(cli("folder", "create", "data"))
    ok(cli("folder", "create", "data/sub"))
    refused(cli("folder", "rm", "data"))
    refused(cli("mv", "data", "data/sub"))
    shown = ok(cli("errors")).stdout.splitlines()
    assert any("rmdir /data: the folder is not empty" in line for line in shown), shown
    assert any("/data/sub/data" in line and "itself" in line for line in shown), shown


def test_one_refusal_is_one_line_in_errors(env_store: Path, local: Path) -> None:
    """The CLI's upload calls other service actions; the user must still see one line."""
    ok(cli("folder", "create", "data"))
    refused(cli("upload", "/", make_png(local / "a.png")), "root")
    shown = ok(cli("errors")).stdout.splitlines()
    about = [line for line in shown if "/a.png" in line]
    assert len(about) == 1, shown


# ---------------------------------------------------------------- paths inside a mount


def test_existing_paths_inside_a_mount_are_translated(mount: Any, local: Path) -> None:
    store = mount.store
    data = mount.path / "data"
    data.mkdir()
    (data / "a.png").write_bytes(make_png(local / "a.png").read_bytes())

    assert ok(cli("ls", data, store=store)).stdout.splitlines() == ["a.png"]
    assert ok(cli("ls", mount.path, store=store)).stdout.splitlines() == ["data/"]
    assert info_json(str(data / "a.png"), store=store)["path"] == "/data/a.png"
    assert info_json(str(data / "a.png") + "/", store=store)["kind"] == "image"
    ok(cli("upload", data, make_png(local / "b.png"), store=store))
    assert poll(lambda: (data / "b.png").is_file())
    ok(cli("folder", "create", "data/sub", store=store))
    ok(cli("mv", data / "b.png", data / "sub", store=store))
    assert poll(lambda: (data / "sub" / "b.png").is_file())
    ok(cli("rm", data / "a.png", store=store))
    assert poll(lambda: not (data / "a.png").exists())
    ok(cli("folder", "rm", "-r", data / "sub", store=store))
    assert poll(lambda: not (data / "sub").exists())

    # relative paths from a working directory inside the mount, as a real process
    (data / "c.txt").write_text("see")
    done = run("info", "--json", "c.txt", store=store, cwd=data)
    assert done.returncode == 0, explain(done)
    assert json.loads(done.stdout)["path"] == "/data/c.txt"
    done = run("ls", ".", store=store, cwd=data)
    assert done.returncode == 0, explain(done)
    assert done.stdout.splitlines() == ["c.txt"]


@pytest.mark.parametrize("command", ["folder create", "mv", "folder mv"])
def test_new_paths_inside_a_mount_are_translated(mount: Any, command: str) -> None:
    """Targets that do not exist yet (a new folder, a move's new name) inside a mount."""
    store = mount.store
    data = mount.path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("a")
    if command == "folder create":
        ok(cli("folder", "create", mount.path / "fresh", store=store))
        assert poll(lambda: (mount.path / "fresh").is_dir())
        expected = ["/data", "/data/a.txt", "/data/sub", "/fresh"]
    elif command == "mv":
        ok(cli("mv", data / "a.txt", data / "renamed.txt", store=store))
        assert poll(lambda: (data / "renamed.txt").is_file())
        expected = ["/data", "/data/renamed.txt", "/data/sub"]
    else:
        ok(cli("folder", "mv", data / "sub", mount.path / "top", store=store))
        assert poll(lambda: (mount.path / "top").is_dir())
        expected = ["/data", "/data/a.txt", "/top"]
    assert sorted(snapshot(store)["tree"]) == expected


def test_dotted_names_inside_a_mount_are_translated(mount: Any) -> None:
    store = mount.store
    hidden = mount.path / ".cache"
    hidden.mkdir()
    (hidden / "notes.").write_text("dot at the end")
    assert ok(cli("ls", hidden, store=store)).stdout.splitlines() == ["notes."]
    assert info_json(str(hidden / "notes."), store=store)["path"] == "/.cache/notes."


# ---------------------------------------------------------------- CLI and mount together


def test_cli_changes_show_on_the_mount(mount: Any, local: Path) -> None:
    store = mount.store
    (mount.path / "seen").mkdir()
    assert not (mount.path / "made-by-cli").exists()  # a cached miss must expire too

    ok(cli("folder", "create", "made-by-cli", store=store))
    assert poll(lambda: (mount.path / "made-by-cli").is_dir())

    png = make_png(local / "a.png")
    ok(cli("upload", "seen", png, store=store))
    assert poll(lambda: (mount.path / "seen" / "a.png").is_file())
    assert (mount.path / "seen" / "a.png").read_bytes() == png.read_bytes()

    png.write_bytes(make_png(local / "other.png", 7, 7, "blue").read_bytes())
    ok(cli("upload", "--replace", "seen", png, store=store))
    assert poll(lambda: (mount.path / "seen" / "a.png").read_bytes() == png.read_bytes())

    ok(cli("mv", "seen/a.png", "made-by-cli", store=store))
    assert poll(lambda: (mount.path / "made-by-cli" / "a.png").is_file())
    assert poll(lambda: not (mount.path / "seen" / "a.png").exists())

    ok(cli("rm", "-r", "made-by-cli", store=store))
    assert poll(lambda: not (mount.path / "made-by-cli").exists())
    assert sorted(os.listdir(mount.path)) == ["seen"]


def test_mount_changes_show_in_the_cli(mount: Any) -> None:
    store = mount.store
    (mount.path / "data").mkdir()
    assert poll(lambda: cli("ls", store=store).stdout.splitlines() == ["data/"])

    (mount.path / "data" / "n.txt").write_bytes(b"one")
    assert poll(lambda: cli("info", "--json", "/data/n.txt", store=store).exit_code == 0)
    assert info_json("/data/n.txt", store=store)["sha256"] == sha(b"one")

    with open(mount.path / "data" / "n.txt", "wb") as f:
        f.write(b"two, longer")
    assert poll(lambda: info_json("/data/n.txt", store=store)["sha256"] == sha(b"two, longer"))
    assert info_json("/data/n.txt", store=store)["kind"] == "text"

    os.rename(mount.path / "data" / "n.txt", mount.path / "data" / "m.txt")
    assert poll(lambda: cli("ls", "data", store=store).stdout.splitlines() == ["m.txt"])
    os.unlink(mount.path / "data" / "m.txt")
    assert poll(lambda: cli("ls", "data", store=store).stdout == "")


# ---------------------------------------------------------------- mount and umount


def test_background_mount_then_umount(store: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "bg"
    mnt.mkdir()
    pid: int | None = None
    try:
        done = run("mount", mnt, "--store", store, program=entry_point(), timeout=MOUNT_SECONDS + 10)
        assert done.returncode == 0, explain(done)
        found = re.search(r"\(pid (\d+)\)", done.stdout)
        assert found, explain(done)
        pid = int(found.group(1))
        assert os.path.ismount(mnt)  # mounted when the command returns
        assert pid_alive(pid)

        (mnt / "data").mkdir()
        (mnt / "data" / "x.txt").write_text("through the background mount")
        assert ok(cli("ls", "data", store=store)).stdout.splitlines() == ["x.txt"]
        with service_of(store) as service:
            assert (mnt / ".encfs" / "store-id").read_text().strip() == service.store.store_id

        refused_again = run("mount", mnt, "--store", store)
        assert refused_again.returncode != 0, explain(refused_again)
        assert "already a mount point" in refused_again.stderr, explain(refused_again)

        gone = run("umount", mnt, program=entry_point())
        assert gone.returncode == 0, explain(gone)
        assert "unmounted" in gone.stdout
        assert not os.path.ismount(mnt)
        assert poll(lambda: not pid_alive(pid), timeout=10), "the daemon did not stop after umount"
        assert os.listdir(mnt) == []
        assert ok(cli("ls", "data", store=store)).stdout.splitlines() == ["x.txt"]

        again = run("umount", mnt)
        assert again.returncode != 0, explain(again)
        assert "not mounted" in again.stderr
    finally:
        if (os.path.ismount(mnt)
                and subprocess.run(["fusermount3", "-u", str(mnt)], capture_output=True).returncode != 0):
            subprocess.run(["fusermount3", "-uz", str(mnt)], capture_output=True)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)


def test_umount_of_a_busy_mount_is_refused(mount: Any) -> None:
    (mount.path / "data").mkdir()
    with open(mount.path / "data" / "open.txt", "w") as busy:
        busy.write("held open")
        done = run("umount", mount.path)
        assert done.returncode != 0, explain(done)
        assert "could not unmount" in done.stderr and str(mount.path) in done.stderr, explain(done)
        assert os.path.ismount(mount.path)
    assert (mount.path / "data" / "open.txt").read_text() == "held open"


def test_version_and_help() -> None:
    assert "version" in ok(cli("--version")).stdout
    done = run("--help", program=entry_point())
    assert done.returncode == 0, explain(done)
    for command in ("init", "mount", "umount", "folder", "upload", "ls", "info", "search", "rm", "mv",
                    "errors"):
        assert command in done.stdout


def _refused_mount(mnt: Path, store: Path, *phrases: str, env: dict[str, str] | None = None) -> None:
    before = sorted(os.listdir(mnt)) if mnt.is_dir() else None
    started = time.monotonic()
    done = run("mount", mnt, "--store", store, env=env, timeout=MOUNT_SECONDS + 10)
    assert done.returncode != 0, explain(done)
    assert time.monotonic() - started < MOUNT_SECONDS  # refused at once, not after a wait
    for phrase in phrases:
        assert phrase in done.stderr, explain(done)
    assert "Traceback" not in done.stderr, explain(done)
    assert not mounted_at(mnt)
    assert (sorted(os.listdir(mnt)) if mnt.is_dir() else None) == before


def test_mount_on_a_missing_mountpoint_is_refused(store: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "absent"
    _refused_mount(mnt, store, str(mnt), "does not exist")
    assert not mnt.exists()


def test_mount_on_a_non_empty_mountpoint_is_refused(store: Path, tmp_path: Path) -> None:
    mnt = tmp_path / "occupied"
    mnt.mkdir()
    (mnt / "mine.txt").write_text("keep")
    _refused_mount(mnt, store, str(mnt), "not empty")
    assert (mnt / "mine.txt").read_text() == "keep"


def test_mount_of_a_missing_store_is_refused(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt-missing-store"
    mnt.mkdir()
    absent = tmp_path / "no-such-store"
    _refused_mount(mnt, absent, str(absent), "does not exist")
    assert not absent.exists()


def test_mount_of_a_directory_that_is_not_a_store_is_refused(tmp_path: Path) -> None:
    mnt = tmp_path / "mnt-not-a-store"
    mnt.mkdir()
    other = tmp_path / "just-a-dir"
    other.mkdir()
    (other / "file.txt").write_text("x")
    _refused_mount(mnt, other, str(other), "not an encfs store")
    assert sorted(os.listdir(other)) == ["file.txt"]


def test_mount_without_libfuse3_says_what_to_install(store: Path, tmp_path: Path) -> None:
    """mfusepy loads the library FUSE_LIBRARY_PATH names: pointing it at a file that is
    not there is what a machine without libfuse3 looks like to encfs."""
    mnt = tmp_path / "mnt-no-libfuse"
    mnt.mkdir()
    _refused_mount(mnt, store, "libfuse3 is not installed", "apt-get install fuse3 libfuse3-3",
                   env={"FUSE_LIBRARY_PATH": str(tmp_path / "absent" / "libfuse3.so.3")})
    logged = (store / "log" / "encfs.log").read_text()
    assert f"could not mount at {mnt}" in logged and "libfuse3 is not installed" in logged


def test_the_store_is_found_by_option_then_environment_then_user_data_dir(tmp_path: Path) -> None:
    data_home = tmp_path / "data-home"
    env = {"XDG_DATA_HOME": str(data_home), "ENCFS_STORE": ""}
    done = run("init", env=env)  # neither --store nor $ENCFS_STORE: the platform's user data dir
    assert done.returncode == 0, explain(done)
    default = data_home / "encfs" / "store"
    assert (default / MARKER).is_file()
    assert run("folder", "create", "/in-default", env=env).returncode == 0
    named = tmp_path / "named"
    assert run("init", "--store", named, env=env).returncode == 0
    by_env = {**env, "ENCFS_STORE": str(named)}
    assert run("folder", "create", "/in-named", env=by_env).returncode == 0
    listing = run("ls", "/", env=env).stdout.split()
    assert "in-default/" in listing and "in-named/" not in listing
    elsewhere = {**env, "ENCFS_STORE": str(tmp_path / "elsewhere")}
    listing = run("ls", "/", env=elsewhere, store=named).stdout.split()
    assert "in-named/" in listing and "in-default/" not in listing  # --store wins over $ENCFS_STORE
