"""DICOM headers and series, on the files pydicom ships and series built from them."""

from __future__ import annotations

import copy
import io
import json
import pickle
import random
from dataclasses import replace
from functools import cache
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.uid import UID, generate_uid

from encfs.media.dicom_series import (
    RENDER_3D_TAGS,
    REQUIRED_TAGS,
    DicomHeader,
    DicomRefused,
    NotDicom,
    can_render_3d,
    order_slices,
    read_header,
    series_manifest,
    series_title,
)

PYDICOM_DIR = Path(pydicom.__file__).resolve().parent
AXIAL = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
CORONAL = [1.0, 0.0, 0.0, 0.0, 0.0, -1.0]  # normal (0, 1, 0): slices stack along y


def shipped(name: str) -> Path:
    """A file shipped inside the pydicom package; never downloaded."""
    found = pydicom.data.get_testdata_file(name, download=False)
    assert found is not None, f"{name} is not shipped with pydicom {pydicom.__version__}"
    path = Path(found).resolve()
    assert path.is_relative_to(PYDICOM_DIR)
    return path


@cache
def _ct() -> Dataset:
    return pydicom.dcmread(shipped("CT_small.dcm"))


def ct_bytes(delete: tuple[str, ...] = (), **changes: object) -> bytes:
    """CT_small.dcm with tags deleted or set, written as a real DICOM file."""
    ds = copy.deepcopy(_ct())
    for name in delete:
        delattr(ds, name)
    for name, value in changes.items():
        setattr(ds, name, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def ct_slice(**changes: object) -> DicomHeader:
    """A new instance of CT_small's series, read back through read_header."""
    delete = tuple(name for name, value in changes.items() if value is None)
    kept = {name: value for name, value in changes.items() if value is not None}
    return read_header(ct_bytes(delete, SOPInstanceUID=generate_uid(), **kept))


def stack(zs: list[float], numbers: list[int], orientation: list[float] = AXIAL) -> list[DicomHeader]:
    """Slices of CT_small's series at `zs` along the normal of `orientation`."""
    along = next(i for i, v in enumerate(_normal(orientation)) if v)
    slices = []
    for z, number in zip(zs, numbers, strict=True):
        position = [10.0, 20.0, 30.0]
        position[along] = z
        slices.append(ct_slice(ImagePositionPatient=position, ImageOrientationPatient=orientation,
                               InstanceNumber=number))
    return slices


def _normal(o: list[float]) -> tuple[float, float, float]:
    return (o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3])


# --- test data ---------------------------------------------------------------------------


SHIPPED = ["CT_small.dcm", "MR_small.dcm", "MR_small_RLE.dcm", "JPEG2000.dcm", "MR_small_jp2klossless.dcm",
           "SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle_2frame.dcm", "examples_ybr_color.dcm",
           "693_J2KI.dcm", "ExplVR_LitEndNoMeta.dcm", "SC_rgb_jpeg_dcmd.dcm", "rtplan.dcm"]


@pytest.mark.parametrize("name", SHIPPED)
def test_test_files_ship_with_pydicom(name: str) -> None:
    assert shipped(name).stat().st_size > 0


# --- one file ----------------------------------------------------------------------------


def test_reads_ct_header() -> None:
    header = read_header(shipped("CT_small.dcm"))
    assert (header.rows, header.columns, header.frames) == (128, 128, 1)
    assert header.modality == "CT" and header.patient_id == "1CT1" and header.instance_number == 1
    assert header.position == pytest.approx((-158.135803, -179.035797, -75.699997))
    assert header.orientation == tuple(AXIAL)
    assert header.slice_thickness == 5.0 and header.pixel_spacing == pytest.approx((0.661468, 0.661468))
    assert header.transfer_syntax == pydicom.uid.ExplicitVRLittleEndian
    assert header.missing_3d == ()
    assert header.sop_uid == str(_ct().SOPInstanceUID)


def test_attributes_are_short_names_and_text() -> None:
    attrs = read_header(shipped("CT_small.dcm")).attributes()
    assert set(attrs) == {"study_uid", "series_uid", "instance_uid", "patient_id", "modality",
                          "position", "orientation", "slice_thickness", "pixel_spacing"}
    assert all(isinstance(value, str) for value in attrs.values())
    assert attrs["instance_uid"] == str(_ct().SOPInstanceUID)
    assert [float(v) for v in attrs["position"].split("\\")] == pytest.approx([-158.135803, -179.035797,
                                                                              -75.699997])
    assert attrs["slice_thickness"] == "5.0"


def test_attributes_leave_out_absent_3d_tags() -> None:
    attrs = read_header(shipped("JPEG2000.dcm")).attributes()
    assert "pixel_spacing" in attrs
    assert not {"position", "orientation", "slice_thickness"} & set(attrs)


def test_bytes_path_and_file_object_agree(tmp_path: Path) -> None:
    data = shipped("CT_small.dcm").read_bytes()
    with open(shipped("CT_small.dcm"), "rb") as f:
        from_file = read_header(f)
        assert f.tell() == 0
    assert read_header(data) == read_header(shipped("CT_small.dcm")) == from_file


@pytest.mark.parametrize(
    ("name", "syntax"),
    [("MR_small_RLE.dcm", pydicom.uid.RLELossless), ("JPEG2000.dcm", pydicom.uid.JPEG2000),
     ("MR_small_jp2klossless.dcm", pydicom.uid.JPEG2000Lossless),
     ("SC_rgb_jpeg_dcmtk.dcm", pydicom.uid.JPEGBaseline8Bit),
     ("SC_rgb_jpeg_gdcm.dcm", pydicom.uid.JPEGLosslessSV1)],
)
def test_compressed_transfer_syntaxes_read_without_decoding(name: str, syntax: str) -> None:
    header = read_header(shipped(name))
    assert header.transfer_syntax == syntax and UID(syntax).is_compressed
    assert header.rows > 0 and header.columns > 0


@pytest.mark.parametrize(("name", "frames"), [("SC_rgb_rle_2frame.dcm", 2), ("examples_ybr_color.dcm", 30)])
def test_multi_frame(name: str, frames: int) -> None:
    header = read_header(shipped(name))
    assert header.frames == frames
    assert "ImagePositionPatient" in header.missing_3d


# --- refusals ----------------------------------------------------------------------------


@pytest.mark.parametrize("tag", REQUIRED_TAGS)
def test_each_required_tag_is_required(tag: str) -> None:
    with pytest.raises(DicomRefused) as caught:
        read_header(ct_bytes(delete=(tag,)))
    assert caught.value.missing == [tag]
    assert tag in str(caught.value)


def test_all_missing_tags_are_named() -> None:
    with pytest.raises(DicomRefused) as caught:
        read_header(ct_bytes(delete=("PatientID", "Columns", "SeriesInstanceUID")))
    assert caught.value.missing == ["Columns", "SeriesInstanceUID", "PatientID"]
    assert all(tag in str(caught.value) for tag in caught.value.missing)
    assert pickle.loads(pickle.dumps(caught.value)).missing == caught.value.missing


@pytest.mark.parametrize("blank", ["", "  "])
def test_blank_patient_id_counts_as_missing(blank: str) -> None:
    with pytest.raises(DicomRefused) as caught:
        read_header(ct_bytes(PatientID=blank))
    assert caught.value.missing == ["PatientID"]


@pytest.mark.parametrize(("name", "missing"),
                         [("SC_rgb_jpeg_dcmd.dcm", ["PatientID"]), ("rtplan.dcm", ["Rows", "Columns"])])
def test_shipped_files_that_encord_would_refuse(name: str, missing: list[str]) -> None:
    with pytest.raises(DicomRefused) as caught:
        read_header(shipped(name))
    assert caught.value.missing == missing


def test_no_preamble_but_readable_is_dicom() -> None:
    with pytest.raises(DicomRefused) as caught:  # not NotDicom: pydicom reads it when forced
        read_header(shipped("ExplVR_LitEndNoMeta.dcm"))
    assert caught.value.missing == ["Rows", "Columns", "PatientID"]


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (8, 8)).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize("data", [b"", b"just some text\n" * 20, bytes(512), _png(), b'{"kind": "json"}'],
                         ids=["empty", "text", "zeros", "png", "json"])
def test_not_dicom(data: bytes) -> None:
    with pytest.raises(NotDicom):
        read_header(data)


def test_dicm_prefix_with_garbage_is_refused_not_ignored() -> None:
    with pytest.raises(DicomRefused) as caught:
        read_header(bytes(128) + b"DICM" + b"\x01\x02garbage" * 10)
    assert not isinstance(caught.value, NotDicom)


def test_missing_file_is_an_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_header(tmp_path / "absent.dcm")


# --- series ------------------------------------------------------------------------------


def test_spatial_order_wins_over_instance_numbers() -> None:
    zs = [-40.0, -35.0, -30.0, -25.0, -20.0, -15.0]
    numbers = [6, 2, 5, 1, 4, 3]  # disagree with the geometry
    slices = stack(zs, numbers)
    shuffled = list(range(len(slices)))
    random.Random(7).shuffle(shuffled)
    given = [slices[i] for i in shuffled]
    order = order_slices(given)
    assert [given[i].position[2] for i in order] == zs  # type: ignore[index]


def test_spatial_order_follows_the_slice_normal_not_z() -> None:
    ys = [3.0, -9.0, 12.0, 0.0]
    given = stack(ys, [1, 2, 3, 4], orientation=CORONAL)
    assert {h.position[2] for h in given} == {30.0}  # type: ignore[index]
    assert [given[i].position[1] for i in order_slices(given)] == sorted(ys)  # type: ignore[index]


def test_one_slice_without_position_falls_back_to_instance_number() -> None:
    given = [*stack([0.0, 5.0, 10.0], [3, 1, 2]), ct_slice(ImagePositionPatient=None, InstanceNumber=4)]
    assert given[3].position is None and given[3].missing_3d == ("ImagePositionPatient",)
    assert order_slices(given) == [1, 2, 0, 3]
    assert can_render_3d(given) == (False, ["ImagePositionPatient"])
    assert series_manifest("t", [(f"s{i}.dcm", h) for i, h in enumerate(given)])["order"] == "instance_number"


def test_without_instance_numbers_order_is_by_uid_numerically() -> None:
    uids = ["1.2.826.0.1.3680043.10", "1.2.826.0.1.3680043.9", "1.2.826.0.1.3680043.100"]
    unplaced = ("ImagePositionPatient", "InstanceNumber")
    given = [read_header(ct_bytes(unplaced, SOPInstanceUID=uid)) for uid in uids]
    assert all(h.instance_number is None for h in given)
    assert [given[i].sop_uid for i in order_slices(given)] == [uids[1], uids[0], uids[2]]


def test_crossed_orientations_are_not_one_stack() -> None:
    given = [*stack([0.0, 5.0], [2, 1]), *stack([-3.0], [3], orientation=CORONAL)]
    assert order_slices(given) == [1, 0, 2]  # by instance number, not a meaningless projection


def test_order_is_stable_for_equal_positions() -> None:
    given = stack([5.0, 0.0, 5.0, 0.0], [1, 2, 3, 4])
    assert order_slices(given) == [1, 3, 0, 2]


def test_can_render_3d() -> None:
    full = stack([0.0, 1.0], [1, 2])
    assert can_render_3d(full) == (True, [])
    partial = [*full, read_header(shipped("JPEG2000.dcm")),
               ct_slice(PixelSpacing=None, SliceThickness=None)]
    assert can_render_3d(partial) == (False, list(RENDER_3D_TAGS))
    assert can_render_3d([]) == (False, [])


def test_series_manifest_is_json_and_in_order() -> None:
    given = stack([10.0, -10.0, 0.0], [1, 2, 3])
    paths = ["a/top.dcm", "a/bottom.dcm", "a/middle.dcm"]
    manifest = series_manifest("Head CT", list(zip(paths, given, strict=True)))
    assert json.loads(json.dumps(manifest)) == manifest
    assert manifest["kind"] == "dicom_series" and manifest["title"] == "Head CT"
    assert manifest["order"] == "spatial"
    assert manifest["render_3d"] is True and manifest["missing_for_3d"] == []
    assert manifest["slice_count"] == 3 and (manifest["rows"], manifest["columns"]) == (128, 128)
    assert manifest["series_uid"] == given[0].series_uid and manifest["study_uid"] == given[0].study_uid
    assert manifest["patient_id"] == "1CT1" and manifest["modality"] == "CT"
    assert [s["path"] for s in manifest["slices"]] == ["a/bottom.dcm", "a/middle.dcm", "a/top.dcm"]
    assert [s["instance_number"] for s in manifest["slices"]] == [2, 3, 1]
    assert manifest["slices"][0] == {
        "path": "a/bottom.dcm", "sop_uid": given[1].sop_uid, "instance_number": 2,
        "position": [10.0, 20.0, -10.0],
    }
    with pytest.raises(ValueError):
        series_manifest("empty", [])


def test_series_title() -> None:
    plain = read_header(shipped("CT_small.dcm"))
    assert plain.series_description is None
    assert series_title([plain]) == plain.series_uid
    described = read_header(shipped("693_J2KI.dcm"))
    assert described.series_description == "5/5mm Plain"
    assert series_title([plain, described]) == "5_5mm Plain"
    assert series_title([read_header(ct_bytes(SeriesDescription="  Axial\x00 T1  "))]) == "Axial T1"


@pytest.mark.parametrize("description", [".", "..", "   ", "\x00"])
def test_series_title_never_unusable(description: str) -> None:
    header = replace(read_header(shipped("CT_small.dcm")), series_description=description)
    assert series_title([header]) == header.series_uid


def test_series_title_fits_a_file_name() -> None:
    header = replace(read_header(shipped("CT_small.dcm")), series_description="Gehirn " + "ä" * 300)
    title = series_title([header])
    assert len(title.encode()) <= 200 and title.startswith("Gehirn ä") and "/" not in title
    title.encode().decode("utf-8")  # cut on a character boundary


def test_fast_tag_reader_agrees_with_pydicom_on_every_shipped_file() -> None:
    """The fast reader answers only when sure; where it does, it must match pydicom."""
    import io
    import os
    import warnings

    from encfs.media import dicom_series
    from encfs.media.dicom_tags import read_tags

    answered = 0
    for name in pydicom.data.get_testdata_files():
        if not os.path.isfile(name):
            continue
        data = Path(name).read_bytes()
        tags = read_tags(data[: 256 * 1024], dicom_series.REQUIRED_TAGS)
        if tags is None:
            continue
        answered += 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            slow = dicom_series._header(dicom_series._dataset(io.BytesIO(data), 0, True))
        assert dicom_series._header(tags) == slow, name
    assert answered >= 50
