"""Names and paths in Files: what a valid name is, and how a path splits."""

from __future__ import annotations

from encfs.errors import InvalidInput, NameTooLong, NotText

NAME_MAX = 255


def split_path(path: str) -> list[str]:
    """'/A/b/' -> ['A', 'b']. '.' and '..' are not names in Files. A component over
    NAME_MAX bytes is ENAMETOOLONG before anything else is looked at, for every call
    (the kernel passes FUSE names of up to 1,024 bytes on)."""
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", ".."):
            raise InvalidInput(f"'{part}' is not allowed in a Files path")
        if len(part) > NAME_MAX // 4 and len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise NameTooLong(f"a name is at most {NAME_MAX} bytes", path)
    return parts


def is_text(name: str) -> bool:
    """Whether a name is UTF-8 text. Paths from the kernel and the command line carry
    bytes that are not UTF-8 as lone surrogates (Python's surrogateescape)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def printable(text: str) -> str:
    """Text fit for messages, the log and /.encfs/errors: bytes that are not UTF-8
    are shown as \\xNN escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def check_name(name: str) -> None:
    if not is_text(name):
        raise NotText(f"'{printable(name)}' is not UTF-8 text, and names in Files are text")
    if not name or name in (".", ".."):
        raise InvalidInput(f"'{name}' is not a valid name")
    if "/" in name or "\x00" in name:
        raise InvalidInput("a name cannot contain '/' or NUL")
    if len(name.encode("utf-8")) > NAME_MAX:
        raise NameTooLong(f"a name is at most {NAME_MAX} bytes")


def fit_name(stem: str, suffix: str) -> str:
    """`stem + suffix` cut to NAME_MAX bytes: the stem loses its end (never half a
    UTF-8 character), the suffix stays whole. For names encfs makes up."""
    room = NAME_MAX - len(suffix.encode("utf-8", "surrogateescape"))
    encoded = stem.encode("utf-8", "surrogateescape")
    if len(encoded) > room:
        stem = encoded[:max(room, 0)].decode("utf-8", "ignore")
    return stem + suffix


def tagged_name(name: str, tag: str) -> str:
    """`chicken.mp4` tagged `~17` is `chicken~17.mp4` (a name that repeats, told apart by
    an item id), within NAME_MAX bytes: the stem is shortened, the tag and the extension
    stay (an extension too long to keep is treated as part of the stem)."""
    stem, dot, ext = name.rpartition(".")
    if not (dot and stem):
        return fit_name(name, tag)
    suffix = f"{tag}.{ext}"
    if len(suffix.encode("utf-8", "surrogateescape")) >= NAME_MAX:
        return fit_name(name, tag)
    return fit_name(stem, suffix)
