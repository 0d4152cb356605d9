"""What an object is, found by ranged reads of its first bytes (and of what the
parsers then ask for: a video's index, a DICOM header), never the whole object."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from encfs.cloud.integrations import Integration, ObjectUrl
from encfs.cloud.objects import PROBE_BLOCK, RangedFile, S3Object, Version
from encfs.errors import InvalidInput, NotFound
from encfs.media import magic
from encfs.media.image import probe_image
from encfs.media.video import probe_video
from encfs.model import Kind, Media

HEAD_SIZE = 64 << 10


@dataclass
class Found:
    """An object as an item will refer to it."""

    url: str
    version: Version
    media: Media
    dicom: dict[str, Any] | None = None
    fetched: int = 0  # bytes read to find it out


def examine(integration: Integration, url: ObjectUrl, expected: Kind | None = None,
            trusted: Media | None = None, size: int | None = None, etag: str | None = None) -> Found:
    """The object's version and media. Metadata given (`trusted`, with `size`) is taken
    as it is and nothing is read; otherwise the head is read and parsed. Raises
    NotFound for a missing object, InvalidInput for one that is not `expected`."""
    obj = S3Object(integration, url, Version(etag, size))
    if trusted is not None:
        if size is None and not obj.head():
            raise NotFound(f"{url}: no such object in the bucket")
        return Found(str(url), obj.version, trusted)
    head = b"" if size == 0 else obj.get_range(0, HEAD_SIZE)  # one GET: an empty object answers 416
    if not head:
        media = Media(kind=Kind.OTHER, mime="application/octet-stream")
        return _checked(Found(str(url), obj.version, media), expected)
    stream = RangedFile(obj, obj.size)
    for n in range(0, len(head), PROBE_BLOCK):
        stream.blocks[n // PROBE_BLOCK] = head[n : n + PROBE_BLOCK]
    media, dicom = _probe(stream, head, url.key)
    return _checked(Found(str(url), obj.version, media, dicom, len(head) + stream.fetched), expected)


def _probe(stream: RangedFile, head: bytes, key: str) -> tuple[Media, dict[str, Any] | None]:
    from encfs.media import dicom_series

    if magic.is_dicom(head) or key.lower().endswith(".dcm"):
        try:
            header = dicom_series.read_header(stream)
        except (dicom_series.NotDicom, dicom_series.DicomRefused) as exc:
            if magic.is_dicom(head):
                return Media(note=f"not a usable DICOM file: {exc}"), None
        else:
            media = Media(kind=Kind.DICOM_FILE, mime="application/dicom", width=header.columns,
                          height=header.rows, frames=header.frames, extra=header.attributes())
            return media, asdict(header)
    if magic.looks_like_image(head):
        stream.seek(0)
        found = probe_image(stream)
        if found is not None:
            return found, None
    if magic.looks_like_video(head):
        stream.seek(0)
        video = probe_video(stream)
        if video.kind != Kind.OTHER:
            return video, None
    kind, mime = magic.simple_kind(head)
    return Media(kind=kind, mime=mime), None


def _checked(found: Found, expected: Kind | None) -> Found:
    if expected is not None and found.media.kind != expected:
        what = found.media.kind.value + (f" ({found.media.note})" if found.media.note else "")
        raise InvalidInput(f"{found.url}: not {_article(expected)} ({what} by its bytes)")
    return found


def _article(kind: Kind) -> str:
    word = kind.value.replace("_", " ")
    return ("an " if word[0] in "aeiou" else "a ") + word
