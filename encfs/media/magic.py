"""Kinds recognised by their first bytes, before any real parser is asked."""

from __future__ import annotations

import gzip
import io
import zlib

from encfs.model import Kind

IMAGE_SIGNATURES = (
    b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM",
    b"II*\x00", b"MM\x00*",
)
VIDEO_BRANDS_AUDIO = {b"M4A ", b"M4B ", b"M4P ", b"F4A "}


def looks_like_image(head: bytes) -> bool:
    if head.startswith(IMAGE_SIGNATURES):
        return True
    return head[:4] == b"RIFF" and head[8:12] == b"WEBP"


def looks_like_video(head: bytes) -> bool:
    if head[4:8] == b"ftyp":
        return head[8:12] not in VIDEO_BRANDS_AUDIO
    return (
        head.startswith(b"\x1a\x45\xdf\xa3")  # Matroska / WebM
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or head.startswith(b"FLV")
        or head.startswith(b"\x00\x00\x01\xba")  # MPEG program stream
        or (len(head) > 376 and head[0] == 0x47 and head[188] == 0x47 and head[376] == 0x47)
        or (head.startswith(b"OggS") and b"theora" in head[:128])
    )


def is_dicom(head: bytes) -> bool:
    return head[128:132] == b"DICM"


def audio_mime(head: bytes) -> str | None:
    if head.startswith(b"ID3") or head[:2] in (b"\xff\xfb", b"\xff\xf3", b"\xff\xf2"):
        return "audio/mpeg"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(b"fLaC"):
        return "audio/flac"
    if head.startswith(b"OggS"):
        return "audio/ogg"
    if head[4:8] == b"ftyp" and head[8:12] in VIDEO_BRANDS_AUDIO:
        return "audio/mp4"
    return None


def is_nifti(head: bytes) -> bool:
    if head[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00"):
        return True
    if head.startswith(b"\x1f\x8b"):
        try:
            inner = gzip.GzipFile(fileobj=io.BytesIO(head)).read(348)
        except (OSError, EOFError, zlib.error):
            return False
        return inner[344:348] in (b"n+1\x00", b"ni1\x00", b"n+2\x00", b"ni2\x00")
    return False


def is_text(head: bytes) -> bool:
    if not head or b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # a multi-byte character cut at the end of the sample is still text
        return exc.start >= len(head) - 3 and exc.reason == "unexpected end of data"
    return True


def simple_kind(head: bytes) -> tuple[Kind, str]:
    """Kinds that need no parser: pdf, audio, nifti, text, other."""
    if head.startswith(b"%PDF-"):
        return Kind.PDF, "application/pdf"
    mime = audio_mime(head)
    if mime:
        return Kind.AUDIO, mime
    if is_nifti(head):
        return Kind.NIFTI, "application/x-nifti"
    if is_text(head):
        return Kind.TEXT, "text/plain"
    return Kind.OTHER, "application/octet-stream"
