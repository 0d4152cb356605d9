"""Real media made for tests: images by Pillow, a video by PyAV, audio by `wave`, DICOM
slices by pydicom."""

from __future__ import annotations

import io
import struct
import wave
from pathlib import Path

import av
import numpy as np
import pydicom
import pydicom.data
from PIL import Image
from pydicom.uid import generate_uid


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48)) -> bytes:
    width, height = size
    gradient = np.zeros((height, width, 3), dtype=np.uint8)
    gradient[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    gradient[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    out = io.BytesIO()
    Image.fromarray(gradient).save(out, format=fmt)
    return out.getvalue()


def video_file(path: Path, frames: int = 12, size: tuple[int, int] = (96, 64), fps: int = 24) -> Path:
    width, height = size
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(frames):
            pixels = np.full((height, width, 3), (i * 20) % 256, dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def wav_bytes() -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x01" * 800)
    return out.getvalue()


def nifti_bytes() -> bytes:
    header = bytearray(352)
    struct.pack_into("<i", header, 0, 348)
    header[344:348] = b"n+1\x00"
    return bytes(header) + b"\x00" * 64


def pdf_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (20, 20), "white").save(out, format="PDF")
    return out.getvalue()


CT = Path(pydicom.data.get_testdata_file("CT_small.dcm", download=False))


def slice_bytes(
    series_uid: str,
    z: float,
    instance: int,
    description: str | None = "Chest CT",
    drop: tuple[str, ...] = (),
    sop_uid: str | None = None,
) -> bytes:
    ds = pydicom.dcmread(CT)
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = sop_uid or generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [0.0, 0.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    if description:
        ds.SeriesDescription = description
    for tag in drop:
        delattr(ds, tag)
    out = io.BytesIO()
    ds.save_as(out)
    return out.getvalue()


def write_series(folder: Path, uid: str, zs: list[float]) -> list[Path]:
    paths = []
    for i, z in enumerate(zs):
        path = folder / f"slice{i}.dcm"
        path.write_bytes(slice_bytes(uid, z, instance=len(zs) - i))
        paths.append(path)
    return paths
