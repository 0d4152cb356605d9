"""Images through Pillow: format, mime and size from the header alone."""

from __future__ import annotations

from typing import BinaryIO

from encfs.model import Kind, Media


def probe_image(source: BinaryIO) -> Media | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(source) as img:
            mime = Image.MIME.get(img.format or "", "image/" + (img.format or "unknown").lower())
            return Media(kind=Kind.IMAGE, mime=mime, width=img.width, height=img.height)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
