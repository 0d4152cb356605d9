"""A folder's activity: the change journal's user actions in a folder and its
subfolders, one JSON object per change (`FOLDER/.activity`, `encfs activity`).

Each line: seq, time, user, action (upload, write, new folder, rename, move, move in,
move out, delete, batch, Dataset link, Dataset unlink, access change, attributes,
refused attempt), paths (as the user gave them), item (id). The records are written
in the transaction of the change (meta/journal.py); this module only reads them,
except for refused attempts, which `refused_attempt` adds with the refusal's line.

Who may read a folder's activity: viewers of the folder (the access policy decides).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from encfs.access.roles import Role
from encfs.errors import NotAFolder, NotFound
from encfs.meta.store import ReadTxn, WriteTxn
from encfs.model import ROOT_ID, Actor, Folder
from encfs.names import printable, split_path

if TYPE_CHECKING:
    from encfs.service import FilesService

ACTIVITY_FILE = ".activity"
FOLDER_CONTROL_NAMES = (ACTIVITY_FILE,)  # reachable in every folder, never listed, never stored
FOLLOW_SECONDS = 0.2
HIDDEN_PATH = "(a folder you cannot see)"  # the far side of a move in or out, for a reader who cannot see it
FILE_LINES = 10_000  # FOLDER/.activity shows the newest this many (encfs activity shows all)


def refused_attempt(w: WriteTxn, actor: Actor, operation: str, path: str, reason: str) -> None:
    """The journal record of a refusal, in the transaction that records its line:
    it belongs to the deepest folder of the path that exists."""
    folder = deepest_folder(w, path)
    w.journal("refused attempt", [path], folder_ids=[] if folder is None else [folder], user=actor.name,
              o=operation, r=reason)


def deepest_folder(r: ReadTxn, path: str) -> int | None:
    """The id of the deepest existing folder on `path` (None for the views' and the
    control entries' paths, which are in no folder)."""
    parts = [part for part in path.split("/") if part] if path.startswith("/") else []
    if parts and parts[0].startswith("."):
        return None
    folder = ROOT_ID
    for part in parts:  # any text: a refused path may hold names no folder can have
        child = r.child_id(folder, part)
        if child is None or not isinstance(r.node(child), Folder):
            break
        folder = child
    return folder


def iso_time(time_ns: int) -> str:
    moment = datetime.fromtimestamp(time_ns / 1e9, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class ActivityLog:
    """Reads a folder's activity through the service's store."""

    def __init__(self, service: FilesService) -> None:
        self.service = service
        self.meta = service.meta

    def folder(self, actor: Actor, path: str) -> Folder:
        if split_path(path)[:1] in ([".datasets"], [".projects"]):
            raise NotFound("Datasets and Projects keep no activity of their own; see their files' folders",
                           path)
        node = self.service.lookup(actor, path)
        if not isinstance(node, Folder):
            raise NotAFolder("activity is kept for folders", path)
        with self.service.meta.read() as r:  # viewers may read it (and so everyone, before users)
            self.service.access.require_on(r, actor, node, Role.VIEWER, "reading a folder's activity", path)
        return node

    def entries(self, actor: Actor, path: str, since_ns: int | None = None,
                newest: int | None = None) -> list[dict[str, Any]]:
        """The folder's activity, oldest first (since `since_ns` if given; only the
        `newest` so many if given)."""
        return self._snapshot(actor, path, since_ns, newest)[0]

    def _snapshot(self, actor: Actor, path: str, since_ns: int | None,
                  newest: int | None = None) -> tuple[list[dict[str, Any]], int, int]:
        """(entries, the newest record's number, the folder's id), all as of one moment."""
        folder = self.folder(actor, path)
        with self.meta.read() as r:
            inside = subtree(r, folder.id)
            start = r.journal_seq_at(since_ns) if since_ns is not None else r.journal_first()
            numbers: set[int] = set()
            for folder_id in inside:
                numbers.update(r.journal_of_folder(folder_id, start))
            found = []
            sees = self._sees(r, actor)
            for seq in sorted(numbers)[-newest if newest else None:]:
                record = r.journal_record(seq)
                if record is not None and "a" in record:
                    found.append(entry_of(seq, record, inside, sees))
            return found, r.journal_last(), folder.id

    def follow(self, actor: Actor, path: str, since_ns: int | None = None,
               stop: Any = None) -> Iterator[dict[str, Any]]:
        """The folder's activity, then each new change as it is committed (until
        `stop()` says so)."""
        found, last, folder_id = self._snapshot(actor, path, since_ns)
        yield from found
        while stop is None or not stop():
            time.sleep(FOLLOW_SECONDS)
            with self.meta.read() as r:
                records = list(r.journal_after(last))
                if not records:
                    continue
                inside, sees = subtree(r, folder_id), self._sees(r, actor)
                entries = [entry_of(seq, record, inside, sees) for seq, record in records
                           if "a" in record and inside.intersection(record.get("f", ()))]
            last = records[-1][0]
            yield from entries

    def _sees(self, r: ReadTxn, actor: Actor) -> Callable[[int], bool]:
        """Whether the reader sees the files of a folder (by id, as of `r`): the other
        side of a move in or out is named only then."""
        access = self.service.access
        if not access.organised(r):
            return lambda folder_id: True
        person = access.person(r, actor)
        return lambda folder_id: person.admin or (
            isinstance(r.node(folder_id), Folder) and access.folder_role(r, person, folder_id) >= Role.VIEWER)


def subtree(r: ReadTxn, folder_id: int) -> set[int]:
    """The folder and every folder below it."""
    found, waiting = {folder_id}, [folder_id]
    while waiting:
        for _, child, is_folder in r.children(waiting.pop()):
            if is_folder and child not in found:
                found.add(child)
                waiting.append(child)
    return found


def entry_of(seq: int, record: dict[str, Any], inside: set[int],
             sees: Callable[[int], bool] = lambda folder_id: True) -> dict[str, Any]:
    """One activity line, seen from a folder (`inside`: it and its subfolders): a
    move between folders is a move in or out when only one side is inside; the path
    on the other side is shown only if the reader `sees` that folder's files."""
    entry: dict[str, Any] = {
        "seq": seq, "time": iso_time(record["t"]), "user": record.get("u"), "action": record["a"],
        "paths": [printable(path) for path in record.get("p", [])], "item": record.get("i"),
    }
    if record["a"] == "rename":
        entry["action"], other = _move_seen_from(record, inside)
        side = {"move out": -1, "move in": 0}.get(entry["action"])
        if side is not None and other is not None and entry["paths"] and not sees(other):
            entry["paths"][side] = HIDDEN_PATH
    if "r" in record:
        entry["operation"], entry["reason"] = record.get("o"), record["r"]
    return entry


def _move_seen_from(record: dict[str, Any], inside: set[int]) -> tuple[str, int | None]:
    """The action as seen from `inside`, and the folder on the other side of a move
    in or out."""
    item = record.get("i")
    left = [parent for parent, _, child, added in record.get("e", ()) if child == item and not added]
    came = [parent for parent, _, child, added in record.get("e", ()) if child == item and added]
    if not left or not came or left[0] == came[0]:
        return "rename", None
    was_in, is_in = left[0] in inside, came[0] in inside
    if was_in and not is_in:
        return "move out", came[0]
    if is_in and not was_in:
        return "move in", left[0]
    return "move", None


def text_line(entry: dict[str, Any]) -> str:
    """An activity line for people: time, user, action, paths, item id."""
    moved = entry["action"] in ("rename", "move", "move in", "move out")
    paths = (" -> " if moved else ", ").join(entry["paths"])
    item = f" (item {entry['item']})" if entry.get("item") is not None else ""
    reason = f": {entry['operation']} refused, {entry['reason']}" if "reason" in entry else ""
    return f"{entry['time']} {entry['user']} {entry['action']} {paths}{item}{reason}"
