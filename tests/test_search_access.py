"""Search shows only what the caller may see, whichever way it is asked: /.search on a
mount as real Linux users, and the service's search for a user's actor."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from access_users import as_user, linux_users, uid_of

from encfs.errors import AccessDenied
from encfs.model import Actor
from encfs.store import init_store

from conftest import Mounted, start_mount, stop_mount
from store_state import service_of

ROOT = Actor.from_ids(0, 0)
METADATA = "user.encord.client_metadata"


@dataclass
class Shared:
    store: Path
    mount: Mounted
    bob: str  # bob@example.com: a viewer of /Open only


@pytest.fixture(scope="module")
def shared() -> Iterator[Shared]:
    base = Path(tempfile.mkdtemp(prefix="search-access-", dir="/tmp"))
    base.chmod(0o755)  # the user must reach the mount point
    try:
        with linux_users(1) as (bob,):
            store = init_store(base / "store")
            with service_of(store) as service:
                service.access_admin.add_user(ROOT, "bob@example.com", linux_user=bob)
            mount = start_mount(store, base / "mnt")
            try:
                for folder in ("Open", "Closed"):
                    (mount.path / folder).mkdir()
                    for name in ("north.txt", "south.txt"):
                        path = mount.path / folder / name
                        path.write_text(f"{folder} {name}")
                        os.setxattr(path, METADATA, f'{{"site": "{name[:-4]}"}}'.encode())
                with service_of(store) as service:
                    service.access_admin.grant(ROOT, "/Open", "bob@example.com", "viewer")
                yield Shared(store, mount, bob)
            finally:
                stop_mount(mount)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def listed(folder: Path) -> list[str]:
    return sorted(os.readlink(folder / name) for name in os.listdir(folder))


def test_search_directory_shows_a_user_only_what_they_may_see(shared: Shared) -> None:
    search = shared.mount.path / ".search"
    assert listed(search / "meta.site=north") == ["../../Closed/north.txt", "../../Open/north.txt"]
    assert as_user(shared.bob, lambda: listed(search / "meta.site=north")) == ["../../Open/north.txt"]
    assert as_user(shared.bob, lambda: listed(search / "kind=text")) == ["../../Open/north.txt",
                                                                         "../../Open/south.txt"]
    assert as_user(shared.bob, lambda: listed(search / "under:Closed")) == []
    assert as_user(shared.bob, lambda: (search / "south,meta.site=south" / "south.txt").read_text()) == \
        "Open south.txt"


def test_service_search_for_a_user_is_filtered(shared: Shared) -> None:
    bob = Actor.from_ids(uid_of(shared.bob), uid_of(shared.bob))
    with service_of(shared.store) as service:
        assert sorted(hit.path for hit in service.find(bob, "txt", [], None, None)) == ["/Open/north.txt",
                                                                                 "/Open/south.txt"]
        assert [hit.path for hit in service.search(ROOT, "txt")] == [
            "/Closed/north.txt", "/Closed/south.txt", "/Open/north.txt", "/Open/south.txt"]
        with pytest.raises(AccessDenied):
            service.metadata_schema.add(bob, "site", "text", [])
        service.metadata_schema.add(ROOT, "site", "text", [])
        service.metadata_schema.remove(ROOT, "site")
