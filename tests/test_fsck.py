"""`encfs fsck [--repair]`, run as a real command over a store damaged on purpose.

Each test damages one thing in the store's metadata or content the way a crash, a
bug or a hand on the disk could, then: `encfs fsck` names it and exits 1; `encfs fsck
--repair` fixes it (or quarantines what it cannot fix, never deleting content); a
second `encfs fsck` is clean (exit 0) and the store works as before.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from encfs.integrity import DamagedContent
from encfs.meta import holders
from encfs.meta.store import WriteTxn, u64
from encfs.model import Actor, Item
from encfs.store import open_store

from conftest import Mounted, logged_lines
from store_state import service_of

A = b"first file's bytes\n" * 50
B = os.urandom(3 << 20)  # spooled, several blocks


def fsck(store: Path, *options: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "encfs", "fsck", *options, "--store", str(store)],
                          capture_output=True, text=True, timeout=120)



@contextmanager
def metadata(store: Path) -> Iterator[WriteTxn]:
    opened = open_store(store)
    try:
        with opened.meta.write() as w:
            yield w
    finally:
        opened.close()


@pytest.fixture
def filled(store: Path, tmp_path: Path) -> Path:
    """/data/a.txt, /data/b.bin, /data/copy.txt (same bytes as a.txt), /data/sub/, and
    Dataset D holding a.txt."""
    actor = Actor.local()
    with service_of(store) as service:
        service.create_folder(actor, "/data")
        service.create_folder(actor, "/data/sub")
        for name, content in (("a.txt", A), ("b.bin", B), ("copy.txt", A)):
            local = tmp_path / name
            local.write_bytes(content)
            service.upload(actor, "/data", local)
        service.create_dataset(actor, "D", add=["/data/a.txt"])
    assert fsck(store).returncode == 0
    return store


def item(store: Path, path: str) -> Item:
    with service_of(store) as service:
        node = service.lookup(Actor.local(), path)
    assert isinstance(node, Item)
    return node


def blob_file(store: Path, content: bytes) -> Path:
    digest = hashlib.sha256(content).hexdigest()
    return store / "blobs" / digest[:2] / digest[2:]


def repaired_and_clean(store: Path, kind: str) -> str:
    """fsck finds `kind`, --repair fixes it, and a second fsck is clean."""
    found = fsck(store)
    assert found.returncode == 1, found.stdout + found.stderr
    assert kind in found.stdout, found.stdout
    repair = fsck(store, "--repair")
    assert repair.returncode == 0, repair.stdout + repair.stderr
    assert "[fixed]" in repair.stdout or "[quarantined" in repair.stdout
    again = fsck(store)
    assert again.returncode == 0, again.stdout
    assert "0 problems found" in again.stdout
    return repair.stdout


def test_a_clean_store_is_clean_with_a_progress_bar_and_json(filled: Path) -> None:
    done = fsck(filled, "--json")
    assert done.returncode == 0
    report = json.loads(done.stdout)
    assert report["problems"] == [] and report["checked"]["items"] == 3
    assert "checking content" in done.stderr


def test_a_wrong_blob_count_is_counted_again(filled: Path) -> None:
    sha = item(filled, "/data/a.txt").blob
    with metadata(filled) as w:
        w.set_blob(sha, 7, len(A))
    repaired_and_clean(filled, "blob count")
    with metadata(filled) as w:
        assert w.blob(sha) == (2, len(A))


def test_a_lost_blob_row_is_counted_again_and_the_content_survives_removal(filled: Path) -> None:
    sha = item(filled, "/data/b.bin").blob
    with metadata(filled) as w:
        w.set_blob(sha, 0, 0)
    repaired_and_clean(filled, "blob count")
    with service_of(filled) as service:
        service.remove_item(Actor.local(), "/data/copy.txt")
    assert blob_file(filled, B).read_bytes() == B


def test_a_count_too_low_never_deletes_content_another_file_names(filled: Path) -> None:
    """a.txt and copy.txt share one blob; its count damaged to 1, removing a.txt
    must not delete the content copy.txt still names (no fsck run in between)."""
    sha = item(filled, "/data/a.txt").blob
    with metadata(filled) as w:
        w.set_blob(sha, 1, len(A))
    with logged_lines("encfs.meta", logging.WARNING) as lines, service_of(filled) as service:
        service.remove_item(Actor.local(), "/data/a.txt")
        reader = service.open_reader(Actor.local(), service.lookup(Actor.local(), "/data/copy.txt"))
        assert reader is not None and reader.pread(len(A) + 1, 0) == A
        reader.close()
    assert blob_file(filled, A).read_bytes() == A
    said = f"blob {sha}: its count reached zero but 1 item(s) still name it"
    assert any(said in line for line in lines), lines
    assert fsck(filled).returncode == 0  # counted again correctly: nothing left to fix
    with service_of(filled) as service:
        service.remove_item(Actor.local(), "/data/copy.txt")
    assert not blob_file(filled, A).exists()  # and once nothing names it, it goes


def test_a_store_without_the_holders_index_gets_it_when_opened(filled: Path) -> None:
    sha = item(filled, "/data/a.txt").blob
    with metadata(filled) as w:  # as a store made before the index existed
        holders.clear(w.txn, w.dbs)
        w.txn.delete(holders.BUILT_MARK, db=w.dbs["info"])
    with metadata(filled) as w:
        assert len(w.holders(sha)) == 2
    assert fsck(filled).returncode == 0


def test_a_holders_index_out_of_step_is_rebuilt(filled: Path) -> None:
    a, b, copy = (item(filled, f"/data/{name}") for name in ("a.txt", "b.bin", "copy.txt"))
    with metadata(filled) as w:
        holders.hold(w.txn, w.dbs, a.id, b.blob)  # the index now says a.txt names b.bin's blob
    repaired_and_clean(filled, "blob holders")
    with metadata(filled) as w:
        assert sorted(w.holders(a.blob)) == sorted([a.id, copy.id])
        assert w.holders(b.blob) == [b.id]


def test_a_dangling_entry_is_dropped(filled: Path) -> None:
    data = item(filled, "/data/a.txt").parent
    with metadata(filled) as w:
        w.link(data, "ghost.txt", 999_999, False)
    repaired_and_clean(filled, "dangling entry")
    with service_of(filled) as service:
        names = [node.name for node in service.list_folder(Actor.local(), "/data")]
    assert "ghost.txt" not in names


def test_an_item_no_entry_names_is_named_again(filled: Path) -> None:
    target = item(filled, "/data/b.bin")
    with metadata(filled) as w:
        w.unlink(target.parent, target.name)
    repaired_and_clean(filled, "unnamed node")
    assert item(filled, "/data/b.bin").id == target.id


def test_a_missing_search_posting_is_written_again(filled: Path) -> None:
    target = item(filled, "/data/b.bin")
    with metadata(filled) as w:
        w.unindex_name(target.id, target.name)
    with service_of(filled) as service:
        assert service.search(Actor.local(), "b.bin") == []
    repaired_and_clean(filled, "missing postings")
    with service_of(filled) as service:
        assert [hit.path for hit in service.search(Actor.local(), "b.bin")] == ["/data/b.bin"]


def test_a_stray_posting_is_dropped(filled: Path) -> None:
    target = item(filled, "/data/b.bin")
    with metadata(filled) as w:
        w.txn.put(b"zzz" + b"\x00" + u64(target.id), b"zzz", db=w.dbs["grams"])
    repaired_and_clean(filled, "stray posting")


@pytest.mark.parametrize("lost", ["linked", "views"])
def test_dataset_link_rows_out_of_step_are_rebuilt(filled: Path, lost: str) -> None:
    target = item(filled, "/data/a.txt")
    with metadata(filled) as w:
        dataset_id = w.datasets_of(target.id)[0]
        key = u64(target.id) + u64(dataset_id) if lost == "linked" else u64(dataset_id) + b"a.txt"
        assert w.txn.delete(key, db=w.dbs[lost])
    repaired_and_clean(filled, "link out of step")
    with service_of(filled) as service:
        assert [name for name, _ in service.dataset_files(Actor.local(), "D")] == ["a.txt"]


def read_through_service(store: Path, path: str) -> bytes:
    with service_of(store) as service:
        target = service.lookup(Actor.local(), path)
        assert isinstance(target, Item)
        reader = service.open_reader(Actor.local(), target)
        assert reader is not None
        try:
            return reader.pread(target.size, 0)
        finally:
            reader.close()


def test_a_wrong_checksum_in_a_small_files_record_is_found_and_copied_again(
    filled: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """A small item's record carries its one block's checksum (read checks use it). A
    wrong copy is found by fsck and copied again; until then the blob's own checksums
    decide, so good content is still served (with a warning) and damage still is not."""
    target = item(filled, "/data/a.txt")
    right = target.block_sum_hint()
    assert right is not None
    with metadata(filled) as w:
        target.only_block_sum = (target.blob, right ^ 1)
        w.put_node(target)
    with logged_lines("encfs", logging.WARNING) as lines:
        assert read_through_service(filled, "/data/a.txt") == A
    assert any("wrong copy" in line for line in lines), lines
    flipped = bytearray(A)
    flipped[3] ^= 0xFF
    blob_file(filled, A).write_bytes(bytes(flipped))
    with pytest.raises(DamagedContent):
        read_through_service(filled, "/data/a.txt")
    blob_file(filled, A).write_bytes(A)
    repaired_and_clean(filled, "record checksum")
    assert item(filled, "/data/a.txt").block_sum_hint() == right
    assert read_through_service(filled, "/data/a.txt") == A


def test_a_wrong_dataset_count_and_stats_are_fixed(filled: Path) -> None:
    target = item(filled, "/data/a.txt")
    with metadata(filled) as w:
        target.datasets = 5
        w.put_node(target)
    repaired_and_clean(filled, "Dataset count")
    assert item(filled, "/data/a.txt").datasets == 1


def test_a_missing_stats_row_and_a_wrong_subfolder_count_are_fixed(filled: Path) -> None:
    target = item(filled, "/data/b.bin")
    with service_of(filled) as service:
        data = service.lookup(Actor.local(), "/data")
    with metadata(filled) as w:
        w.txn.delete(u64(target.id), db=w.dbs["stats"])
        data.subfolders = 9
        w.put_node(data)
    output = repaired_and_clean(filled, "missing stats row")
    assert "subfolder count" in output
    with service_of(filled) as service:
        assert service.stat(Actor.local(), "/data/b.bin").size == len(B)


def test_a_group_row_naming_nothing_is_dropped(filled: Path) -> None:
    target = item(filled, "/data/a.txt")
    with metadata(filled) as w:
        w.set_members(888_888, [], [target.id])
    repaired_and_clean(filled, "dangling group row")


def test_an_unnamed_blob_file_is_quarantined_not_deleted(filled: Path) -> None:
    stray = os.urandom(100)
    blob_file(filled, stray).write_bytes(stray)
    output = repaired_and_clean(filled, "unnamed blob file")
    assert "quarantined" in output
    kept = [p for p in (filled / "quarantine").iterdir() if not p.name.endswith(".txt")]
    assert [p.read_bytes() for p in kept] == [stray]


@pytest.mark.parametrize("damage", ["flipped", "truncated", "removed"])
def test_damaged_content_is_reported_quarantined_and_repaired_by_writing_it_again(
    filled: Path, tmp_path: Path, damage: str,
) -> None:
    path = blob_file(filled, B)
    if damage == "flipped":
        with open(path, "r+b") as f:
            f.seek(2 << 20)
            f.write(b"\x00\x01\x02")
    elif damage == "truncated":
        os.truncate(path, 1000)
    else:
        path.unlink()

    found = fsck(filled)
    assert found.returncode == 1
    kind = "missing content" if damage == "removed" else "damaged content"
    assert kind in found.stdout and "/data/b.bin" in found.stdout, found.stdout

    repair = fsck(filled, "--repair")
    assert repair.returncode == 1  # the content is lost until written again: said, not hidden
    assert "/data/b.bin" in repair.stdout
    if damage != "removed":
        assert "quarantined" in repair.stdout
        notes = [p for p in (filled / "quarantine").iterdir() if p.name.endswith(".txt")]
        assert notes and "damaged content" in notes[0].read_text()

    local = tmp_path / "restore.bin"
    local.write_bytes(B)
    with service_of(filled) as service:
        service.upload(Actor.local(), "/data", local)  # identical content repairs the blob
    assert path.read_bytes() == B
    again = fsck(filled)
    assert again.returncode == 0, again.stdout


def test_changed_checksums_are_reported_and_rewritten(filled: Path) -> None:
    sha = item(filled, "/data/b.bin").blob
    with metadata(filled) as w:
        packed = bytearray(w.sums(sha))
        packed[-1] ^= 1
        w.put_sums(sha, bytes(packed))
    repaired_and_clean(filled, "checksums out of step")


def test_fsck_of_a_missing_store_says_so(tmp_path: Path) -> None:
    done = fsck(tmp_path / "nowhere")
    assert done.returncode != 0
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr


def test_repair_while_a_mount_writes_and_removes_sets_nothing_aside(
    filled: Path, mount_factory: Callable[[Path, str], Mounted],
) -> None:
    """Content stored or removed by a running mount while fsck reads is not taken for
    damage: nothing it stores is quarantined, and every file reads back."""
    mount = mount_factory(filled, "mnt")
    folder = mount / "data" / "busy"
    folder.mkdir()
    stop = threading.Event()
    written: dict[str, bytes] = {}

    def write() -> None:
        n = 0
        while not stop.is_set():
            body = os.urandom(2000 + n)
            (folder / f"f{n}.bin").write_bytes(body)
            written[f"f{n}.bin"] = body
            if n % 3 == 0:
                (folder / f"f{n}.bin").unlink()
                del written[f"f{n}.bin"]
            n += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        repair = fsck(filled, "--repair")
    finally:
        stop.set()
        writer.join()
    assert repair.returncode == 0, repair.stdout
    assert not (filled / "quarantine").exists() or not os.listdir(filled / "quarantine")
    for name, body in written.items():
        assert (folder / name).read_bytes() == body
    assert fsck(filled).returncode == 0


def ids(store: Path, path: str, dataset: str = "D") -> tuple[int, int]:
    """The node id of `path` and the id of Dataset `dataset`."""
    with service_of(store) as service, service.store.meta.read() as r:
        node_id = service.lookup(Actor.local(), path).id
        return node_id, r.collection_id(b"d", dataset)


@pytest.mark.parametrize("row", ["sources", "series", "synced"])
def test_a_row_tying_a_folder_to_nothing_is_dropped(filled: Path, row: str) -> None:
    folder, dataset = ids(filled, "/data")
    with metadata(filled) as w:
        if row == "sources":
            w.set_source(folder, 888_888, True)
        elif row == "series":
            w.set_series(folder, "1.2.840.99", 888_888)
        else:
            w.set_synced(folder, dataset, True)  # D is not synced with /data
    output = repaired_and_clean(filled, "dangling row")
    assert f"`{row}` row" in output
    with service_of(filled) as service:
        assert service.dataset_files(Actor.local(), "D") == [("a.txt", "/data/a.txt")]


def test_a_synced_dataset_without_its_row_gets_it_back(filled: Path) -> None:
    with service_of(filled) as service:
        service.create_dataset(Actor.local(), "S")
        service.set_sync(Actor.local(), "S", "/data/sub")
    folder, dataset = ids(filled, "/data/sub", "S")
    with metadata(filled) as w:
        w.set_synced(folder, dataset, False)
    repaired_and_clean(filled, "sync row missing")
    with service_of(filled) as service, service.store.meta.read() as r:
        assert r.synced_with(folder) == [dataset]


@pytest.mark.parametrize("damage", ["dangling", "one side"])
def test_project_attachment_rows_are_repaired(filled: Path, damage: str) -> None:
    with service_of(filled) as service:
        service.create_project(Actor.local(), "P")
        service.attach_dataset(Actor.local(), "P", "D")
    _, dataset = ids(filled, "/data")
    with metadata(filled) as w:
        project = w.collection_id(b"p", "P")
        if damage == "dangling":
            w.set_attached(777_777, dataset, True)
        else:
            w.txn.delete(u64(dataset) + u64(project), db=w.dbs["attachments"])
    repaired_and_clean(filled, "dangling row" if damage == "dangling" else "attachment rows out of step")
    with service_of(filled) as service, service.store.meta.read() as r:
        assert r.attached_to(project) == [dataset] and r.projects_of(dataset) == [project]


def test_the_attribute_index_is_checked_and_rebuilt(filled: Path) -> None:
    """A store whose attribute keys went missing (or one made before the index) is found
    by fsck and rebuilt by --repair; a key naming a value the item lacks is dropped."""
    target = item(filled, "/data/b.bin")
    with metadata(filled) as w:
        w.txn.drop(w.dbs["attrs"], delete=False)
        w.txn.put(b"Kimage\x00", u64(target.id), db=w.dbs["attrs"])
    with service_of(filled) as service:
        assert service.search(Actor.local(), "size>1MB") == []
    out = repaired_and_clean(filled, "missing attribute keys")
    assert "stray attribute key" in out
    with service_of(filled) as service:
        assert [hit.path for hit in service.search(Actor.local(), "size>1MB")] == ["/data/b.bin"]
        assert service.search(Actor.local(), "kind=image") == []
