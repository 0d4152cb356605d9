"""Small ways around access, each closed and checked through a real mount by real
Linux users: a Dataset's view before users exist (POSIX modes), the description and
metadata of a folder seen only on the way down, the far side of a move in a
folder's activity, sticky folders in an organisation, and a user's command checked
and applied while the modes change."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from access_users import as_user, linux_users, uid_of

from encfs.model import Actor
from encfs.store import init_store

from conftest import Mounted, start_mount, stop_mount
from store_state import service_of

ROOT = Actor.from_ids(0, 0)
HIDDEN = "(a folder you cannot see)"


@pytest.fixture
def place() -> Iterator[Path]:
    base = Path(tempfile.mkdtemp(prefix="access-leaks-", dir="/tmp"))
    base.chmod(0o755)  # the users must reach the mount point
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def people() -> Iterator[list[str]]:
    with linux_users(3) as names:
        yield names


def mounted(store: Path, place: Path) -> Mounted:
    return start_mount(store, place / "mnt")


# ---------------------------------------------------------------- Dataset views, no users


def test_a_dataset_view_shows_each_user_only_what_the_modes_let_them_reach(place: Path,
                                                                           people: list[str]) -> None:
    alice, bob, _ = people
    store = init_store(place / "store")
    mount = mounted(store, place)
    try:
        for folder, mode in (("a-private", 0o700), ("a-public", 0o755)):
            (mount.path / folder).mkdir()
            os.chown(mount.path / folder, uid_of(alice), -1)
            (mount.path / folder).chmod(mode)

        def alice_files() -> str:
            for folder in ("a-private", "a-public"):
                (mount.path / folder / "data.txt").write_text(f"{folder}\n")
            (mount.path / "a-public" / "mine.txt").write_text("only mine\n")
            (mount.path / "a-public" / "mine.txt").chmod(0o600)
            return "ok"

        assert as_user(alice, alice_files) == "ok"
        (mount.path / ".datasets" / "D").mkdir()
        for source, name in (("a-private/data.txt", "private.txt"), ("a-public/data.txt", "public.txt"),
                             ("a-public/mine.txt", "mine.txt")):
            os.link(mount.path / source, mount.path / ".datasets" / "D" / name)
        view = mount.path / ".datasets" / "D"
        subprocess.run(["fusermount3", "-u", str(mount.path)], check=True)  # the kernel forgets the names
        mount.process.wait(timeout=30)
        mount = mounted(store, place)
        assert as_user(bob, lambda: sorted(os.listdir(view))) == ["mine.txt", "public.txt"]
        assert as_user(bob, lambda: os.stat(view / "private.txt").st_size) == "EENOENT"
        assert as_user(bob, lambda: (view / "public.txt").read_text()) == "a-public\n"
        assert as_user(bob, lambda: (view / "mine.txt").read_text()) == "EEACCES"  # the file's own mode
        assert sorted(os.listdir(view)) == ["mine.txt", "private.txt", "public.txt"]  # root sees all
        assert as_user(alice, lambda: sorted(os.listdir(view))) == ["mine.txt", "private.txt", "public.txt"]
        assert as_user(alice, lambda: (view / "private.txt").read_text()) == "a-private\n"
        # The name alice looked up stays in the kernel's cache (no users: names are kept),
        # but opening it still asks encfs, which refuses bob.
        assert as_user(bob, lambda: (view / "private.txt").read_text()) == "EENOENT"
    finally:
        stop_mount(mount)


# ---------------------------------------------------------------- an organisation


def organisation(store: Path, people: list[str]) -> None:
    alice, bob, carol = people
    with service_of(store) as service:
        admin = service.access_admin
        admin.add_user(ROOT, "alice@example.com", linux_user=alice)
        admin.add_user(ROOT, "bob@example.com", linux_user=bob)
        admin.add_user(ROOT, "carol@example.com", linux_user=carol, org_admin=True)
        service.create_folder(ROOT, "/Top", description="the acquisition plan")
        service.set_attribute(ROOT, "/Top", "user.encord.client_metadata", b'{"budget": 100}')
        service.create_folder(ROOT, "/Top/Sub", description="open to bob")
        admin.grant(ROOT, "/Top/Sub", "bob@example.com", "viewer")


def test_a_folder_seen_only_on_the_way_down_shows_its_name_only(place: Path, people: list[str]) -> None:
    _, bob, carol = people
    store = init_store(place / "store")
    organisation(store, people)
    mount = mounted(store, place)
    try:
        top = mount.path / "Top"
        assert as_user(bob, lambda: sorted(os.listdir(top))) == ["Sub"]
        for name in ("user.encord.description", "user.encord.client_metadata", "user.encord.id"):
            assert as_user(bob, lambda name=name: os.getxattr(top, name).decode()) == "EEACCES"
        assert as_user(bob, lambda: os.listxattr(top)) == []
        sub = top / "Sub"
        assert as_user(bob, lambda: os.getxattr(sub, "user.encord.description").decode()) == "open to bob"
        assert as_user(carol, lambda: os.getxattr(top, "user.encord.description").decode()) == \
            "the acquisition plan"
        errors = as_user(bob, lambda: (mount.path / ".encfs" / "errors").read_text())
        assert "getxattr /Top" in errors and "needs viewer on it" in errors
        with service_of(store) as service:  # nothing changed by the attempts
            assert service.lookup(ROOT, "/Top").description == "the acquisition plan"
    finally:
        stop_mount(mount)


def activity_of(mount: Mounted, user: str, folder: str) -> list[dict]:
    text = as_user(user, lambda: (mount.path / folder / ".activity").read_text())
    return [json.loads(line) for line in text.splitlines()]


def test_a_move_out_or_in_names_the_far_side_only_to_who_may_see_it(place: Path, people: list[str]) -> None:
    _, bob, carol = people
    store = init_store(place / "store")
    organisation(store, people)
    mount = mounted(store, place)
    try:
        for folder in ("/Pub", "/Secret-plans"):
            with service_of(store) as service:
                service.create_folder(ROOT, folder)
        with service_of(store) as service:
            service.access_admin.grant(ROOT, "/Pub", "bob@example.com", "viewer")
        (mount.path / "Pub" / "out.txt").write_text("leaving")
        (mount.path / "Secret-plans" / "in.txt").write_text("arriving")
        os.rename(mount.path / "Pub" / "out.txt", mount.path / "Secret-plans" / "q3-layoffs.txt")
        os.rename(mount.path / "Secret-plans" / "in.txt", mount.path / "Pub" / "in.txt")

        seen = {line["action"]: line["paths"] for line in activity_of(mount, bob, "Pub")}
        assert seen["move out"] == ["/Pub/out.txt", HIDDEN]
        assert seen["move in"] == [HIDDEN, "/Pub/in.txt"]
        assert "Secret" not in json.dumps(activity_of(mount, bob, "Pub"))
        shown = {line["action"]: line["paths"] for line in activity_of(mount, carol, "Pub")}
        assert shown["move out"] == ["/Pub/out.txt", "/Secret-plans/q3-layoffs.txt"]
        cli = subprocess.run(["runuser", "-u", bob, "--", "env", "-u", "ENCFS_STORE",
                              f"PYTHONPATH={Path(__file__).resolve().parents[1]}", "/usr/bin/python3", "-m",
                              "encfs", "activity", "/Pub", "--store", str(store)],
                             capture_output=True, text=True, timeout=60, cwd="/")
        assert cli.returncode == 0, cli.stderr
        assert "Secret" not in cli.stdout and HIDDEN in cli.stdout
    finally:
        stop_mount(mount)


def test_errno_of_the_attempts_is_what_a_user_notices(place: Path, people: list[str]) -> None:
    """The leaks closed above keep the usual answers for what the user may see."""
    alice, bob, _ = people
    store = init_store(place / "store")
    organisation(store, people)
    mount = mounted(store, place)
    try:
        assert as_user(bob, lambda: os.stat(mount.path / "Top" / "nothing")) == "EENOENT"
        assert as_user(alice, lambda: os.listdir(mount.path / "Top")) == "EENOENT"
        with pytest.raises(OSError) as raised:
            os.getxattr(mount.path / "Top", "user.encord.nothing")
        assert raised.value.errno == errno.ENODATA
    finally:
        stop_mount(mount)


def test_a_sticky_folder_in_an_organisation_refuses_with_a_sentence(place: Path, people: list[str]) -> None:
    alice, bob, carol = people
    store = init_store(place / "store")
    organisation(store, people)
    with service_of(store) as service:
        service.create_folder(ROOT, "/Drop", mode=0o1777)
        for email in ("alice@example.com", "bob@example.com"):
            service.access_admin.grant(ROOT, "/Drop", email, "editor")
    mount = mounted(store, place)
    try:
        drop = mount.path / "Drop"
        assert as_user(alice, lambda: (drop / "a.txt").write_text("alice's")) == 7
        assert as_user(alice, lambda: (drop / "a2.txt").write_text("alice's")) == 7
        assert as_user(bob, lambda: (drop / "b.txt").write_text("bob's")) == 5
        assert as_user(bob, lambda: os.unlink(drop / "a.txt")) == "EEPERM"
        assert as_user(bob, lambda: os.rename(drop / "a.txt", drop / "mine.txt")) == "EEPERM"
        assert as_user(bob, lambda: os.rename(drop / "b.txt", drop / "a.txt")) == "EEPERM"  # replacing hers
        errors = as_user(bob, lambda: (mount.path / ".encfs" / "errors").read_text())
        assert errors.count("the folder is sticky") == 3 and "unlink /Drop/a.txt" in errors
        assert sorted(os.listdir(drop)) == ["a.txt", "a2.txt", "b.txt"]  # nothing changed
        assert as_user(bob, lambda: os.unlink(drop / "b.txt")) is None  # his own
        assert as_user(alice, lambda: os.unlink(drop / "a.txt")) is None
        assert as_user(carol, lambda: os.unlink(drop / "a2.txt")) is None  # an org admin
        with service_of(store) as service:
            assert service.lookup(ROOT, "/Drop").mode & 0o7777 == 0o1777  # kept, applied by encfs
    finally:
        stop_mount(mount)
