"""One entry point: the bytes at `path` -> a Media. Parsers run only when the magic
bytes point at them, so a plain file costs one small read."""

from __future__ import annotations

from pathlib import Path

from encfs.media import magic
from encfs.media.dicom import probe_dicom
from encfs.media.image import probe_image
from encfs.media.video import probe_video
from encfs.model import Kind, Media

HEAD_SIZE = 64 * 1024


def probe(path: Path, head: bytes | None = None) -> Media:
    if head is None:
        with open(path, "rb") as f:
            head = f.read(HEAD_SIZE)
    if magic.is_dicom(head):  # before images: a DICOM preamble may look like TIFF
        return probe_dicom(path)
    if magic.looks_like_image(head):
        found = probe_image(path)
        if found is not None:
            return found
    if magic.looks_like_video(head):
        video = probe_video(path)
        if video.kind != Kind.OTHER:
            return video
        kind, mime = magic.simple_kind(head)
        return Media(kind=kind, mime=mime, note=video.note)
    kind, mime = magic.simple_kind(head)
    return Media(kind=kind, mime=mime)
