"""Search by name over every folder: `encfs search` and `/.search/QUERY/`."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from encfs.cli import main
from encfs.errors import InvalidInput
from encfs.fsck import fsck
from encfs.meta.store import u64
from encfs.model import Actor, Kind
from encfs.service import FilesService
from encfs.store import open_store

from conftest import Mounted, logged_lines
from media import image_bytes


@pytest.fixture
def service(store: Path):
    opened = open_store(store)
    try:
        yield FilesService(opened)
    finally:
        opened.close()


def add(service: FilesService, path: str, content: bytes = b"x") -> None:
    actor = Actor.local()
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts)):
        folder = "/" + "/".join(parts[:depth])
        try:
            service.lookup(actor, folder)
        except Exception:
            service.create_folder(actor, folder)
    item = service.create_item(actor, path)
    draft = service.start_draft(actor, item, keep_content=False)
    draft.write(content, 0)
    service.commit(actor, path, item.id, draft, durable=False)


def found(service: FilesService, query: str, kind: Kind | None = None) -> list[str]:
    return [hit.path for hit in service.search(Actor.local(), query, kind)]


def test_substring_any_case_any_folder(service: FilesService) -> None:
    add(service, "/Animal videos/chicken.mp4")
    add(service, "/Farm/Birds/Chicken-02.txt")
    add(service, "/Farm/cow.txt")
    assert found(service, "chicken") == ["/Animal videos/chicken.mp4", "/Farm/Birds/Chicken-02.txt"]
    assert found(service, "CHICK") == found(service, "chicken")
    assert found(service, "n-0") == ["/Farm/Birds/Chicken-02.txt"]
    assert found(service, "horse") == []


def test_short_queries_exact(service: FilesService) -> None:
    add(service, "/f/ab")
    add(service, "/f/b")
    add(service, "/f/xba")
    assert found(service, "b") == ["/f/ab", "/f/b", "/f/xba"]
    assert found(service, "ab") == ["/f/ab"]
    assert found(service, "a") == ["/f/ab", "/f/xba"]
    assert found(service, "ba") == ["/f/xba"]


def test_index_follows_renames_moves_and_deletes(service: FilesService) -> None:
    actor = Actor.local()
    add(service, "/a/report-2024.pdf")
    service.create_folder(actor, "/b")
    service.move(actor, "/a/report-2024.pdf", "/b/summary-2024.pdf")
    assert found(service, "report") == []
    assert found(service, "summary") == ["/b/summary-2024.pdf"]
    service.move(actor, "/b", "/c")
    assert found(service, "summary") == ["/c/summary-2024.pdf"]
    service.remove_item(actor, "/c/summary-2024.pdf")
    assert found(service, "2024") == []
    add(service, "/c/.img-001.jpg.Xy12")  # rsync's way: a temporary name, renamed in place
    service.move(actor, "/c/.img-001.jpg.Xy12", "/c/img-001.jpg")
    assert found(service, "xy1") == []
    assert found(service, "img-001") == found(service, "001.jpg") == ["/c/img-001.jpg"]


def test_kind_filter(service: FilesService) -> None:
    add(service, "/f/cat.png", image_bytes("PNG"))
    add(service, "/f/cat.txt", b"a cat")
    assert found(service, "cat", Kind.IMAGE) == ["/f/cat.png"]
    assert found(service, "cat", Kind.TEXT) == ["/f/cat.txt"]


def test_unicode_names(service: FilesService) -> None:
    add(service, "/f/Größe-Über.txt")
    assert found(service, "über") == ["/f/Größe-Über.txt"]
    assert found(service, "öß") == ["/f/Größe-Über.txt"]


def test_empty_query_is_refused(service: FilesService) -> None:
    with pytest.raises(InvalidInput):
        service.search(Actor.local(), "")


def test_many_items_exact_results(service: FilesService) -> None:
    actor = Actor.local()
    service.create_folder(actor, "/bulk")
    for i in range(2000):
        service.create_item(actor, f"/bulk/frame_{i:05d}.jpg")
    assert found(service, "frame_01999") == ["/bulk/frame_01999.jpg"]
    assert len(found(service, "frame_019")) == 100
    assert len(found(service, ".jpg")) == 2000


@pytest.mark.parametrize("left", ["by trigrams", "by a run that died"])
def test_a_store_indexed_by_an_older_encfs_is_indexed_again(store: Path, left: str) -> None:
    """A store whose name postings are trigrams (encfs before 8-character grams) and
    carry no index version, or whose indexing again died half-way, is indexed when
    opened, once, and search finds all."""
    opened = open_store(store)
    service = FilesService(opened)
    add(service, "/f/frame_00012345.jpg")
    add(service, "/f/Cat.png")
    stale = service.create_item(Actor.local(), "/f/gone.txt")  # trigram postings left for it
    with opened.meta.write() as w:
        w.txn.drop(w.dbs["grams"], delete=False)
        for gram in ("\x02fr", "fra", "ram", "\x02ca", "cat", "at.", "gon"):  # part of what was there
            w.txn.put(gram.encode() + b"\x00" + u64(stale.id), b"gone.txt", db=w.dbs["grams"])
        if left == "by trigrams":
            w.txn.delete(b"name_index", db=w.dbs["info"])
        else:
            w.txn.put(b"name_index", b"building 1234", db=w.dbs["info"])
    opened.close()
    with logged_lines("encfs.meta") as lines:
        reopened = open_store(store)
    try:
        service = FilesService(reopened)
        assert any("indexed the names of 3 items for search again" in line for line in lines), lines
        assert found(service, "00012345") == ["/f/frame_00012345.jpg"]
        assert found(service, "cat") == ["/f/Cat.png"]
        assert found(service, "GONE.TXT") == ["/f/gone.txt"]
        assert found(service, "fra") == ["/f/frame_00012345.jpg"]
        assert [p.line() for p in fsck(reopened, repair=False).remaining] == []
    finally:
        reopened.close()
    with logged_lines("encfs.meta") as lines:
        open_store(store).close()
    assert not any("indexed the names" in line for line in lines)



def test_cli_search(store: Path) -> None:
    opened = open_store(store)  # one LMDB environment per process: close before the CLI opens it
    add(FilesService(opened), "/Animal videos/chicken.mp4")
    add(FilesService(opened), "/Animal images/chicken.png", image_bytes("PNG"))
    opened.close()
    runner = CliRunner()
    result = runner.invoke(main, ["search", "--store", str(store), "chicken"])
    assert result.exit_code == 0
    assert result.output.split("\n")[:2] == ["/Animal images/chicken.png", "/Animal videos/chicken.mp4"]
    result = runner.invoke(main, ["search", "--store", str(store), "chicken", "--kind", "image"])
    assert result.output.strip() == "/Animal images/chicken.png"
    result = runner.invoke(main, ["search", "--store", str(store), "chicken", "--kind", "nonsense"])
    assert result.exit_code != 0


def test_search_directory_on_mount(mount: Mounted) -> None:
    (mount.path / "A").mkdir()
    (mount.path / "B").mkdir()
    (mount.path / "A" / "chicken.mp4").write_bytes(b"1")
    (mount.path / "B" / "chicken.mp4").write_bytes(b"2")
    (mount.path / "B" / "big chicken.txt").write_bytes(b"3")
    search = mount.path / ".search" / "chicken"
    names = sorted(os.listdir(search))
    assert len(names) == 3
    assert "big chicken.txt" in names
    targets = sorted(os.readlink(search / name) for name in names)
    assert targets == ["../../A/chicken.mp4", "../../B/big chicken.txt", "../../B/chicken.mp4"]
    contents = sorted((search / name).read_bytes() for name in names)
    assert contents == [b"1", b"2", b"3"]
    assert os.listdir(mount.path / ".search" / "no such thing") == []
