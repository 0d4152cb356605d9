"""DICOM files on the mount and from the CLI: validation, attributes, series."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from click.testing import CliRunner
from pydicom.uid import generate_uid

from encfs.cli import main

from conftest import Mounted, errors_of
from media import CT, slice_bytes, write_series

RLE = Path(pydicom.data.get_testdata_file("MR_small_RLE.dcm", download=False))


def manifest(path: Path) -> dict:
    return json.loads(path.read_text())


def test_valid_dicom_is_a_dicom_file_with_tags(mount: Mounted) -> None:
    (mount.path / "ct").mkdir()
    shutil.copy(CT, mount.path / "ct" / "a.dcm")
    path = mount.path / "ct" / "a.dcm"
    assert os.getxattr(path, "user.encord.kind") == b"dicom_file"
    ds = pydicom.dcmread(CT)
    assert os.getxattr(path, "user.encord.dicom.series_uid").decode() == ds.SeriesInstanceUID
    assert os.getxattr(path, "user.encord.dicom.patient_id").decode() == ds.PatientID
    assert os.getxattr(path, "user.encord.width") == b"128"


@pytest.mark.parametrize(
    "tag", ["Rows", "Columns", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID"]
)
def test_missing_required_tag_is_refused_whole(mount: Mounted, tag: str) -> None:
    (mount.path / "ct").mkdir()
    target = mount.path / "ct" / "bad.dcm"
    with pytest.raises(OSError) as exc, open(target, "wb") as f:
        f.write(slice_bytes(generate_uid(), 0.0, 1, drop=(tag,)))
    assert exc.value.errno == errno.EINVAL
    assert not target.exists()
    assert tag in errors_of(mount)
    assert [p for p in (mount.store / "blobs").rglob("*") if p.is_file()] == []


def test_series_forms_in_spatial_order_and_follows_changes(mount: Mounted) -> None:
    folder = mount.path / "ct"
    folder.mkdir()
    uid = generate_uid()
    paths = write_series(folder, uid, [10.0, 0.0, 5.0])  # instance numbers disagree with position
    series = folder / "Chest CT.dcmseries"
    content = manifest(series)
    assert [s["path"] for s in content["slices"]] == ["slice1.dcm", "slice2.dcm", "slice0.dcm"]
    assert content["render_3d"] is True
    assert os.getxattr(series, "user.encord.kind") == b"dicom_series"
    assert os.getxattr(series, "user.encord.frames") == b"3"
    paths[1].unlink()
    assert [s["path"] for s in manifest(series)["slices"]] == ["slice2.dcm", "slice0.dcm"]
    (folder / "late.dcm").write_bytes(slice_bytes(uid, -5.0, 9))
    assert [s["path"] for s in manifest(series)["slices"]] == ["late.dcm", "slice2.dcm", "slice0.dcm"]
    (folder / "late.dcm").rename(folder / "first.dcm")
    assert manifest(series)["slices"][0]["path"] == "first.dcm"
    for path in folder.glob("*.dcm"):
        path.unlink()
    assert os.listdir(folder) == []


def test_series_without_3d_tags_says_which(mount: Mounted) -> None:
    folder = mount.path / "ct"
    folder.mkdir()
    uid = generate_uid()
    (folder / "a.dcm").write_bytes(slice_bytes(uid, 0.0, 1))
    (folder / "b.dcm").write_bytes(slice_bytes(uid, 1.0, 2, drop=("SliceThickness",)))
    content = manifest(folder / "Chest CT.dcmseries")
    assert content["render_3d"] is False
    assert "SliceThickness" in content["missing_for_3d"]


def test_series_named_by_uid_without_description_and_unique(mount: Mounted) -> None:
    folder = mount.path / "ct"
    folder.mkdir()
    uid = generate_uid()
    (folder / "a.dcm").write_bytes(slice_bytes(uid, 0.0, 1, description=None))
    assert (folder / f"{uid}.dcmseries").exists()
    other = generate_uid()
    (folder / "b.dcm").write_bytes(slice_bytes(other, 0.0, 1, description="Chest CT"))
    (folder / "c.dcm").write_bytes(slice_bytes(generate_uid(), 0.0, 1, description="Chest CT"))
    assert {"Chest CT.dcmseries", "Chest CT (2).dcmseries"} <= set(os.listdir(folder))


def test_duplicate_sop_instance_in_series_is_refused(mount: Mounted) -> None:
    folder = mount.path / "ct"
    folder.mkdir()
    uid, sop = generate_uid(), generate_uid()
    (folder / "a.dcm").write_bytes(slice_bytes(uid, 0.0, 1, sop_uid=sop))
    with pytest.raises(OSError) as exc:
        (folder / "b.dcm").write_bytes(slice_bytes(uid, 1.0, 2, sop_uid=sop))
    assert exc.value.errno == errno.EINVAL
    assert not (folder / "b.dcm").exists()
    assert "SOPInstanceUID" in errors_of(mount)


def test_moving_a_slice_moves_it_between_series(mount: Mounted) -> None:
    (mount.path / "one").mkdir()
    (mount.path / "two").mkdir()
    uid = generate_uid()
    write_series(mount.path / "one", uid, [0.0, 1.0])
    os.rename(mount.path / "one" / "slice0.dcm", mount.path / "two" / "moved.dcm")
    assert len(manifest(mount.path / "one" / "Chest CT.dcmseries")["slices"]) == 1
    assert [s["path"] for s in manifest(mount.path / "two" / "Chest CT.dcmseries")["slices"]] == ["moved.dcm"]


def test_compressed_transfer_syntax_is_accepted(mount: Mounted) -> None:
    (mount.path / "mr").mkdir()
    shutil.copy(RLE, mount.path / "mr" / "rle.dcm")
    assert os.getxattr(mount.path / "mr" / "rle.dcm", "user.encord.kind") == b"dicom_file"


def test_cp_and_rsync_of_a_tree_with_one_bad_file(mount: Mounted, tmp_path: Path) -> None:
    src = tmp_path / "study"
    src.mkdir()
    uid = generate_uid()
    write_series(src, uid, [0.0, 1.0, 2.0])
    (src / "zz-broken.dcm").write_bytes(slice_bytes(uid, 3.0, 4, drop=("PatientID",)))
    cp = subprocess.run(["cp", "-r", str(src), str(mount.path)], capture_output=True, text=True)
    assert cp.returncode != 0 and "zz-broken.dcm" in cp.stderr
    assert sorted(os.listdir(mount.path / "study")) == [
        "Chest CT.dcmseries",
        "slice0.dcm",
        "slice1.dcm",
        "slice2.dcm",
    ]
    rsync = subprocess.run(
        ["rsync", "-a", f"{src}/", str(mount.path / "again")], capture_output=True, text=True
    )
    assert rsync.returncode != 0  # rsync stops at the refused close; what it copied before stays
    assert not any("broken" in name for name in os.listdir(mount.path / "again"))
    assert len(manifest(mount.path / "again" / "Chest CT.dcmseries")["slices"]) == 3


def test_cli_batch_dicom_series(store: Path, tmp_path: Path) -> None:
    uid = generate_uid()
    paths = write_series(tmp_path, uid, [0.0, 2.0, 1.0])
    runner = CliRunner()
    assert runner.invoke(main, ["folder", "create", "--store", str(store), "ct"]).exit_code == 0
    result = runner.invoke(main, ["batch", "dicom-series", "--store", str(store), "ct", *map(str, paths)])
    assert result.exit_code == 0, result.output
    assert "series /ct/Chest CT.dcmseries: 3 slices, 3D: yes" in result.output
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(slice_bytes(uid, 5.0, 9, drop=("Rows", "Columns")))
    result = runner.invoke(main, ["batch", "dicom-series", "--store", str(store), "ct", str(bad)])
    assert result.exit_code != 0
    assert "Rows" in result.stderr and "Columns" in result.stderr
    listing = runner.invoke(main, ["ls", "--store", str(store), "ct"]).output.split("\n")
    assert "bad.dcm" not in listing
    info = json.loads(runner.invoke(main, ["info", "--json", "--store", str(store), "ct/slice0.dcm"]).output)
    assert info["groups"] == ["/ct/Chest CT.dcmseries"]
    assert info["dicom"]["series_uid"] == uid
    found = runner.invoke(main, ["search", "--store", str(store), "chest", "--kind", "dicom_series"]).output
    assert found.strip() == "/ct/Chest CT.dcmseries"
