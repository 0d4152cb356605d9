"""One entry point: content (a file or bytes in memory) -> a Media. Parsers run only
when the magic bytes point at them, so a plain file costs one small read."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from encfs.media import magic
from encfs.media.image import probe_image
from encfs.media.video import probe_video
from encfs.model import Kind, Media

HEAD_SIZE = 64 * 1024


@contextmanager
def _opened(content: Path | bytes) -> Iterator[BinaryIO]:
    if isinstance(content, bytes):
        yield io.BytesIO(content)
    else:
        with open(content, "rb") as f:
            yield f


def probe(content: Path | bytes, head: bytes | None = None) -> Media:
    if head is None:
        with _opened(content) as f:
            head = f.read(HEAD_SIZE)
    if magic.is_dicom(head):  # before images: a DICOM preamble may look like TIFF
        return Media(kind=Kind.DICOM_FILE, mime="application/dicom")  # the service reads the header
    if magic.looks_like_image(head):
        with _opened(content) as f:
            found = probe_image(f)
        if found is not None:
            return found
    if magic.looks_like_video(head):
        with _opened(content) as f:
            video = probe_video(f)
        if video.kind != Kind.OTHER:
            return video
        kind, mime = magic.simple_kind(head)
        return Media(kind=kind, mime=mime, note=video.note)
    kind, mime = magic.simple_kind(head)
    return Media(kind=kind, mime=mime)
