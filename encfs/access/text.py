"""`FOLDER/.access` as text: reading shows every grant that applies, writing gives the
folder's own grants. One `EMAIL ROLE` or `@GROUP ROLE` a line; `#` starts a comment."""

from __future__ import annotations

from dataclasses import dataclass

from encfs.errors import InvalidInput

ACCESS_TEXT_MAX = 64 << 10
ORG_ADMIN_NOTE = "org admin: admin everywhere, cannot be changed"


@dataclass(frozen=True)
class Line:
    number: int
    who: str  # EMAIL or @GROUP, as written
    role: str


def parse(raw: bytes, path: str) -> list[Line]:
    """The grant lines of an `.access` text; malformed text is refused whole."""
    if len(raw) > ACCESS_TEXT_MAX:
        raise InvalidInput(f"an access list is at most {ACCESS_TEXT_MAX // 1024} KiB; nothing was changed",
                           path)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"an access list is UTF-8 text (byte {exc.start} is not); nothing was changed",
                           path) from None
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2:
            raise InvalidInput(f"line {number}: write EMAIL ROLE or @GROUP ROLE, not {line.strip()[:80]!r}; "
                               "nothing was changed", path)
        lines.append(Line(number, words[0], words[1].lower()))
    return lines


def render(path: str, own: list[tuple[str, str, str]], inherited: list[tuple[str, str, str]],
           org_admins: list[str], collection: bool) -> str:
    """own and inherited: (who, role, where it comes from)."""
    roles = "viewer, admin" if collection else "viewer, editor, admin"
    out = [f"# {path}: who may do what here. One EMAIL ROLE or @GROUP ROLE a line (roles: {roles});",
           "# writing this file replaces the grants made here; lines starting with # are ignored."]
    out += [f"{who} {role}" for who, role, _ in own]
    out += [f"{email} admin  # {ORG_ADMIN_NOTE}" for email in org_admins]
    out += [f"# {who} {role}  (inherited from {where})" for who, role, where in inherited]
    return "\n".join(out) + "\n"
