"""DICOM headers through pydicom (headers only: pixel data is never decoded)."""

from __future__ import annotations

from typing import BinaryIO

from encfs.model import Kind, Media

IDENTIFYING_TAGS = {
    "StudyInstanceUID": "study_uid", "SeriesInstanceUID": "series_uid",
    "SOPInstanceUID": "instance_uid", "PatientID": "patient_id", "Modality": "modality",
}


def probe_dicom(source: BinaryIO) -> Media:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(source, stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
        return Media(note=f"looks like DICOM but could not be parsed: {exc}")
    extra = {key: str(ds.get(tag)) for tag, key in IDENTIFYING_TAGS.items() if ds.get(tag) is not None}
    return Media(
        kind=Kind.DICOM_FILE, mime="application/dicom",
        width=_int(ds.get("Columns")), height=_int(ds.get("Rows")),
        frames=_int(ds.get("NumberOfFrames")) or 1, extra=extra,
    )


def _int(value: object) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
