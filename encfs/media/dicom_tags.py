"""A fast reader for the dozen top-level DICOM tags encfs uses.

pydicom walks the whole header (about 1 ms a slice), which made validating a study
slower than copying it. Most files are little-endian with a `DICM` preamble; for those
this reads the elements in order, skips sequences, and stops at the first group past
0x0028 (every tag needed lives below it). Anything unusual (big endian, deflate, no
preamble, non-ASCII text, a value past the bytes given, a missing required tag) gives
None, and the caller asks pydicom, which stays the authority.
"""

from __future__ import annotations

import struct

TAGS = {
    (0x0008, 0x0016): "SOPClassUID", (0x0008, 0x0018): "SOPInstanceUID", (0x0008, 0x0060): "Modality",
    (0x0008, 0x103E): "SeriesDescription", (0x0010, 0x0020): "PatientID", (0x0018, 0x0050): "SliceThickness",
    (0x0020, 0x000D): "StudyInstanceUID", (0x0020, 0x000E): "SeriesInstanceUID",
    (0x0020, 0x0013): "InstanceNumber", (0x0020, 0x0032): "ImagePositionPatient",
    (0x0020, 0x0037): "ImageOrientationPatient", (0x0028, 0x0008): "NumberOfFrames",
    (0x0028, 0x0010): "Rows", (0x0028, 0x0011): "Columns", (0x0028, 0x0030): "PixelSpacing",
}
UNSIGNED_SHORT = {"Rows", "Columns"}
DECIMALS = {"SliceThickness", "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"}
LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
IMPLICIT_LE = "1.2.840.10008.1.2"
NOT_LITTLE_ENDIAN_EXPLICIT = {"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99"}  # big endian, deflated
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = (0xFFFE, 0xE000), (0xFFFE, 0xE00D), (0xFFFE, 0xE0DD)
LAST_GROUP = 0x0028


class Unusual(Exception):
    """Leave this file to pydicom."""


class Tags(dict):
    """What pydicom's Dataset offers the header builder: `get(name)` and `file_meta`."""

    def __init__(self, values: dict, transfer_syntax: str) -> None:
        super().__init__(values)
        self.file_meta = {"TransferSyntaxUID": transfer_syntax}


def read_tags(data: bytes, required: tuple[str, ...]) -> Tags | None:
    try:
        if data[128:132] != b"DICM":
            return None
        meta, offset = _meta(data)
        syntax = meta.get("TransferSyntaxUID", "")
        if not syntax or syntax in NOT_LITTLE_ENDIAN_EXPLICIT:
            return None
        values = _dataset(data, offset, explicit=syntax != IMPLICIT_LE)
    except (Unusual, struct.error, IndexError, UnicodeDecodeError, ValueError):
        return None
    if any(values.get(name) in (None, "") for name in required):  # pydicom explains the refusal
        return None
    return Tags(values, syntax)


def _meta(data: bytes) -> tuple[dict[str, str], int]:
    offset, meta = 132, {}
    while offset + 8 <= len(data):
        group, element = struct.unpack_from("<HH", data, offset)
        if group != 0x0002:
            break
        _, length, start = _explicit_header(data, offset)
        if (group, element) == (0x0002, 0x0010):
            meta["TransferSyntaxUID"] = _text(data[start : start + length])
        offset = start + length
    return meta, offset


def _explicit_header(data: bytes, offset: int) -> tuple[bytes, int, int]:
    vr = data[offset + 4 : offset + 6]
    if vr in LONG_VRS:
        return vr, struct.unpack_from("<I", data, offset + 8)[0], offset + 12
    if not vr.isalpha():
        raise Unusual("not explicit VR")
    return vr, struct.unpack_from("<H", data, offset + 6)[0], offset + 8


def _element(data: bytes, offset: int, explicit: bool) -> tuple[tuple[int, int], bytes | None, int, int]:
    """(tag, VR or None, value length, value start) of the element at offset."""
    tag = struct.unpack_from("<HH", data, offset)
    if tag[0] == 0xFFFE or not explicit:
        return tag, None, struct.unpack_from("<I", data, offset + 4)[0], offset + 8
    vr, length, start = _explicit_header(data, offset)
    return tag, vr, length, start


def _dataset(data: bytes, offset: int, explicit: bool) -> dict[str, object]:
    values: dict[str, object] = {}
    while offset + 8 <= len(data):
        tag, vr, length, start = _element(data, offset, explicit)
        if tag[0] > LAST_GROUP:
            return values
        if length == UNDEFINED:
            if vr not in (b"SQ", None):
                raise Unusual("undefined length outside a sequence")
            offset = _skip_sequence(data, start, explicit)
            continue
        if start + length > len(data):
            raise Unusual("value past the bytes given")
        name = TAGS.get(tag)
        if name is not None:
            values[name] = _value(name, data[start : start + length])
        offset = start + length
    raise Unusual("header longer than the bytes given")


def _skip_sequence(data: bytes, offset: int, explicit: bool) -> int:
    """Offset just past an undefined-length sequence that starts at offset."""
    while True:
        tag, _, length, start = _element(data, offset, explicit)
        if tag == SEQUENCE_END:
            return start
        if tag != ITEM:
            raise Unusual("sequence without items")
        offset = start + length if length != UNDEFINED else _skip_item(data, start, explicit)


def _skip_item(data: bytes, offset: int, explicit: bool) -> int:
    while True:
        tag, vr, length, start = _element(data, offset, explicit)
        if tag == ITEM_END:
            return start
        if length == UNDEFINED:
            if vr not in (b"SQ", None):
                raise Unusual("undefined length outside a sequence")
            offset = _skip_sequence(data, start, explicit)
        else:
            offset = start + length
        if offset > len(data):
            raise Unusual("item past the bytes given")


def _value(name: str, raw: bytes) -> object:
    if name in UNSIGNED_SHORT:
        return struct.unpack("<H", raw[:2])[0] if len(raw) >= 2 else None
    text = _text(raw)
    if name in DECIMALS:
        parts = [p.strip() for p in text.split("\\")]
        numbers = [float(p) for p in parts if p]
        return numbers[0] if len(numbers) == 1 else numbers
    return text


def _text(raw: bytes) -> str:
    return raw.decode("ascii").strip(" \x00")
