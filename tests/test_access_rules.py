"""Folder access rules, checked through the service without a mount: users, groups,
grants, inheritance, visibility, moves, org admins, Datasets; a Hypothesis state
machine of grants, revokes and moves against a small model; `.access` text fuzzed."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from encfs.errors import EncfsError
from encfs.model import Actor
from encfs.service import FilesService
from encfs.store import init_store, open_store

ROOT = Actor.from_ids(0, 0)
ALICE, BOB, CAROL, STRANGER = (Actor.from_ids(uid, uid) for uid in (5001, 5002, 5003, 5999))


@pytest.fixture
def service(tmp_path: Path) -> Iterator[FilesService]:
    store = open_store(init_store(tmp_path / "store"))
    try:
        yield FilesService(store)
    finally:
        store.close()


def refused(expected: int, call, *args, **kwargs) -> EncfsError:  # type: ignore[no-untyped-def]
    with pytest.raises(EncfsError) as caught:
        call(*args, **kwargs)
    assert caught.value.errno == expected, f"{errno.errorcode[caught.value.errno]}: {caught.value}"
    return caught.value


def organise(service: FilesService) -> None:
    admin = service.access_admin
    admin.add_user(ROOT, "alice@example.com", name="Alice", uid=ALICE.uid)
    admin.add_user(ROOT, "bob@example.com", uid=BOB.uid)
    admin.add_user(ROOT, "carol@example.com", uid=CAROL.uid, org_admin=True)


def names(service: FilesService, actor: Actor, path: str) -> list[str]:
    return sorted(name for name, _ in service.list_folder_stats(actor, path))


def test_a_store_without_users_has_no_roles(service: FilesService) -> None:
    service.create_folder(BOB, "/Open")
    service.create_item(ALICE, "/Open/a.txt")
    assert names(service, STRANGER, "/Open") == ["a.txt"]
    service.remove_item(STRANGER, "/Open/a.txt")


def test_creator_of_a_top_level_folder_is_its_admin_and_others_see_nothing(service: FilesService) -> None:
    organise(service)
    service.create_folder(ALICE, "/Secret")
    service.create_folder(ALICE, "/Secret/inner")
    service.create_item(ALICE, "/Secret/inner/x.txt")
    assert names(service, ALICE, "/") == ["Secret"]
    assert names(service, BOB, "/") == []
    refused(errno.ENOENT, service.stat, BOB, "/Secret")
    refused(errno.ENOENT, service.stat, BOB, "/Secret/inner/x.txt")
    refused(errno.ENOENT, service.create_item, BOB, "/Secret/inner/y.txt")
    refused(errno.ENOENT, service.remove_item, BOB, "/Secret/inner/x.txt")
    assert names(service, CAROL, "/Secret/inner") == ["x.txt"]  # org admin: everywhere
    assert names(service, ROOT, "/Secret/inner") == ["x.txt"]
    assert [hit.path for hit in service.search(BOB, "x.txt")] == []
    assert [hit.path for hit in service.search(ALICE, "x.txt")] == ["/Secret/inner/x.txt"]


def test_an_unmapped_uid_is_nobody(service: FilesService) -> None:
    organise(service)
    service.create_folder(ALICE, "/A")
    assert names(service, STRANGER, "/") == []
    refused(errno.EACCES, service.create_folder, STRANGER, "/Mine")
    assert "not a user of this organisation" in service.refusals(STRANGER)[-1]


def test_roles_viewer_editor_admin(service: FilesService) -> None:
    organise(service)
    admin = service.access_admin
    service.create_folder(ALICE, "/Team")
    service.create_item(ALICE, "/Team/a.txt")
    admin.grant(ALICE, "/Team", "bob@example.com", "viewer")
    assert names(service, BOB, "/Team") == ["a.txt"]
    refused(errno.EACCES, service.create_item, BOB, "/Team/b.txt")
    refused(errno.EACCES, service.remove_item, BOB, "/Team/a.txt")
    refused(errno.EACCES, service.open_item, BOB, "/Team/a.txt", True)
    refused(errno.EACCES, service.set_attribute, BOB, "/Team/a.txt", "user.x", b"1")
    assert "needs editor" in service.refusals(BOB)[-1]
    admin.grant(ALICE, "/Team", "bob@example.com", "editor")
    service.create_item(BOB, "/Team/b.txt")
    service.move(BOB, "/Team/b.txt", "/Team/c.txt")
    service.create_folder(BOB, "/Team/tmp")
    service.remove_folder(BOB, "/Team/tmp")  # empty, no grants of its own: an editor may
    refused(errno.EACCES, admin.grant, BOB, "/Team", "alice@example.com", "viewer")
    service.create_folder(BOB, "/Team/kept")
    admin.grant(ALICE, "/Team/kept", "bob@example.com", "admin")
    admin.grant(BOB, "/Team/kept", "alice@example.com", "viewer")
    refused(errno.EACCES, service.remove_folder, BOB, "/Team")


def test_inheritance_raises_never_lowers_and_the_way_down_is_visible(service: FilesService) -> None:
    organise(service)
    admin = service.access_admin
    service.create_folder(ALICE, "/Org")
    service.create_folder(ALICE, "/Org/public")
    service.create_folder(ALICE, "/Org/public/deep")
    service.create_folder(ALICE, "/Org/other")
    service.create_item(ALICE, "/Org/top.txt")
    service.create_item(ALICE, "/Org/public/deep/d.txt")
    admin.grant(ALICE, "/Org/public", "bob@example.com", "viewer")
    assert names(service, BOB, "/") == ["Org"]
    assert names(service, BOB, "/Org") == ["public"]  # the way down only
    refused(errno.ENOENT, service.stat, BOB, "/Org/top.txt")
    refused(errno.ENOENT, service.stat, BOB, "/Org/other")
    assert names(service, BOB, "/Org/public/deep") == ["d.txt"]  # inherited
    admin.grant(ALICE, "/Org/public/deep", "bob@example.com", "editor")  # raised below
    service.create_item(BOB, "/Org/public/deep/e.txt")
    refused(errno.EACCES, service.create_item, BOB, "/Org/public/f.txt")
    admin.grant(ALICE, "/Org", "bob@example.com", "editor")
    admin.grant(ALICE, "/Org/public", "bob@example.com", "viewer")  # lower below: no effect
    service.create_item(BOB, "/Org/public/f.txt")


def test_moves_need_editor_on_both_sides_and_a_moved_folder_keeps_its_grants(service: FilesService) -> None:
    organise(service)
    admin = service.access_admin
    for folder in ("/A", "/B", "/A/moved"):
        service.create_folder(ALICE, folder)
    service.create_item(ALICE, "/A/f.txt")
    admin.grant(ALICE, "/A", "bob@example.com", "editor")
    admin.grant(ALICE, "/B", "bob@example.com", "viewer")
    refused(errno.EACCES, service.move, BOB, "/A/f.txt", "/B/f.txt")
    assert names(service, ALICE, "/A") == ["f.txt", "moved"]
    admin.grant(ALICE, "/A/moved", "bob@example.com", "admin")
    service.move(ALICE, "/A/moved", "/B/moved")
    shown = admin.listing(ALICE, "/B/moved")
    assert ("bob@example.com", "admin", "/B/moved") in shown["own"]
    assert ("bob@example.com", "viewer", "/B") in shown["inherited"]
    assert not any(where == "/A" for _, _, where in shown["inherited"])


def test_org_admins_cannot_be_changed(service: FilesService) -> None:
    organise(service)
    admin = service.access_admin
    service.create_folder(ALICE, "/A")
    refused(errno.EPERM, admin.grant, ALICE, "/A", "carol@example.com", "viewer")
    refused(errno.EPERM, admin.revoke, ALICE, "/A", "carol@example.com")
    refused(errno.EPERM, admin.write_text, ALICE, "/A", b"carol@example.com viewer\n")
    refused(errno.EPERM, admin.remove_user, CAROL, "carol@example.com")
    admin.add_user(CAROL, "dave@example.com", org_admin=True)
    refused(errno.EPERM, admin.set_user, CAROL, "dave@example.com", org_admin=False)
    refused(errno.EACCES, admin.add_user, ALICE, "eve@example.com")
    assert "carol@example.com admin" in service.access_admin.text(ALICE, "/A").decode()


def test_groups(service: FilesService) -> None:
    organise(service)
    admin = service.access_admin
    service.create_folder(ALICE, "/G")
    admin.add_group(ROOT, "annotators")
    admin.write_text(ALICE, "/G", b"alice@example.com admin\n@annotators editor\n")
    refused(errno.ENOENT, service.create_item, BOB, "/G/x")
    admin.change_members(ROOT, "annotators", ["bob@example.com"], [])
    service.create_item(BOB, "/G/x")
    admin.change_members(ROOT, "annotators", [], ["bob@example.com"])
    refused(errno.ENOENT, service.stat, BOB, "/G/x")
    admin.remove_group(ROOT, "annotators")
    assert admin.listing(ALICE, "/G")["own"] == [("alice@example.com", "admin", "/G")]


def test_datasets_have_owners_and_collaborators(service: FilesService) -> None:
    organise(service)
    admin = service.access_admin
    service.create_folder(ALICE, "/Pics")
    service.create_item(ALICE, "/Pics/a.jpg")
    service.create_dataset(ALICE, "Cats")
    service.create_link(ALICE, "/.datasets/Cats/a.jpg", "/Pics/a.jpg", symbolic=False)
    assert [d["name"] for d in service.list_datasets(BOB)] == []
    refused(errno.ENOENT, service.stat, BOB, "/.datasets/Cats")
    service.create_dataset(BOB, "Bobs")
    refused(errno.ENOENT, service.create_link, BOB, "/.datasets/Bobs/a.jpg", "/Pics/a.jpg", False)
    admin.grant(ALICE, "/Pics", "bob@example.com", "viewer")
    service.create_link(BOB, "/.datasets/Bobs/a.jpg", "/Pics/a.jpg", symbolic=False)
    assert service.get_attribute(BOB, "/Pics/a.jpg", "user.encord.datasets") == b"Bobs"
    assert service.get_attribute(ALICE, "/Pics/a.jpg", "user.encord.datasets") == b"Cats"
    admin.grant(ALICE, "/.datasets/Cats", "bob@example.com", "viewer")
    assert [name for name, _ in service.list_folder_stats(BOB, "/.datasets/Cats")] == ["a.jpg"]
    refused(errno.EACCES, service.remove_from_dataset, BOB, "Cats", ["/Pics/a.jpg"])
    refused(errno.EINVAL, admin.grant, ALICE, "/.datasets/Cats", "bob@example.com", "editor")
    admin.revoke(ALICE, "/Pics", "bob@example.com")
    assert service.list_folder_stats(BOB, "/.datasets/Cats") == []


@pytest.mark.parametrize(("text", "expected"), [
    (b"nobody@example.com viewer\n", errno.EINVAL),
    (b"@ghosts viewer\n", errno.EINVAL),
    (b"bob@example.com owner\n", errno.EINVAL),
    (b"bob@example.com viewer extra\n", errno.EINVAL),
    (b"bob@example.com viewer\nbob@example.com editor\n", errno.EINVAL),
    (b"bob@example.com \xff\xfe viewer\n", errno.EINVAL),
    (b"bob@example.com viewer\n" * 5000, errno.EINVAL),
    (b"carol@example.com editor\n", errno.EPERM),
])
def test_access_text_refused_whole(service: FilesService, text: bytes, expected: int) -> None:
    organise(service)
    service.create_folder(ALICE, "/A")
    before = service.access_admin.listing(ALICE, "/A")
    refused(expected, service.access_admin.write_text, ALICE, "/A", text)
    assert service.access_admin.listing(ALICE, "/A") == before
    assert service.refusals(ALICE)[-1].split(" ", 1)[1].startswith("access write /A: ")


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=300))
def test_access_text_fuzz_never_half_applies(tmp_path_factory: pytest.TempPathFactory, raw: bytes) -> None:
    store = open_store(init_store(tmp_path_factory.mktemp("fuzz") / "store"))
    try:
        service = FilesService(store)
        organise(service)
        service.create_folder(ALICE, "/A")
        before = service.access_admin.listing(ALICE, "/A")
        try:
            service.access_admin.write_text(ALICE, "/A", raw)
        except EncfsError as exc:
            assert exc.errno in (errno.EINVAL, errno.EPERM)
            assert service.access_admin.listing(ALICE, "/A") == before
    finally:
        store.close()


FOLDERS = ["/T", "/T/a", "/T/b", "/T/a/c"]
USERS = {"alice@example.com": ALICE, "bob@example.com": BOB}


class AccessMachine(RuleBasedStateMachine):
    """Grants, revokes and folder moves against a model: a folder's role for bob is
    the highest grant on it or above it; he sees a folder with a role on it or below."""

    def __init__(self) -> None:
        super().__init__()
        self.store = open_store(init_store(Path(self._dir()) / "store"))
        self.service = FilesService(self.store)
        organise(self.service)
        self.parent = {"/T": "/", "/T/a": "/T", "/T/b": "/T", "/T/a/c": "/T/a"}
        self.name = {f: f.rsplit("/", 1)[1] for f in FOLDERS}
        for folder in FOLDERS:
            self.service.create_folder(ALICE, folder)
        self.grants: dict[str, int] = {}  # folder (by original name) -> bob's role
        self.files: dict[str, set[str]] = {folder: set() for folder in FOLDERS}

    @staticmethod
    def _dir() -> str:
        import tempfile
        return tempfile.mkdtemp(prefix="access-machine-")

    def path(self, folder: str) -> str:
        return "/" if folder == "/" else self.path(self.parent[folder]).rstrip("/") + "/" + self.name[folder]

    def role(self, folder: str) -> int:
        own = self.grants.get(folder, 0)
        return own if folder == "/T" else max(own, self.role(self.parent[folder]))

    def ancestors(self, folder: str) -> list[str]:
        found = []
        while folder != "/":
            found.append(folder)
            folder = self.parent[folder]
        return found

    @rule(folder=st.sampled_from(FOLDERS), role=st.sampled_from(["viewer", "editor", "admin"]))
    def grant(self, folder: str, role: str) -> None:
        self.service.access_admin.grant(ALICE, self.path(folder), "bob@example.com", role)
        self.grants[folder] = ["", "viewer", "editor", "admin"].index(role)

    @precondition(lambda self: bool(self.grants))
    @rule(data=st.data())
    def revoke(self, data: st.DataObject) -> None:
        folder = data.draw(st.sampled_from(sorted(self.grants)))
        self.service.access_admin.revoke(ALICE, self.path(folder), "bob@example.com")
        del self.grants[folder]

    @rule(folder=st.sampled_from(FOLDERS[1:]), into=st.sampled_from(FOLDERS))
    def move(self, folder: str, into: str) -> None:
        if folder in self.ancestors(into) or self.parent[folder] == into:
            return
        self.service.move(ALICE, self.path(folder), self.path(into) + "/" + self.name[folder])
        self.parent[folder] = into

    def visible(self, folder: str) -> bool:
        return self.role(folder) > 0 or any(folder in self.ancestors(g) for g in self.grants)

    @rule(folder=st.sampled_from(FOLDERS), name=st.sampled_from(["x", "y"]))
    def bob_writes(self, folder: str, name: str) -> None:
        """bob creates (or, if it is there, deletes) a file: editor needed."""
        path = self.path(folder) + "/" + name
        exists = name in self.files[folder]
        wanted = 0 if self.role(folder) >= 2 else errno.EACCES if self.visible(folder) else errno.ENOENT
        try:
            if exists:
                self.service.remove_item(BOB, path)
            else:
                self.service.create_item(BOB, path)
            got = 0
        except EncfsError as exc:
            got = exc.errno
        assert got == wanted, (folder, self.grants, exists)
        if got == 0:
            self.files[folder] ^= {name}

    @invariant()
    def bob_sees_and_may_what_the_model_says(self) -> None:
        for folder in FOLDERS:
            role = self.role(folder)
            below = any(f != folder and folder in self.ancestors(f) and f in self.grants for f in FOLDERS)
            visible = role > 0 or below
            try:
                self.service.stat(BOB, self.path(folder))
                seen = True
            except EncfsError as exc:
                assert exc.errno == errno.ENOENT
                seen = False
            assert seen == visible, (folder, self.path(folder), self.grants, self.parent)
            listing = set(names(self.service, BOB, self.path(folder))) if seen else set()
            children = {self.name[f] for f in FOLDERS if self.parent.get(f) == folder} | self.files[folder]
            shown_children = {self.name[f] for f in FOLDERS if self.parent.get(f) == folder
                              and (self.role(f) > 0 or any(g in self.grants and f in self.ancestors(g)
                                                          for g in FOLDERS))}
            if seen:
                assert listing == (children if role > 0 else shown_children), (folder, listing)

    def teardown(self) -> None:
        self.store.close()


def test_access_state_machine() -> None:
    run_state_machine_as_test(AccessMachine, settings=settings(
        max_examples=25, stateful_step_count=12, deadline=None, suppress_health_check=list(HealthCheck)))


def test_a_removed_user_takes_their_grants_along(service: FilesService) -> None:
    organise(service)
    admin = service.access_admin
    service.create_folder(ALICE, "/Shared")
    admin.grant(ALICE, "/Shared", "bob@example.com", "viewer")
    assert names(service, BOB, "/") == ["Shared"]
    admin.remove_user(ROOT, "bob@example.com")
    assert admin.listing(ALICE, "/Shared")["own"] == [("alice@example.com", "admin", "/Shared")]
    admin.add_user(ROOT, "bob@example.com", uid=BOB.uid)  # the same address again: a new user
    assert names(service, BOB, "/") == []
