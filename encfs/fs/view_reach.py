"""A Dataset's view on a store without users: only the files the caller could reach.

Before a store has users, POSIX modes decide who reaches a file: the kernel checks
each folder of a path walk against the caller. A Dataset's view (/.datasets/D/NAME)
names the file directly, past the folders above it, so the view must not show a file
the caller could not find by walking its folders (`posix.findable`: every folder above
searchable, its own folder readable) — alice's file in her 0700 folder stays out of
bob's `ls /.datasets/D` and is `ENOENT` to his lookup. Reading it is refused by the
kernel anyway (the file's own mode). In an organisation the service filters views by
roles instead (`AccessPolicy.sees_file`); root sees everything.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from encfs.errors import NotFound
from encfs.model import Actor, Attributes
from encfs.names import split_path
from encfs.posix import Credentials, findable
from encfs.views import is_view_entry, writable_parts

DATASETS = "/.datasets/"


class ViewReach:
    """Filters Dataset views by what the caller could reach (a store without users)."""

    def __init__(self, service: Any, credentials: Callable[[], Credentials]) -> None:
        self.service = service
        self.credentials = credentials

    def _applies(self, actor: Actor, parts: list[str]) -> bool:
        return actor.uid != 0 and bool(parts) and parts[0] == ".datasets" \
            and not self.service.access.organised_now(self.service.meta)

    def check(self, actor: Actor, path: str, item_id: int) -> None:
        """NotFound for a view entry the caller could not reach in the folders."""
        if not path.startswith(DATASETS) or actor.uid == 0:  # every stat passes here: the cheap test first
            return
        parts = split_path(path)
        if not is_view_entry(parts) or not self._applies(actor, parts):
            return
        if not self._reachable(self.credentials(), actor, item_id, {}):
            raise NotFound("no such file in this view", path)

    def shown(self, actor: Actor, path: str,
              entries: list[tuple[str, Attributes]]) -> list[tuple[str, Attributes]]:
        """A view directory's entries, without those the caller could not reach."""
        if not path.startswith(DATASETS):
            return entries
        parts = split_path(path)
        if len(writable_parts(parts)) != 2 or not self._applies(actor, parts):
            return entries
        who, seen = self.credentials(), dict[str, Attributes]()
        return [(name, attributes) for name, attributes in entries
                if self._reachable(who, actor, attributes.id, seen)]

    def _reachable(self, who: Credentials, actor: Actor, item_id: int, seen: dict[str, Attributes]) -> bool:
        """`findable` for the item's path in the folders, each folder's attributes read
        once per listing."""
        def stat_of(who: Actor, folder: str) -> Attributes:
            if folder not in seen:
                seen[folder] = self.service.stat(who, folder)
            return seen[folder]

        try:
            path = self.service.path_of(actor, item_id)
        except NotFound:
            return False
        return findable(who, stat_of, actor, path)
