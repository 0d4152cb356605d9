"""The `encfs` command line of real non-root Linux users, run through a root mount's
socket (remote.py) in an organisation store: every role (none, viewer, editor, admin,
org admin) x every command that acts on a folder, with the exit code, the sentence on
stderr and, for what is refused, nothing changed (read back as root from the store)."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from access_users import linux_users

from encfs.model import Actor
from encfs.store import init_store

from conftest import Mounted, start_mount, stop_mount
from store_state import service_of

ROOT = Actor.from_ids(0, 0)
REPOSITORY = Path(__file__).resolve().parents[1]
USER_PYTHON = "/usr/bin/python3"  # the forwarding client needs only the standard library
ROLES = ("none", "viewer", "editor", "admin", "org admin")
ORDER = {role: n for n, role in enumerate(ROLES)}
NOT_FOUND, DENIED = 2, 1  # exit codes: a name the caller may not know; a role too low


@dataclass
class Org:
    store: Path
    mount: Mounted
    users: dict[str, str]  # role -> Linux user name

    def local_file(self, role: str) -> Path:
        return self.store.parent / f"up-{role.replace(' ', '-')}.txt"

    def encfs(self, role: str, *arguments: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        """`encfs ARGUMENTS` run by the role's Linux user, through the mount's socket."""
        return subprocess.run(
            ["runuser", "-u", self.users[role], "--", "env", "-u", "ENCFS_STORE", f"PYTHONPATH={REPOSITORY}",
             "HOME=/nonexistent", USER_PYTHON, "-m", "encfs", *arguments, "--store", str(self.store)],
            capture_output=True, text=True, cwd="/", timeout=120, input=stdin)


def email(role: str) -> str:
    return f"{role.replace(' ', '-')}@example.com"


def folder_of(role: str) -> str:
    return f"/M-{role.replace(' ', '-')}"


@pytest.fixture(scope="module")
def org() -> Iterator[Org]:
    base = Path(tempfile.mkdtemp(prefix="access-cli-", dir="/tmp"))
    base.chmod(0o755)
    try:
        with linux_users(len(ROLES)) as names:
            users = dict(zip(ROLES, names, strict=True))
            store = init_store(base / "store")
            with service_of(store) as service:
                admin = service.access_admin
                for role, name in users.items():
                    admin.add_user(ROOT, email(role), linux_user=name, org_admin=role == "org admin")
                admin.add_user(ROOT, "someone@example.com")
                service.create_dataset(ROOT, "D")
                for role in ROLES:
                    folder = folder_of(role)
                    service.create_folder(ROOT, folder)
                    for name in ("f.txt", "g.txt", f"needle-{role.replace(' ', '-')}.txt"):
                        service.create_item(ROOT, f"{folder}/{name}")
                    if role != "org admin":
                        admin.grant(ROOT, "/.datasets/D", email(role), "admin")
                    if role in ("viewer", "editor", "admin"):
                        admin.grant(ROOT, folder, email(role), role)
            for role, name in users.items():  # a local file each may upload (theirs, 0600)
                local = base / f"up-{role.replace(' ', '-')}.txt"
                local.write_text(f"uploaded by {role}\n")
                shutil.chown(local, name)
                local.chmod(0o600)
            mounted = start_mount(store, base / "mnt")
            try:
                yield Org(store, mounted, users)
            finally:
                stop_mount(mounted)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def expected(role: str, needs: str) -> int:
    if role == "none":
        return NOT_FOUND
    return 0 if ORDER[role] >= ORDER[needs] else DENIED


def state(org: Org, role: str) -> dict:
    """What the commands could change, read as root from the store."""
    folder = folder_of(role)
    with service_of(org.store) as service:
        return {"names": sorted(name for name, _ in service.list_entries(ROOT, folder)),
                "grants": service.access_admin.text(ROOT, folder).decode(),
                "dataset": sorted(path for _, path in service.dataset_files(ROOT, "D"))}


def check(done: subprocess.CompletedProcess[str], want: int, role: str, what: str) -> None:
    assert done.returncode == want, (role, what, done.stdout, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    if want == NOT_FOUND:
        assert "no such file or folder" in done.stderr, (role, what, done.stderr)
    elif want == DENIED:
        assert "needs " in done.stderr and email(role) in done.stderr, (role, what, done.stderr)


@pytest.mark.parametrize("role", ROLES)
def test_cli_role_matrix_through_the_mount(org: Org, role: str) -> None:
    folder = folder_of(role)
    needle = f"needle-{role.replace(' ', '-')}"

    listed = org.encfs(role, "ls", folder)
    check(listed, expected(role, "viewer"), role, "ls")
    if listed.returncode == 0:
        assert listed.stdout.split() == ["f.txt", "g.txt", f"{needle}.txt"]
    check(org.encfs(role, "info", f"{folder}/f.txt"), expected(role, "viewer"), role, "info")

    found = org.encfs(role, "search", needle)
    assert found.returncode == 0 and "Traceback" not in found.stderr, found.stderr
    assert (f"{folder}/{needle}.txt" in found.stdout) == (role != "none"), found.stdout

    check(org.encfs(role, "access", "ls", folder), expected(role, "viewer"), role, "access ls")
    activity = org.encfs(role, "activity", folder, "--json")
    check(activity, expected(role, "viewer"), role, "activity")

    before = state(org, role)
    for what, arguments, needs in (
            ("mv", ["mv", f"{folder}/g.txt", f"{folder}/h.txt"], "editor"),
            ("rm", ["rm", f"{folder}/f.txt"], "editor"),
            ("folder create", ["folder", "create", f"{folder}/new"], "editor"),
            ("access grant", ["access", "grant", folder, "someone@example.com", "viewer"], "admin"),
            ("dataset add", ["dataset", "add", "D", f"{folder}/{needle}.txt"], "viewer"),
            ("upload", ["upload", folder, str(org.local_file(role))], "editor")):
        done = org.encfs(role, *arguments)
        check(done, expected(role, needs), role, what)
        if done.returncode != 0:
            assert state(org, role) == before, (role, what)
        before = state(org, role)

    after = state(org, role)
    unchanged = ["f.txt", "g.txt", f"{needle}.txt"]
    changed = ["h.txt", f"{needle}.txt", "new", org.local_file(role).name]
    assert after["names"] == (unchanged if role in ("none", "viewer") else changed)
    assert ("someone@example.com viewer" in after["grants"]) == (ORDER[role] >= ORDER["admin"])
    assert (f"{folder}/{needle}.txt" in after["dataset"]) == (role != "none")
    if role != "none":
        shown = org.encfs(role, "activity", folder, "--json").stdout.splitlines()
        assert all("action" in json.loads(line) for line in shown)


def test_users_and_groups_are_an_org_admins_through_the_mount(org: Org) -> None:
    refused = org.encfs("admin", "user", "add", "eve@example.com")
    assert refused.returncode == DENIED and "for org admins and root" in refused.stderr
    assert "Traceback" not in refused.stderr
    added = org.encfs("org admin", "user", "add", "eve@example.com")
    assert added.returncode == 0, added.stderr
    group = org.encfs("org admin", "group", "add", "team")
    assert group.returncode == 0, group.stderr
    members = org.encfs("org admin", "group", "members", "team", "--add", "eve@example.com")
    assert members.returncode == 0, members.stderr
    refused = org.encfs("editor", "group", "rm", "team")
    assert refused.returncode == DENIED and "for org admins and root" in refused.stderr
    listed = org.encfs("viewer", "user", "ls")
    assert listed.returncode == 0 and "eve@example.com" in listed.stdout
    as_other = org.encfs("viewer", "access", "ls", folder_of("viewer"), "--as", email("org admin"))
    assert as_other.returncode != 0 and "only root may act as another user" in as_other.stderr
    with service_of(org.store) as service:
        assert [name for name, _ in service.access_admin.groups(ROOT)] == ["team"]


def test_integrations_import_and_sync_through_the_mount(org: Org) -> None:
    refused = org.encfs("admin", "integration", "add", "bucket", "s3://somewhere/x")
    assert refused.returncode == DENIED
    assert "managing integrations is for org admins and root" in refused.stderr
    listed = org.encfs("viewer", "integration", "ls")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
    spec = org.encfs("editor", "import", folder_of("editor"), "/etc/shadow", "--integration", "bucket")
    assert spec.returncode == DENIED and "not available through a mount" in spec.stderr
    assert "give the spec on standard input" in spec.stderr
    viewer = org.encfs("viewer", "import", folder_of("viewer"), "s3://somewhere/x", "--integration", "bucket")
    assert viewer.returncode == DENIED and "needs editor on the folder" in viewer.stderr, viewer.stderr
    hidden = org.encfs("viewer", "sync", folder_of("editor"))
    assert hidden.returncode == NOT_FOUND and "no such file or folder" in hidden.stderr, hidden.stderr
