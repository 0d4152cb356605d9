"""POSIX ownership and permission rules of a store shared by several Linux users.

On the mount the kernel checks modes per caller (`default_permissions`) against the
attributes encfs reports; what it leaves to the file system is who owns a new file
or folder. `new_ownership` answers that. The CLI run for a non-root user through a
mount (remote.py) has no kernel in between: `Credentials` and the `may_*` rules
below decide there, as the kernel would.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass

from encfs.errors import EncfsError
from encfs.model import Actor, Attributes, Folder

READ, WRITE, SEARCH = os.R_OK, os.W_OK, os.X_OK


def new_ownership(actor: Actor, parent: Folder, mode: int) -> tuple[int, int, int]:
    """(uid, gid, mode) of a node the actor creates in `parent`: the caller's uid and
    gid, except under a setgid folder, whose gid it takes (and a folder its setgid
    bit), as on ext4 (BSD group semantics by the setgid bit)."""
    if not parent.mode & stat.S_ISGID:
        return actor.uid, actor.gid, mode
    if stat.S_ISDIR(mode):
        mode |= stat.S_ISGID
    return actor.uid, parent.gid, mode


@dataclass(frozen=True)
class Credentials:
    """Who asks: uid, primary gid and supplementary groups (root may do anything)."""

    uid: int
    gid: int
    groups: frozenset[int] = frozenset()

    @property
    def is_root(self) -> bool:
        return self.uid == 0

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.groups

    def owns(self, attributes: Attributes) -> bool:
        return self.is_root or attributes.uid == self.uid


def groups_of_process(pid: int) -> frozenset[int]:
    """The supplementary groups of a running process (`Groups:` in /proc/PID/status);
    none if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("Groups:"):
                    return frozenset(int(g) for g in line.split()[1:])
    except OSError:
        pass
    return frozenset()


def may(who: Credentials, attributes: Attributes, wanted: int) -> bool:
    """Whether the mode bits grant `wanted` (READ|WRITE|SEARCH) to `who`: the owner's
    bits for the owner, the group's for a member, the others' for the rest. Root is
    refused only execute on a file no one may execute."""
    mode = attributes.mode
    if who.is_root:
        return not (wanted & SEARCH and not stat.S_ISDIR(mode) and not mode & 0o111)
    if attributes.uid == who.uid:
        granted = (mode >> 6) & 7
    elif who.in_group(attributes.gid):
        granted = (mode >> 3) & 7
    else:
        granted = mode & 7
    return granted & wanted == wanted


def may_remove(who: Credentials, folder: Attributes, node: Attributes) -> bool:
    """Removing or renaming away a name: write and search on its folder and, in a
    sticky folder (/tmp), owning the node or the folder."""
    if not may(who, folder, WRITE | SEARCH):
        return False
    sticky = bool(folder.mode & stat.S_ISVTX)
    return not sticky or who.owns(node) or who.owns(folder)


def findable(who: Credentials, stat_of: Callable[[Actor, str], Attributes], actor: Actor, path: str) -> bool:
    """Whether a walk of the folders (`find`) could reach the file at `path`: every
    folder above it searchable, its own folder readable (what search may show)."""
    parts = [part for part in path.split("/") if part]
    try:
        for depth in range(len(parts)):
            wanted = SEARCH | READ if depth == len(parts) - 1 else SEARCH
            if not may(who, stat_of(actor, "/" + "/".join(parts[:depth])), wanted):
                return False
    except EncfsError:
        return False
    return True
