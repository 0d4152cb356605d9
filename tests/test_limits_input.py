"""Inputs that used to break an item for good, refused at the door with the same limits
on every way in: client metadata (size, nesting, numbers, text), DICOM UIDs longer than
the store's keys can hold, generated names past 255 bytes, user attributes without a
per-file total, and refusal lines that named a fragment of the user's path."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import lmdb
import pytest

from encfs.model import Actor

from conftest import Mounted, errors_of
from media import image_bytes, slice_bytes
from store_state import service_of, snapshot

KiB = 1024
META = "user.encord.client_metadata"


# ---------------------------------------------------------------- helpers


def encfs(*args: str | os.PathLike[str], store: Path) -> subprocess.CompletedProcess[str]:
    """A real CLI run, as a user types it."""
    return subprocess.run([sys.executable, "-m", "encfs", *(str(a) for a in args), "--store", str(store)],
                          capture_output=True, text=True, timeout=120)


def refused_by_cli(done: subprocess.CompletedProcess[str], *phrases: str) -> None:
    assert done.returncode != 0, done
    assert "Traceback" not in done.stderr, done.stderr
    for phrase in phrases:
        assert phrase in done.stderr, done.stderr


def fails_with(code: int, call: Callable[[], object]) -> OSError:
    with pytest.raises(OSError) as raised:
        call()
    assert raised.value.errno == code, f"{raised.value} (expected {errno.errorcode[code]})"
    return raised.value


def new_lines(mount: Mounted, before: str) -> list[str]:
    return errors_of(mount)[len(before):].splitlines()


def nested(depth: int, leaf: str = "1") -> str:
    """A JSON object `depth` containers deep: {"a":{"a":...1}}."""
    return '{"a":' * depth + leaf + "}" * depth


@pytest.fixture
def item(mount: Mounted) -> Path:
    (mount.path / "d").mkdir()
    path = mount.path / "d" / "f.txt"
    path.write_text("some text")
    os.setxattr(path, META, b'{"keep": true}')
    return path


# ---------------------------------------------------------------- client metadata through the mount


@pytest.mark.parametrize("depth", [65, 985, 2000, 10_000], ids=str)
def test_metadata_nested_too_deep_is_refused_and_the_item_stays_whole(mount: Mounted, item: Path,
                                                                       depth: int) -> None:
    before = errors_of(mount)
    fails_with(errno.EINVAL, lambda: os.setxattr(item, META, nested(depth).encode()))
    assert any("nests objects and arrays at most 64 deep" in line and "/d/f.txt" in line
               for line in new_lines(mount, before))
    assert os.getxattr(item, META) == b'{"keep": true}'
    assert item.read_text() == "some text"
    assert [p.name for p in (mount.path / ".search" / "f.txt").iterdir()] == ["f.txt"]
    item.unlink()
    assert not item.exists()


def test_metadata_64_deep_is_kept_and_read_back(mount: Mounted, item: Path) -> None:
    os.setxattr(item, META, nested(64).encode())
    assert json.loads(os.getxattr(item, META)) == json.loads(nested(64))
    done = encfs("info", "/d/f.txt", "--json", store=mount.store)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["client_metadata"] == json.loads(nested(64))


@pytest.mark.parametrize(("value", "phrase"), [
    ('{"n": ' + "7" * 5000 + "}", "integers are at most 20 digits"),
    ('{"n": ' + "7" * 21 + "}", "integers are at most 20 digits"),
    ('{"n": 18446744073709551616}', "integers are between"),
    ('{"n": -9223372036854775809}', "integers are between"),
    ('{"n": NaN}', "NaN is not a JSON number"),
    ('{"n": [Infinity]}', "Infinity is not a JSON number"),
    ('{"n": -Infinity}', "Infinity is not a JSON number"),
    ('{"n": 1e400}', "too large for a 64-bit float"),
    ('{"\\ud800": 1}', "a key is not valid Unicode text"),
    ('{"k": "\\udfff"}', "a string is not valid Unicode text"),
    ('[{"a": 1}]', "must be a JSON object, not a JSON array"),
    ('"text"', "must be a JSON object, not a JSON string"),
    ("null", "must be a JSON object, not a JSON null"),
], ids=lambda v: v[:24] if isinstance(v, str) and v.startswith(("{", "[", '"', "n")) else "")
def test_metadata_with_values_that_cannot_come_back_is_refused(mount: Mounted, item: Path, value: str,
                                                               phrase: str) -> None:
    before = errors_of(mount)
    fails_with(errno.EINVAL, lambda: os.setxattr(item, META, value.encode()))
    assert any(phrase in line for line in new_lines(mount, before)), new_lines(mount, before)
    assert os.getxattr(item, META) == b'{"keep": true}'


def test_the_largest_numbers_allowed_come_back(mount: Mounted, item: Path) -> None:
    value = {"big": 18446744073709551615, "low": -9223372036854775808, "f": 1.5e308}
    os.setxattr(item, META, json.dumps(value).encode())
    assert json.loads(os.getxattr(item, META)) == value


def test_metadata_larger_than_the_mount_can_return_is_refused(mount: Mounted, item: Path) -> None:
    """63 KiB as sent, but past 64 KiB as the mount shows it (spaces after , and :, and
    non-ASCII as \\u escapes): refused, since getxattr could never return it."""
    sent = json.dumps({f"k{i}": "é" * 8 for i in range(1200)}, separators=(",", ":"), ensure_ascii=False)
    assert len(sent.encode()) < 64 * KiB
    before = errors_of(mount)
    fails_with(errno.EINVAL, lambda: os.setxattr(item, META, sent.encode()))
    assert any("at most 65536 bytes" in line for line in new_lines(mount, before))
    fitting = json.dumps({"k": "x" * (64 * KiB - 20)})
    os.setxattr(item, META, fitting.encode())
    assert os.getxattr(item, META) == fitting.encode()


# ---------------------------------------------------------------- client metadata through the CLI


@pytest.mark.parametrize(("metadata", "phrase"), [
    (nested(65), "nests objects and arrays at most 64 deep"),
    (nested(3000), "nests objects and arrays at most 64 deep"),
    (json.dumps({"blob": "x" * 120_000}), "at most 65536 bytes"),
    ('{"n": ' + "9" * 5000 + "}", "integers are at most 20 digits"),
    ('{"n": NaN}', "NaN is not a JSON number"),
    ("[1, 2]", "must be a JSON object"),
    ("{not json", "not JSON"),
], ids=lambda v: v[:24])
def test_cli_metadata_has_the_mounts_limits(store: Path, metadata: str, phrase: str) -> None:
    assert encfs("folder", "create", "keep", store=store).returncode == 0
    before = snapshot(store)
    done = encfs("folder", "create", "scans", "--metadata", metadata, store=store)
    refused_by_cli(done, phrase, "--metadata")
    assert done.returncode == 2
    assert snapshot(store) == before


def test_cli_metadata_within_the_limits_is_stored(store: Path) -> None:
    metadata = {"site": "north", "deep": json.loads(nested(60)), "n": 18446744073709551615}
    done = encfs("folder", "create", "scans", "--metadata", json.dumps(metadata), store=store)
    assert done.returncode == 0, done.stderr
    with service_of(store) as service:
        assert service.lookup(Actor.local(), "/scans").client_metadata == metadata


def test_importers_meet_the_same_limits(store: Path) -> None:
    """The service takes metadata as a value too (imports): the same validator applies."""
    from encfs.errors import InvalidInput

    deep: dict = {}
    cursor = deep
    for _ in range(70):
        cursor["a"] = {}
        cursor = cursor["a"]
    with service_of(store) as service:
        for bad in (deep, {"n": float("nan")}, {"n": 1 << 70}, {"k": b"bytes"}, {"t": "x" * 70_000}):
            with pytest.raises(InvalidInput):
                service.create_folder(Actor.local(), "/imported", client_metadata=bad)
        assert service.list_folder(Actor.local(), "/") == []


# ---------------------------------------------------------------- records stored before the limits


def plant_metadata(store: Path, path: str, metadata_json: bytes) -> None:
    """Write client metadata into a node record behind encfs's back, as an older encfs
    that did not bound it could have stored it."""
    with service_of(store) as service:
        node_id = service.lookup(Actor.local(), path).id
    env = lmdb.open(str(store / "meta.lmdb"), max_dbs=64)
    try:
        nodes = env.open_db(b"nodes")
        with env.begin(write=True) as txn:
            key = node_id.to_bytes(8, "big")
            raw = txn.get(key, db=nodes)
            assert b'"client_metadata":{}' in raw
            planted = raw.replace(b'"client_metadata":{}', b'"client_metadata":' + metadata_json)
            txn.put(key, planted, db=nodes)
    finally:
        env.close()


@pytest.fixture
def old_store(store: Path, tmp_path: Path) -> Iterator[Path]:
    done = encfs("folder", "create", "A", store=store)
    assert done.returncode == 0, done.stderr
    local = tmp_path / "needle.txt"
    local.write_text("hay")
    done = encfs("upload", "/A", local, store=store)
    assert done.returncode == 0, done.stderr
    yield store


@pytest.mark.parametrize("stored", [nested(985), nested(3000), '{"n": ' + "7" * 5000 + "}"],
                         ids=["985 deep", "3000 deep", "5000 digits"])
def test_a_stored_record_too_deep_to_read_stays_usable(old_store: Path, mount_factory: Callable,
                                                        stored: str) -> None:
    plant_metadata(old_store, "/A/needle.txt", stored.encode())
    mounted = mount_factory(old_store, "mnt")
    item = mounted.path / "A" / "needle.txt"
    assert item.read_text() == "hay"
    assert os.getxattr(item, META) == b"{}"
    assert [p.name for p in (mounted.path / ".search" / "needle").iterdir()] == ["needle.txt"]
    for args in (("info", "/A"), ("folder", "info", "/A"), ("search", "needle"), ("info", "/A/needle.txt")):
        done = encfs(*args, store=old_store)
        assert done.returncode == 0 and "Traceback" not in done.stderr, (args, done.stderr)
    assert "client metadata is shown as {}" in (old_store / "log" / "encfs.log").read_text()
    os.setxattr(item, META, b'{"fresh": 1}')
    assert os.getxattr(item, META) == b'{"fresh": 1}'
    item.unlink()
    assert os.listdir(mounted.path / "A") == []


# ---------------------------------------------------------------- descriptions


def test_descriptions_are_bounded_everywhere(store: Path) -> None:
    long = "d" * (64 * KiB + 1)
    before = snapshot(store)
    refused_by_cli(encfs("folder", "create", "f", "--description", long, store=store), "at most 65536 bytes")
    refused_by_cli(encfs("dataset", "create", "D", "--description", long, store=store), "at most 65536 bytes")
    refused_by_cli(encfs("project", "create", "P", "--description", long, store=store), "at most 65536 bytes")
    assert snapshot(store) == before
    assert encfs("dataset", "create", "D", store=store).returncode == 0
    refused_by_cli(encfs("dataset", "describe", "D", long, store=store), "at most 65536 bytes")
    refused_by_cli(encfs("dataset", "describe", "D", "\udcff", store=store), "UTF-8")
    with service_of(store) as service:
        assert service.dataset_summary(Actor.local(), "D")["description"] == ""


# ---------------------------------------------------------------- DICOM UIDs and the store's keys


def dicom_file(tmp_path: Path, name: str = "x.dcm", **tags: str) -> Path:
    """A real DICOM file (pydicom) with some tags set to the given values."""
    import pydicom

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns of values longer than DICOM allows
        path = tmp_path / name
        path.write_bytes(slice_bytes("1.2.826.0.1.3680043.2.1125.1", 0.0, 1))
        ds = pydicom.dcmread(path)
        for tag, value in tags.items():
            setattr(ds, tag, value)
            if tag == "SOPInstanceUID":
                ds.file_meta.MediaStorageSOPInstanceUID = value
        ds.save_as(path)
    return path


@pytest.mark.parametrize(("tag", "value"), [
    ("SeriesInstanceUID", "1.2." + "3" * 600),
    ("SOPInstanceUID", "1.2." + "4" * 600),
    ("StudyInstanceUID", "1.2." + "5" * 600),
    ("SeriesInstanceUID", "1.2." + "3" * 61),  # 65 bytes: one past the standard's 64
    ("PatientID", "P" * 2000),
], ids=lambda v: v[:24])
def test_dicom_values_too_long_for_the_store_are_refused_at_close(mount: Mounted, tmp_path: Path, tag: str,
                                                                   value: str) -> None:
    folder = mount.path / "scans"
    folder.mkdir()
    source = dicom_file(tmp_path, **{tag: value})
    before_blobs = snapshot(mount.store)["blobs"]
    errors_before = errors_of(mount)
    done = subprocess.run(["cp", str(source), str(folder / "x.dcm")], capture_output=True, text=True)
    assert done.returncode != 0
    assert "Invalid argument" in done.stderr, done.stderr
    lines = new_lines(mount, errors_before)
    assert any("/scans/x.dcm" in line and tag in line and "DICOM file refused" in line
               for line in lines), lines
    assert os.listdir(folder) == []
    state = snapshot(mount.store)
    assert [p for p in state["tree"] if p.startswith("/scans/")] == []
    assert state["blobs"] == before_blobs


def test_dicom_uids_of_64_bytes_make_a_series(mount: Mounted, tmp_path: Path) -> None:
    folder = mount.path / "scans"
    folder.mkdir()
    series, sop = "1.2." + "3" * 60, "1.2." + "4" * 60
    source = dicom_file(tmp_path, SeriesInstanceUID=series, SOPInstanceUID=sop)
    subprocess.run(["cp", str(source), str(folder / "x.dcm")], check=True)
    names = sorted(os.listdir(folder))
    assert "x.dcm" in names and any(n.endswith(".dcmseries") for n in names)
    assert os.getxattr(folder / "x.dcm", "user.encord.dicom.series_uid").decode() == series


# ---------------------------------------------------------------- generated names


def long_name(stem_bytes: int, ext: str = ".jpg") -> str:
    return "n" * (stem_bytes - len(ext)) + ext


@pytest.mark.parametrize("size", [250, 254, 255])
def test_view_and_search_names_of_long_names_stay_within_255_bytes(mount: Mounted, size: int) -> None:
    """Two files of one long name in two folders: both in one Dataset (the second tagged
    with its id) and both in /.search, every name at most 255 bytes."""
    name = long_name(size)
    for folder in ("one", "two"):
        (mount.path / folder).mkdir()
        (mount.path / folder / name).write_bytes(folder.encode())
    done = encfs("dataset", "create", "D", store=mount.store)
    assert done.returncode == 0, done.stderr
    done = encfs("dataset", "add", "D", "/one", "/two", store=mount.store)
    assert done.returncode == 0, done.stderr
    view = sorted(os.listdir(mount.path / ".datasets" / "D"))
    assert len(view) == 2 and name in view
    tagged = next(n for n in view if n != name)
    assert len(tagged.encode()) <= 255 and tagged.endswith(".jpg") and "~" in tagged
    assert {(mount.path / ".datasets" / "D" / n).read_bytes() for n in view} == {b"one", b"two"}
    links = sorted(os.listdir(mount.path / ".search" / "nnnn"))
    assert len(links) == 2
    for link in links:
        assert len(link.encode()) <= 255 and link.endswith(".jpg") and "~" in link
    assert {(mount.path / ".search" / "nnnn" / link).read_bytes() for link in links} == {b"one", b"two"}


def test_tagged_names_never_split_a_character(mount: Mounted) -> None:
    name = "é" * 125 + ".png"  # 254 bytes: a tag cuts the stem in the middle of an é
    for folder in ("one", "two"):
        (mount.path / folder).mkdir()
        (mount.path / folder / name).write_bytes(folder.encode())
    links = os.listdir(mount.path / ".search" / "éé")
    assert len(links) == 2
    for link in links:
        assert len(link.encode()) <= 255 and link.endswith(".png") and link.startswith("é" * 100)
        assert (mount.path / ".search" / "éé" / link).read_bytes() in (b"one", b"two")


def test_a_group_of_a_folder_with_a_long_name_gets_a_name(mount: Mounted) -> None:
    parent = mount.path / "p"
    frames = parent / ("f" * 250)
    frames.mkdir(parents=True)
    for i in range(2):
        (frames / f"{i}.png").write_bytes(image_bytes("PNG"))
    os.setxattr(frames, "user.encord.batch", b"image_group")
    group = [n for n in os.listdir(parent) if n.endswith(".imagegroup")]
    assert len(group) == 1 and len(group[0].encode()) == 255


# ---------------------------------------------------------------- user attributes per file


def test_user_attributes_have_a_per_file_total(mount: Mounted, item: Path) -> None:
    value = b"v" * (64 * KiB)
    for i in range(3):
        os.setxattr(item, f"user.big{i}", value)
    before = errors_of(mount)
    fails_with(errno.ENOSPC, lambda: os.setxattr(item, "user.big3", value))
    assert any("at most 262144 bytes" in line and "/d/f.txt" in line for line in new_lines(mount, before))
    assert "user.big3" not in os.listxattr(item)
    os.setxattr(item, "user.big0", b"small")  # replacing by a smaller value works
    os.setxattr(item, "user.big3", value)  # and makes room
    os.removexattr(item, "user.big1")
    assert sorted(n for n in os.listxattr(item) if n.startswith("user.big")) == [
        "user.big0", "user.big2", "user.big3"]
    assert os.getxattr(item, "user.big3") == value


def test_user_attributes_have_a_per_file_count(mount: Mounted, item: Path) -> None:
    for i in range(128):
        os.setxattr(item, f"user.n{i}", b"x")
    fails_with(errno.ENOSPC, lambda: os.setxattr(item, "user.one-more", b"x"))
    assert "at most 128 user attributes" in errors_of(mount)
    os.setxattr(item, "user.n5", b"changed")  # an existing one can still change
    os.removexattr(item, "user.n0")
    os.setxattr(item, "user.one-more", b"x")
    names = os.listxattr(item)
    assert "user.one-more" in names and "user.n0" not in names


def test_attributes_of_a_folder_are_bounded_too(mount: Mounted) -> None:
    folder = mount.path / "d"
    folder.mkdir()
    for i in range(4):
        os.setxattr(folder, f"user.big{i}", b"v" * (64 * KiB - 16))
    fails_with(errno.ENOSPC, lambda: os.setxattr(folder, "user.big4", b"v" * (64 * KiB)))


# ---------------------------------------------------------------- the path in /.encfs/errors


def error_line(mount: Mounted, before: str, operation: str) -> str:
    lines = [line for line in new_lines(mount, before) if f" {operation} " in line]
    assert len(lines) == 1, new_lines(mount, before)
    return lines[0]


@pytest.fixture
def views(mount: Mounted) -> Mounted:
    (mount.path / "cats").mkdir()
    (mount.path / "cats" / "a.jpg").write_bytes(b"cat")
    (mount.path / ".datasets" / "Pets").mkdir()
    os.link(mount.path / "cats" / "a.jpg", mount.path / ".datasets" / "Pets" / "a.jpg")
    (mount.path / ".projects" / "Labelling").mkdir()
    return mount


def test_a_dataset_name_that_is_not_text_is_recorded_with_its_full_path(views: Mounted) -> None:
    before = errors_of(views)
    bad = os.fsencode(views.path / ".datasets") + b"/bad\xff"
    fails_with(errno.EILSEQ, lambda: os.mkdir(bad))
    assert " mkdir /.datasets/bad\\xff: " in error_line(views, before, "mkdir")


def test_attaching_a_missing_dataset_is_recorded_with_the_projects_path(views: Mounted) -> None:
    before = errors_of(views)
    link = views.path / ".projects" / "Labelling" / "Nope"
    fails_with(errno.ENOENT, lambda: os.symlink("../../.datasets/Nope", link))
    line = error_line(views, before, "link")
    assert " link /.projects/Labelling/Nope: " in line and "no Dataset is named 'Nope'" in line


def test_a_synced_dataset_of_a_missing_folder_is_recorded_with_its_path(views: Mounted) -> None:
    before = errors_of(views)
    fails_with(errno.ENOENT, lambda: os.symlink("../missing", views.path / ".datasets" / "S"))
    line = error_line(views, before, "link")
    assert " link /.datasets/S: " in line and "/missing is not a file or folder" in line


def test_rmdir_of_a_dataset_in_use_is_recorded_with_its_path(views: Mounted) -> None:
    before = errors_of(views)
    fails_with(errno.ENOTEMPTY, lambda: os.rmdir(views.path / ".datasets" / "Pets"))
    assert " rmdir /.datasets/Pets: " in error_line(views, before, "rmdir")


def test_renaming_a_dataset_to_a_bad_name_names_the_dataset(views: Mounted) -> None:
    done = encfs("dataset", "rename", "Pets", "a/b", store=views.store)
    refused_by_cli(done, "/.datasets/Pets")
    done = encfs("dataset", "create", "bad/name", store=views.store)
    refused_by_cli(done, "encfs: /.datasets/bad/name: ")
    done = encfs("project", "create", "P", "--description", "\udcff", store=views.store)
    refused_by_cli(done, "encfs: /.projects/P: ", "UTF-8")


def test_a_file_in_a_view_refused_is_recorded_with_the_view_path(views: Mounted) -> None:
    before = errors_of(views)
    fails_with(errno.EPERM, lambda: (views.path / ".datasets" / "Pets" / "new.txt").write_text("x"))
    line = error_line(views, before, "create")
    assert " create /.datasets/Pets/new.txt: " in line


def test_a_stored_record_deeper_than_todays_limit_but_readable_is_kept(old_store: Path,
                                                                       mount_factory: Callable) -> None:
    """100 deep was accepted before the limit of 64 and can still be shown: it stays,
    also through a later change of the file."""
    plant_metadata(old_store, "/A/needle.txt", nested(100).encode())
    mounted = mount_factory(old_store, "mnt")
    item = mounted.path / "A" / "needle.txt"
    os.chmod(item, 0o600)
    assert json.loads(os.getxattr(item, META)) == json.loads(nested(100))


def test_renaming_a_project_to_a_bad_name_is_recorded_with_its_path(views: Mounted) -> None:
    before = errors_of(views)
    projects = os.fsencode(views.path / ".projects")
    fails_with(errno.EILSEQ, lambda: os.rename(projects + b"/Labelling", projects + b"/bad\xff"))
    line = error_line(views, before, "rename")
    assert " rename /.projects/Labelling: " in line and "not UTF-8 text" in line
    assert os.path.isdir(views.path / ".projects" / "Labelling")
