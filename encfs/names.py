"""Names and paths in Files: what a valid name is, and how a path splits."""

from __future__ import annotations

from encfs.errors import InvalidInput, NameTooLong

NAME_MAX = 255


def split_path(path: str) -> list[str]:
    """'/A/b/' -> ['A', 'b']. '.' and '..' are not names in Files."""
    parts = [p for p in path.split("/") if p]
    for part in parts:
        if part in (".", ".."):
            raise InvalidInput(f"'{part}' is not allowed in a Files path")
    return parts


def check_name(name: str) -> None:
    if not name or name in (".", ".."):
        raise InvalidInput(f"'{name}' is not a valid name")
    if "/" in name or "\x00" in name:
        raise InvalidInput("a name cannot contain '/' or NUL")
    if len(name.encode("utf-8", "surrogateescape")) > NAME_MAX:
        raise NameTooLong(f"a name is at most {NAME_MAX} bytes")
