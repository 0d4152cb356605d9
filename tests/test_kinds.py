"""Kinds come from the bytes at commit, never from the name."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pydicom.data
import pytest
from click.testing import CliRunner

from encfs.cli import main

from conftest import Mounted
from media import image_bytes, nifti_bytes, pdf_bytes, video_file, wav_bytes


def attr(path: Path, name: str) -> str:
    return os.getxattr(path, f"user.encord.{name}").decode()


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("TIFF", "image/tiff"),
     ("WEBP", "image/webp"), ("BMP", "image/bmp")],
)
def test_images_by_pillow(folder: Path, fmt: str, mime: str) -> None:
    path = folder / "picture.dat"  # the name says nothing
    path.write_bytes(image_bytes(fmt, (123, 45)))
    assert attr(path, "kind") == "image"
    assert attr(path, "mime") == mime
    assert (attr(path, "width"), attr(path, "height")) == ("123", "45")


def test_video_by_pyav(folder: Path, tmp_path: Path) -> None:
    source = video_file(tmp_path / "clip.mp4", frames=24, size=(96, 64), fps=24)
    shutil.copy(source, folder / "clip.mp4")
    path = folder / "clip.mp4"
    assert attr(path, "kind") == "video"
    assert attr(path, "mime") == "video/mp4"
    assert (attr(path, "width"), attr(path, "height")) == ("96", "64")
    assert float(attr(path, "fps")) == pytest.approx(24)
    assert int(attr(path, "frames")) == 24
    assert float(attr(path, "duration")) == pytest.approx(1.0, abs=0.1)


def test_broken_video_is_other_with_reason(mount: Mounted, folder: Path) -> None:
    path = folder / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypisom" + os.urandom(4000))
    assert attr(path, "kind") == "other"
    result = CliRunner().invoke(main, ["info", "--json", "--store", str(mount.store), "/data/broken.mp4"])
    details = json.loads(result.output)
    assert details["kind"] == "other"
    assert "could not be parsed" in details["note"]


@pytest.mark.parametrize(
    ("payload", "kind", "mime"),
    [
        (pdf_bytes(), "pdf", "application/pdf"),
        (wav_bytes(), "audio", "audio/wav"),
        (b"ID3\x04\x00" + os.urandom(500), "audio", "audio/mpeg"),
        (nifti_bytes(), "nifti", "application/x-nifti"),
        ("plain text, ünïcode\n".encode(), "text", "text/plain"),
        (os.urandom(4096), "other", "application/octet-stream"),
        (b"", "other", "application/octet-stream"),
    ],
)
def test_other_kinds_by_magic(folder: Path, payload: bytes, kind: str, mime: str) -> None:
    path = folder / "file.jpg"  # a misleading name
    path.write_bytes(payload)
    if payload:
        assert attr(path, "kind") == kind
        assert attr(path, "mime") == mime


def test_dicom_file_from_pydicom_test_data(folder: Path) -> None:
    source = Path(pydicom.data.get_testdata_file("CT_small.dcm"))
    shutil.copy(source, folder / "slice")
    path = folder / "slice"
    assert attr(path, "kind") == "dicom_file"
    assert attr(path, "mime") == "application/dicom"
    assert attr(path, "width") == "128"
    assert "1.3.6.1.4.1.5962" in attr(path, "dicom.study_uid")


def test_kind_follows_new_content(folder: Path) -> None:
    path = folder / "changing"
    path.write_text("now text")
    assert attr(path, "kind") == "text"
    path.write_bytes(image_bytes("PNG"))
    assert attr(path, "kind") == "image"


def test_upload_detects_kinds_too(tmp_path: Path, store: Path) -> None:
    (tmp_path / "a.png").write_bytes(image_bytes("PNG", (30, 20)))
    runner = CliRunner()
    assert runner.invoke(main, ["folder", "create", "--store", str(store), "imgs"]).exit_code == 0
    uploaded = runner.invoke(main, ["upload", "--store", str(store), "imgs", str(tmp_path / "a.png")])
    assert uploaded.exit_code == 0
    details = json.loads(runner.invoke(main, ["info", "--json", "--store", str(store), "imgs/a.png"]).output)
    assert (details["kind"], details["width"], details["height"]) == ("image", 30, 20)
