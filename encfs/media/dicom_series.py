"""DICOM files as slices of a series: the header Encord needs from each file, and how a
set of files becomes one ordered series. Headers only: pixel data is never read, so
compressed transfer syntaxes (JPEG, RLE, JPEG 2000, ...) cost nothing and need no codec."""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from encfs.media.dicom_tags import read_tags

REQUIRED_TAGS = ("Rows", "Columns", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "PatientID")
RENDER_3D_TAGS = ("ImagePositionPatient", "ImageOrientationPatient", "SliceThickness", "PixelSpacing")

# Without the DICM prefix pydicom reads anything when forced (text becomes one odd element),
# so a forced read only counts as DICOM when it found one of these.
_ANCHOR_TAGS = (*REQUIRED_TAGS, "SOPClassUID", "Modality")
# Only these are parsed: a full header read costs several times more, and a study is
# validated slice by slice while it is copied in.
_READ_TAGS = [*_ANCHOR_TAGS, *RENDER_3D_TAGS, "NumberOfFrames", "SeriesDescription", "InstanceNumber"]
_PREFIX_OFFSET, _PREFIX = 128, b"DICM"
_FAST_READ = 256 * 1024  # headers are far smaller; a longer one goes to pydicom
# Values larger than this stay on disk unless asked for: a forced read of a big non-DICOM
# file would otherwise load its first "element" (up to 4 GiB) into memory.
_DEFER_SIZE = 64 * 1024
_PARALLEL = 0.999  # |cos| between slice normals above which two slices share a stack
_TITLE_MAX_BYTES = 200
UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
UID_MAX_BYTES = 64  # the standard's limit for UI values; UIDs are part of the store's keys
KEPT_TEXT_TAGS = ("PatientID", "Modality", "SeriesDescription")
KEPT_TEXT_MAX_BYTES = 1024  # 16 times DICOM's limits (64 for LO, 16 for CS): only damage is longer
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class NotDicom(ValueError):
    """The bytes are not DICOM at all."""


class DicomRefused(ValueError):
    """DICOM, but not a file Encord would take. `missing` names the required tags it lacks."""

    def __init__(self, missing: Sequence[str] = (), reason: str | None = None) -> None:
        self.missing = list(missing)
        if reason is None and not self.missing:
            reason = "DICOM file refused"
        if reason is None:
            tags = ", ".join(self.missing)
            noun = "tag" if len(self.missing) == 1 else "tags"
            reason = f"DICOM file lacks the required {noun} {tags}; Encord refuses it without them"
        super().__init__(reason)

    def __reduce__(self) -> tuple[type[DicomRefused], tuple[list[str], str]]:
        return type(self), (self.missing, str(self))  # survives pickling, unlike ValueError's default


@dataclass(frozen=True)
class DicomHeader:
    """What one DICOM file says about itself, enough to place it in a series."""

    study_uid: str
    series_uid: str
    sop_uid: str
    patient_id: str
    rows: int
    columns: int
    frames: int
    modality: str | None
    series_description: str | None
    instance_number: int | None
    position: tuple[float, float, float] | None
    orientation: tuple[float, ...] | None
    slice_thickness: float | None
    pixel_spacing: tuple[float, float] | None
    transfer_syntax: str | None
    missing_3d: tuple[str, ...]

    def attributes(self) -> dict[str, str]:
        """Short names and text values for user.encord.dicom.* xattrs. Multiple values are
        joined with a backslash, as DICOM itself writes them."""
        found: dict[str, str] = {
            "study_uid": self.study_uid, "series_uid": self.series_uid,
            "instance_uid": self.sop_uid, "patient_id": self.patient_id,
        }
        if self.modality is not None:
            found["modality"] = self.modality
        if self.position is not None:
            found["position"] = _numbers_text(self.position)
        if self.orientation is not None:
            found["orientation"] = _numbers_text(self.orientation)
        if self.slice_thickness is not None:
            found["slice_thickness"] = _numbers_text((self.slice_thickness,))
        if self.pixel_spacing is not None:
            found["pixel_spacing"] = _numbers_text(self.pixel_spacing)
        return found


def read_header(source: bytes | Path | BinaryIO) -> DicomHeader:
    """The header of one DICOM file. Raises NotDicom or DicomRefused; a file that does not
    exist raises the usual OSError."""
    with _opened(source) as f:
        start = f.tell()
        head = f.read(_FAST_READ)
        f.seek(start)
        tags = read_tags(head, REQUIRED_TAGS)
        if tags is not None:
            return _header(tags)
        has_prefix = head[_PREFIX_OFFSET : _PREFIX_OFFSET + len(_PREFIX)] == _PREFIX
        ds = _dataset(f, start, has_prefix)
        try:  # inside `with`: deferred values are read from the open file
            return _header(ds)
        except DicomRefused:
            raise
        except Exception as exc:  # lazily parsed values fail in as many ways as the reader does
            raise DicomRefused(reason=f"DICOM header could not be read: {exc}") from exc


def order_slices(headers: Sequence[DicomHeader]) -> list[int]:
    """Indices of `headers` in the order the slices lie in the body (see `_ordering`)."""
    return _ordering(headers)[1]


def can_render_3d(headers: Sequence[DicomHeader]) -> tuple[bool, list[str]]:
    """Whether every slice has every tag 3D rendering needs; if not, the union of the
    missing tag names. An empty series cannot be rendered and lacks nothing in particular."""
    if not headers:
        return False, []
    absent = {name for header in headers for name in header.missing_3d}
    missing = [name for name in RENDER_3D_TAGS if name in absent]
    return not missing, missing


def series_manifest(title: str, slices: Sequence[tuple[str, DicomHeader]]) -> dict[str, Any]:
    """A JSON-able description of a series, its slices (by path) in spatial order.
    Series-wide values come from the first slice in that order."""
    if not slices:
        raise ValueError("a DICOM series needs at least one slice")
    headers = [header for _, header in slices]
    order_kind, order = _ordering(headers)
    first = headers[order[0]]
    render_3d, missing = can_render_3d(headers)
    return {
        "kind": "dicom_series",
        "title": title,
        "series_uid": first.series_uid,
        "study_uid": first.study_uid,
        "patient_id": first.patient_id,
        "modality": next((h.modality for h in (headers[i] for i in order) if h.modality), None),
        "slice_count": len(slices),
        "rows": first.rows,
        "columns": first.columns,
        "render_3d": render_3d,
        "missing_for_3d": missing,
        "order": order_kind,
        "slices": [
            {
                "path": slices[i][0],
                "sop_uid": slices[i][1].sop_uid,
                "instance_number": slices[i][1].instance_number,
                "position": list(slices[i][1].position) if slices[i][1].position else None,
            }
            for i in order
        ],
    }


def series_title(headers: Sequence[DicomHeader]) -> str:
    """A file name for the series: the first SeriesDescription that survives being made
    safe, else the SeriesInstanceUID."""
    if not headers:
        raise ValueError("a DICOM series needs at least one slice")
    for header in headers:
        if header.series_description and (title := _safe_name(header.series_description)):
            return title
    return _safe_name(headers[0].series_uid) or "dicom_series"


# --- reading ---------------------------------------------------------------------------


@contextmanager
def _opened(source: bytes | Path | BinaryIO) -> Iterator[BinaryIO]:
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(bytes(source))
    elif isinstance(source, str | os.PathLike):
        with open(source, "rb") as f:
            yield f
    else:
        yield source


def _dataset(f: BinaryIO, start: int, has_prefix: bool) -> Any:
    """The parsed header. With the DICM prefix any failure is a refusal (it claims to be
    DICOM); without it a forced read must find a real DICOM tag or it is not DICOM."""
    import pydicom

    try:
        ds = pydicom.dcmread(f, stop_before_pixels=True, force=not has_prefix, defer_size=_DEFER_SIZE,
                             specific_tags=_READ_TAGS)
    except Exception as exc:  # pydicom raises many kinds on corrupt input
        if has_prefix:
            raise DicomRefused(reason=f"DICOM file could not be parsed: {exc}") from exc
        raise NotDicom(f"not DICOM: no DICM prefix and pydicom cannot read it ({exc})") from exc
    finally:
        f.seek(start)
    if not has_prefix and not any(tag in ds for tag in _ANCHOR_TAGS):
        raise NotDicom("not DICOM: no DICM prefix and no DICOM identifying tags")
    return ds


def _header(ds: Any) -> DicomHeader:
    rows, columns = _int(ds.get("Rows")), _int(ds.get("Columns"))
    texts = {name: _text(ds.get(name)) for name in REQUIRED_TAGS if name not in ("Rows", "Columns")}
    found: dict[str, object] = {"Rows": rows, "Columns": columns, **texts}
    missing = [name for name in REQUIRED_TAGS if found[name] is None]
    if missing or rows is None or columns is None:
        raise DicomRefused(missing)
    kept = {**texts, **{name: _text(ds.get(name)) for name in ("Modality", "SeriesDescription")}}
    _check_lengths(kept)
    position = _floats(ds.get("ImagePositionPatient"), 3)
    orientation = _floats(ds.get("ImageOrientationPatient"), 6)
    thickness = _floats(ds.get("SliceThickness"), 1)
    spacing = _floats(ds.get("PixelSpacing"), 2)
    present_3d = dict(zip(RENDER_3D_TAGS, (position, orientation, thickness, spacing), strict=True))
    frames = _int(ds.get("NumberOfFrames"))
    meta = getattr(ds, "file_meta", None)
    return DicomHeader(
        study_uid=str(texts["StudyInstanceUID"]), series_uid=str(texts["SeriesInstanceUID"]),
        sop_uid=str(texts["SOPInstanceUID"]), patient_id=str(texts["PatientID"]),
        rows=rows, columns=columns, frames=frames if frames and frames > 0 else 1,
        modality=kept["Modality"], series_description=kept["SeriesDescription"],
        instance_number=_int(ds.get("InstanceNumber")),
        position=position, orientation=orientation,  # type: ignore[arg-type]
        slice_thickness=thickness[0] if thickness else None, pixel_spacing=spacing,  # type: ignore[arg-type]
        transfer_syntax=_text(meta.get("TransferSyntaxUID")) if meta is not None else None,
        missing_3d=tuple(name for name, value in present_3d.items() if value is None),
    )


def _check_lengths(texts: dict[str, str | None]) -> None:
    """Refuse UIDs longer than DICOM allows (they become part of the store's keys, which
    LMDB bounds at 511 bytes) and kept text values too long to be anything but damage."""
    for name in UID_TAGS:
        uid = texts[name] or ""
        size = len(uid.encode("utf-8", "surrogateescape"))
        if size > UID_MAX_BYTES:
            raise DicomRefused(reason=f"{name} is {size} bytes long; DICOM UIDs are at most {UID_MAX_BYTES}")
        if "\x00" in uid:
            raise DicomRefused(reason=f"{name} holds a NUL character; DICOM UIDs are digits and dots")
    for name in KEPT_TEXT_TAGS:
        size = len((texts[name] or "").encode("utf-8", "surrogateescape"))
        if size > KEPT_TEXT_MAX_BYTES:
            raise DicomRefused(reason=f"{name} is {size} bytes long; encfs keeps at most "
                                      f"{KEPT_TEXT_MAX_BYTES}, far more than DICOM allows")


def _text(value: object) -> str | None:
    """A string value, None when absent or blank (DICOM pads with spaces and NULs)."""
    if value is None:
        return None
    text = str(value).strip(" \x00\t\r\n")
    return text or None


def _int(value: object) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return None


def _floats(value: object, count: int) -> tuple[float, ...] | None:
    """Exactly `count` finite numbers, or None: a malformed value is as good as absent."""
    if value is None or value == "":
        return None
    items = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    try:
        numbers = tuple(float(item) for item in items)
    except (TypeError, ValueError):
        return None
    if len(numbers) != count or not all(math.isfinite(n) for n in numbers):
        return None
    return numbers


def _numbers_text(numbers: Sequence[float]) -> str:
    return "\\".join(repr(float(n)) for n in numbers)


# --- ordering ----------------------------------------------------------------------------


def _ordering(headers: Sequence[DicomHeader]) -> tuple[str, list[int]]:
    """Spatial order when every slice has a position and all their orientations describe
    one stack (parallel normals); else by InstanceNumber when every slice has one; else
    by SOPInstanceUID. Python's sort is stable, so ties keep the given order."""
    indices = list(range(len(headers)))
    depths = _depths(headers)
    if depths is not None:
        return "spatial", sorted(indices, key=depths.__getitem__)
    if all(header.instance_number is not None for header in headers):
        return "instance_number", sorted(indices, key=lambda i: headers[i].instance_number or 0)
    return "sop_uid", sorted(indices, key=lambda i: _uid_key(headers[i].sop_uid))


def _depths(headers: Sequence[DicomHeader]) -> list[float] | None:
    """Each slice's position projected on the first slice's normal, or None when that
    means nothing (a slice without geometry, a degenerate or non-parallel orientation)."""
    normals = []
    for header in headers:
        if header.position is None or header.orientation is None:
            return None
        normal = _unit(_cross(header.orientation[:3], header.orientation[3:6]))
        if normal is None:
            return None
        normals.append(normal)
    if not normals or any(abs(_dot(normal, normals[0])) < _PARALLEL for normal in normals):
        return None
    return [_dot(header.position, normals[0]) for header in headers]  # type: ignore[arg-type]


def _cross(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _dot(a: Sequence[float], b: Sequence[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def _unit(v: tuple[float, float, float]) -> tuple[float, float, float] | None:
    length = math.sqrt(_dot(v, v))
    if length < 1e-6:
        return None
    return (v[0] / length, v[1] / length, v[2] / length)


def _uid_key(uid: str) -> tuple[tuple[int, int | str], ...]:
    """UIDs compare component by component as numbers, so 1.2.10 follows 1.2.9."""
    return tuple((0, int(part)) if part.isdigit() else (1, part) for part in uid.split("."))


# --- titles -------------------------------------------------------------------------------


def _safe_name(text: str) -> str:
    """One path component: '/' becomes '_', NUL and control characters become spaces, runs
    of white space one space, trimmed, at most _TITLE_MAX_BYTES of UTF-8 (cut on a
    character boundary), never '.' or '..'."""
    name = " ".join(_CONTROL.sub(" ", text).replace("/", "_").split())
    encoded = name.encode("utf-8")
    if len(encoded) > _TITLE_MAX_BYTES:
        name = encoded[:_TITLE_MAX_BYTES].decode("utf-8", errors="ignore").rstrip()
    return "" if name in (".", "..") else name
