"""A Hypothesis state machine of adds, removes, moves, deletes and sync toggles: after
every step, Dataset membership (in the store, in the views, in "Linked to" and in
st_nlink) equals what a simple model says.

Files are created, moved, deleted, linked with `ln` and taken out with `rm` on the
mount, and a subfolder moves in and out of the synced folder. Dataset S is synced
with folder A (subfolders included) and back, as `encfs dataset sync|unsync` does,
through the service in this process."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from encfs.errors import EncfsError, FolderNotEmpty, NotFound, NotPermitted
from encfs.model import Actor
from encfs.service import FilesService

from conftest import Mounted
from store_state import service_of

FOLDERS = ["A", "sub", "B"]  # "sub" starts in A and moves between A and B
STANDARD = ["D1", "D2"]
SYNCED = "S"
ACTOR = Actor.local()
folders = st.sampled_from(FOLDERS)
standard = st.sampled_from(STANDARD)
names = itertools.count()  # file names never repeat, so no example sees another's cached names


def errno_of(action) -> int:
    try:
        action()
    except OSError as exc:
        return exc.errno or -1
    return 0


def refusal_of(action) -> type[EncfsError] | None:
    try:
        action()
    except EncfsError as exc:
        return type(exc)
    return None


class MembershipMatchesModel(RuleBasedStateMachine):
    root: Path
    service: FilesService

    def __init__(self) -> None:
        super().__init__()
        service = self.service
        for dataset in service.list_datasets(ACTOR):
            service.delete_dataset(ACTOR, dataset["name"], force=True)
        for top in ("A", "B"):
            with contextlib.suppress(NotFound):
                service.remove_folder(ACTOR, f"/{top}", recursive=True)
        for folder in ("A", "A/sub", "B"):
            service.create_folder(ACTOR, f"/{folder}")
        for dataset in [*STANDARD, SYNCED]:
            service.create_dataset(ACTOR, dataset)
        self.where: dict[str, str] = {}  # file name -> its folder
        self.members: dict[str, set[str]] = {d: set() for d in [*STANDARD, SYNCED]}
        self.synced = False
        self.sub_parent = "A"

    def folder_path(self, folder: str) -> str:
        return f"{self.sub_parent}/sub" if folder == "sub" else folder

    def in_synced_folder(self, folder: str) -> bool:
        return self.folder_path(folder).split("/")[0] == "A"

    def files_path(self, name: str) -> str:
        return f"/{self.folder_path(self.where[name])}/{name}"

    def path(self, name: str) -> Path:
        return self.root / self.files_path(name).lstrip("/")

    def files(self) -> st.SearchStrategy[str]:
        return st.sampled_from(sorted(self.where))

    # ------------------------------------------------------------ files

    @rule(folder=folders)
    def create(self, folder: str) -> None:
        name = f"f{next(names)}.txt"
        (self.root / self.folder_path(folder) / name).write_bytes(name.encode())
        self.where[name] = folder
        if self.synced and self.in_synced_folder(folder):
            self.members[SYNCED].add(name)

    @precondition(lambda self: self.where)
    @rule(data=st.data(), folder=folders)
    def move(self, data: st.DataObject, folder: str) -> None:
        name = data.draw(self.files())
        os.rename(self.path(name), self.root / self.folder_path(folder) / name)
        was_in = self.in_synced_folder(self.where[name])
        self.where[name] = folder
        if self.synced and was_in and not self.in_synced_folder(folder):
            self.members[SYNCED].discard(name)
        if self.synced and not was_in and self.in_synced_folder(folder):
            self.members[SYNCED].add(name)

    @rule()
    def move_subfolder(self) -> None:
        """The folder "sub" (with its files) moves between A and B, in and out of sync."""
        other = "B" if self.sub_parent == "A" else "A"
        os.rename(self.root / self.sub_parent / "sub", self.root / other / "sub")
        self.sub_parent = other
        inside = {n for n, folder in self.where.items() if folder == "sub"}
        if self.synced and other == "A":
            self.members[SYNCED] |= inside
        elif self.synced:
            self.members[SYNCED] -= inside

    @precondition(lambda self: self.where)
    @rule(data=st.data())
    def delete(self, data: st.DataObject) -> None:
        name = data.draw(self.files())
        os.unlink(self.path(name))
        del self.where[name]
        for held in self.members.values():
            held.discard(name)

    # ------------------------------------------------------------ standard Datasets, on the mount

    @precondition(lambda self: self.where)
    @rule(data=st.data(), dataset=standard)
    def link(self, data: st.DataObject, dataset: str) -> None:
        name = data.draw(self.files())
        got = errno_of(lambda: os.link(self.path(name), self.root / ".datasets" / dataset / name))
        assert got == (errno.EEXIST if name in self.members[dataset] else 0)
        self.members[dataset].add(name)

    @precondition(lambda self: self.where)
    @rule(data=st.data(), dataset=standard)
    def unlink(self, data: st.DataObject, dataset: str) -> None:
        name = data.draw(self.files())
        got = errno_of(lambda: os.unlink(self.root / ".datasets" / dataset / name))
        assert got == (0 if name in self.members[dataset] else errno.ENOENT)
        self.members[dataset].discard(name)

    # ------------------------------------------------------------ the synced Dataset, as the CLI does

    @precondition(lambda self: self.where)
    @rule(data=st.data())
    def add_to_synced(self, data: st.DataObject) -> None:
        name = data.draw(self.files())
        path = self.files_path(name)
        got = refusal_of(lambda: self.service.add_to_dataset(ACTOR, SYNCED, [path]))
        assert got == (NotPermitted if self.synced else None)
        if not self.synced:
            self.members[SYNCED].add(name)

    @precondition(lambda self: self.where)
    @rule(data=st.data())
    def remove_from_synced(self, data: st.DataObject) -> None:
        name = data.draw(self.files())
        path = self.files_path(name)
        got = refusal_of(lambda: self.service.remove_from_dataset(ACTOR, SYNCED, [path]))
        expected = NotPermitted if self.synced else None if name in self.members[SYNCED] else NotFound
        assert got == expected
        if got is None:
            self.members[SYNCED].discard(name)

    @rule()
    def sync_on(self) -> None:
        outside = [n for n in self.members[SYNCED] if not self.in_synced_folder(self.where[n])]
        got = refusal_of(lambda: self.service.set_sync(ACTOR, SYNCED, "/A"))
        assert got == (FolderNotEmpty if outside and not self.synced else None)
        if got is None:
            self.synced = True
            self.members[SYNCED] |= {n for n, folder in self.where.items() if self.in_synced_folder(folder)}

    @rule()
    def sync_off(self) -> None:
        self.service.set_sync(ACTOR, SYNCED, None)
        self.synced = False

    # ------------------------------------------------------------ checks

    @invariant()
    def store_matches_model(self) -> None:
        for dataset, held in self.members.items():
            paths = {path for _, path in self.service.dataset_files(ACTOR, dataset)}
            assert paths == {self.files_path(n) for n in held}, dataset

    @invariant()
    def views_match_model(self) -> None:
        for dataset in STANDARD:
            assert sorted(os.listdir(self.root / ".datasets" / dataset)) == sorted(self.members[dataset])

    @invariant()
    def linked_to_and_nlink_match_model(self) -> None:
        for name in self.where:
            holding = sorted(d for d, held in self.members.items() if name in held)
            assert os.getxattr(self.path(name), "user.encord.datasets").decode().splitlines() == holding
            assert self.service.stat(ACTOR, self.files_path(name)).nlink == 1 + len(holding)


def test_dataset_membership_follows_the_model(mount: Mounted) -> None:
    with service_of(mount.store) as service:
        MembershipMatchesModel.root = mount.path
        MembershipMatchesModel.service = service
        run_state_machine_as_test(
            MembershipMatchesModel,
            settings=settings(
                max_examples=int(os.environ.get("ENCFS_STATEFUL_EXAMPLES", "40")),
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
