"""Special entries: symbolic links, FIFOs, sockets and device nodes in folders.

They are entries of their own (`model.Special`), not items of Encord's kinds: never
probed, never in search (their names are not indexed), never linked into a Dataset,
and they have no content in the blob store. The kernel does the rest: it follows
symbolic links (ELOOP, O_NOFOLLOW), and opens FIFOs, sockets and devices itself, so
encfs only stores the entry and answers `readlink` and `lstat`.
"""

from __future__ import annotations

import os
import stat
from typing import Any

from encfs.errors import InvalidInput, NameTooLong, NotFound
from encfs.model import Special, is_special_mode

PATH_MAX = 4096
TYPE_NAMES = {
    stat.S_IFLNK: "symlink", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "char device", stat.S_IFBLK: "block device",
}


class SpecialEntries:
    """The rules of special entries; the service makes and removes them in its own
    transactions (they live in `nodes`, `stats` and `dirents` like any entry)."""

    def check_target(self, target: str, path: str) -> None:
        """A symbolic link's text is kept as given (relative or absolute); the kernel
        refuses an empty one and one of PATH_MAX bytes or more before asking."""
        if not target:
            raise NotFound("a symbolic link needs a target", path)
        if "\x00" in target:
            raise InvalidInput("a symbolic link's target cannot contain NUL", path)
        if len(target.encode("utf-8", "surrogateescape")) >= PATH_MAX:
            raise NameTooLong(f"a symbolic link's target is less than {PATH_MAX} bytes", path)

    def check_mode(self, mode: int, path: str) -> None:
        if not is_special_mode(mode) or stat.S_ISLNK(mode):
            raise InvalidInput("mknod makes FIFOs, sockets and device nodes only", path)

    def new(self, fields: dict[str, Any], mode: int, target: str = "", rdev: int = 0) -> Special:
        keeps_rdev = stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        return Special(**{**fields, "mode": mode}, target=target, rdev=rdev if keeps_rdev else 0)

    def target_of(self, node: Special, path: str) -> str:
        if not stat.S_ISLNK(node.mode):
            raise InvalidInput("not a symbolic link", path)
        return node.target

    def details(self, node: Special) -> dict[str, Any]:
        """What `encfs info` shows of a special entry."""
        details: dict[str, Any] = {"type": TYPE_NAMES[stat.S_IFMT(node.mode)]}
        if stat.S_ISLNK(node.mode):
            details["target"] = node.target
        if node.rdev:
            details["device"] = f"{os.major(node.rdev)},{os.minor(node.rdev)}"
        return details

    def listing_kind(self, node: Special) -> str:
        return TYPE_NAMES[stat.S_IFMT(node.mode)]

