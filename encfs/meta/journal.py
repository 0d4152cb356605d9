"""The change journal: one record per write transaction that changed what a mount
shows, written in that transaction, numbered in commit order.

Two readers use it. Every mount follows it and tells its kernel which names and
inodes to forget (fs/invalidation.py); `FOLDER/.activity` and `encfs activity`
show the records that are user actions (activity.py).

A write transaction collects what it touched as it goes (`Touched`, filled by the
`WriteTxn` methods that change names, records and Dataset links), so no change can
forget to say what a mount must forget. What the change *was* (the activity: action,
user, paths the user gave, item) comes from the user action under way (`@action`
opens a scope on its thread, `begin_action`) or, where that guess is wrong, from
the service (`WriteTxn.journal`). Only the first record of an action carries the
activity: an upload that creates an item and then stores its content is one line.

Keys (sub-dbs):
    journal          seq:u64 -> JSON record (below); seq is LMDB's transaction number
                     (it rises with every commit in every process; numbers skip the
                     transactions that changed nothing a mount shows)
    journal_folders  folder:u64 + seq:u64 -> b"" (the records about each folder's entries)

A record: {"t": time ns, "u": user, "a": activity or absent, "o": operation,
"p": [paths], "i": item id, "f": [folder ids], "e": [[parent, name, child, added]],
"n": [[node id, parent id or -1 when deleted, name when put]], "v": [[dataset, view name, item,
added]], "c": [[kind, name]] (Dataset and Project names), "x": [project, dataset]
pairs attached or detached, "w": writer (process id and start), "r": reason}.

Bounded: past RECORDS_KEPT records or RECORDS_AGE_NS of age, the oldest go, a batch
at a time (every PRUNE_EVERY records), from the transaction that adds one.
"""

from __future__ import annotations

import json
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import lmdb

U64 = struct.Struct(">Q")
RECORDS_KEPT = 200_000
RECORDS_AGE_NS = 90 * 24 * 3600 * 1_000_000_000
PRUNE_EVERY = 1024
WRITER = f"{os.getpid()}-{time.time_ns()}"  # this process, as records name their writer
JOURNAL_DBS = ("journal", "journal_folders")

_scope = threading.local()


def begin_action(operation: str, user: str, paths: Callable[[], list[str]]) -> None:
    """A user action starts on this thread (the outermost `@action`); `paths` gives
    the paths the user named, computed only if the action changes something."""
    _scope.action = {"o": operation, "u": user, "p": paths, "done": False}
    _scope.inner = [operation]


def enter_inner(operation: str) -> None:
    """An action inside another: its name says better what the change is
    (a `setxattr` that batches, a `link` that adds to a Dataset)."""
    if getattr(_scope, "action", None) is not None:
        _scope.inner.append(operation)


def leave_inner() -> None:
    if getattr(_scope, "action", None) is not None and len(_scope.inner) > 1:
        _scope.inner.pop()


def end_action() -> None:
    _scope.action = None


def current_action() -> dict[str, Any] | None:
    return getattr(_scope, "action", None)


def collect_written(active: bool) -> list[tuple[int, dict[str, Any]]]:
    """Start (active) or end collecting the records this thread commits; returns
    those collected so far (the mount handles its own changes before it answers)."""
    written = getattr(_scope, "written", None) or []
    _scope.written = [] if active else None
    return written


CLAIMED: set[int] = set()  # records a mount's request handles itself (its follower skips them)


def committed(written: tuple[int, dict[str, Any]] | None) -> None:
    """A record was committed by this thread: a mount's request collecting its
    records claims it."""
    collecting = getattr(_scope, "written", None)
    if written is not None and collecting is not None:
        collecting.append(written)
        CLAIMED.add(written[0])


@dataclass
class Touched:
    """What one write transaction changed, as the WriteTxn methods report it."""

    entries: list[list[Any]] = field(default_factory=list)
    nodes: dict[int, int] = field(default_factory=dict)
    views: list[list[Any]] = field(default_factory=list)
    collections: list[list[Any]] = field(default_factory=list)
    attachments: list[list[int]] = field(default_factory=list)
    folders: set[int] = field(default_factory=set)  # the nodes put that are folders
    names: dict[int, str] = field(default_factory=dict)  # the names of the nodes put
    said: dict[str, Any] | None = None

    def entry(self, parent: int, name: str, child: int, added: bool) -> None:
        self.entries.append([parent, name, child, int(added)])

    def __bool__(self) -> bool:
        return bool(self.entries or self.nodes or self.views or self.collections or self.attachments
                    or self.said)


ACTIVITY_OF = {
    "create": "upload", "upload": "upload", "close": "write", "mkdir": "new folder",
    "unlink": "delete", "rmdir": "delete", "rename": "rename", "batch": "batch",
    "link": "Dataset link", "dataset add": "Dataset link", "dataset remove": "Dataset unlink",
    "chmod": "access change", "chown": "access change", "utimens": "attributes",
    "setxattr": "attributes", "removexattr": "attributes", "truncate": "write",
    "dataset create": "Dataset create", "dataset rename": "Dataset rename", "dataset rm": "Dataset delete",
    "dataset sync": "Dataset sync", "dataset upgrade": "Dataset upgrade", "project create": "Project create",
    "project rename": "Project rename", "project rm": "Project delete", "project attach": "Project attach",
    "project detach": "Project detach",
}


IN_VIEWS = {"rmdir": "Dataset delete", "mkdir": "Dataset create", "rename": "Dataset rename",
            "link": "Dataset link"}


def activity_name(operation: str, paths: list[str]) -> str:
    """The activity word for an operation (Dataset view paths make unlink and link
    Dataset actions)."""
    main = paths[0] if paths else ""
    in_views = main.startswith("/.datasets/") or main.startswith("/.projects/")
    if in_views and operation == "unlink":
        return "Dataset unlink"
    if in_views and operation in IN_VIEWS:
        return IN_VIEWS[operation]
    return ACTIVITY_OF.get(operation, operation)


def build_record(touched: Touched, now_ns: int) -> dict[str, Any]:
    """The record of a transaction: what it touched, and the activity if it is the
    first change of the user action under way (or the service said what it was)."""
    record: dict[str, Any] = {"t": now_ns, "w": WRITER}
    gone = {node for node, parent in touched.nodes.items() if parent < 0}
    # names inside a removed folder: no mount shows them once the folder's own name is forgotten
    touched.entries = [entry for entry in touched.entries if entry[0] not in gone]
    if touched.entries:
        record["e"] = touched.entries
    if touched.nodes:
        record["n"] = [[node, parent, touched.names[node]] if node in touched.names else [node, parent]
                       for node, parent in touched.nodes.items()]
    if touched.views:
        record["v"] = touched.views
    if touched.collections:
        record["c"] = touched.collections
    if touched.attachments:
        record["x"] = touched.attachments
    scope = current_action()
    said = touched.said or {}
    if scope is not None and not scope["done"]:
        scope["done"] = True
        operation = said.get("o") or _scope.inner[-1]
        paths = said.get("p") or scope["p"]()
        record.update(o=operation, u=said.get("u") or scope["u"], p=paths,
                      a=said.get("a") or activity_name(operation, paths))
    elif "a" in said:
        record.update(said)
    record.update({key: value for key, value in said.items() if key not in ("o", "u", "p", "a", "i", "f")})
    if "a" in record:
        record["i"] = said.get("i") or main_item(touched, record["p"])
        record["f"] = said.get("f") or folders_of(touched)
    return record


def main_item(touched: Touched, paths: list[str]) -> int | None:
    """The item the action was about: the one named by the last part of the first
    path the user gave, else the first name changed, node changed or link changed."""
    last = paths[0].rstrip("/").rsplit("/", 1)[-1] if paths else ""
    for _, name, child, _ in touched.entries:
        if name == last:
            return child
    if touched.entries:
        return touched.entries[0][2]
    if touched.views:
        return touched.views[0][2]
    return next(iter(touched.nodes), None)


def folders_of(touched: Touched) -> list[int]:
    """The folders a change is about (the ones whose activity shows it): where names
    came and went; else the folders of the records changed."""
    folders = list(dict.fromkeys(entry[0] for entry in touched.entries))
    if folders:
        return folders
    parents = {parent for parent in touched.nodes.values() if parent >= 0}
    changed_folders = [node for node in touched.nodes if node in parents]
    leaves = []
    for node, parent in touched.nodes.items():
        if parent >= 0 and node not in parents:
            leaves.append(parent)  # a folder changed itself shows in its own activity too
            leaves.extend([node] if node in touched.folders else [])
    return list(dict.fromkeys(leaves or changed_folders))


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def encode(record: dict[str, Any]) -> bytes:
    return _ENCODER.encode(record).encode("utf-8", "surrogateescape")


def decode(raw: bytes) -> dict[str, Any]:
    return json.loads(raw.decode("utf-8", "surrogateescape"))


def append(txn: lmdb.Transaction, dbs: dict[str, Any], touched: Touched) -> tuple[int, dict[str, Any]] | None:
    """Write the transaction's record (if it changed anything): (number, record)."""
    if not touched:
        return None
    seq = txn.id()  # LMDB's transaction number: rises with every commit, in every process
    record = build_record(touched, time.time_ns())
    txn.put(U64.pack(seq), encode(record), db=dbs["journal"], append=True)
    for folder in record.get("f", ()):
        txn.put(U64.pack(folder) + U64.pack(seq), b"", db=dbs["journal_folders"])
    if seq % PRUNE_EVERY == 0:  # numbers skip the transactions that wrote no record: about as often
        prune(txn, dbs, seq)
    return seq, record


def prune(txn: lmdb.Transaction, dbs: dict[str, Any], last: int, kept: int = RECORDS_KEPT,
          age_ns: int = RECORDS_AGE_NS) -> int:
    """Drop the records before the last `kept` and those older than `age_ns` (the
    newest always stays, so numbering goes on); returns how many went."""
    oldest_kept_time = time.time_ns() - age_ns
    dropped = 0
    with txn.cursor(db=dbs["journal"]) as cur:
        while cur.first():
            seq = U64.unpack(cur.key())[0]
            if seq >= last:
                break
            record = decode(cur.value())
            if seq > last - kept and record["t"] >= oldest_kept_time:
                break
            for folder in record.get("f", ()):
                txn.delete(U64.pack(folder) + U64.pack(seq), db=dbs["journal_folders"])
            cur.delete()
            dropped += 1
    return dropped


# ------------------------------------------------------------------ reading


def last_seq(txn: lmdb.Transaction, dbs: dict[str, Any]) -> int:
    with txn.cursor(db=dbs["journal"]) as cur:
        return U64.unpack(cur.key())[0] if cur.last() else 0


def first_seq(txn: lmdb.Transaction, dbs: dict[str, Any]) -> int:
    with txn.cursor(db=dbs["journal"]) as cur:
        return U64.unpack(cur.key())[0] if cur.first() else 0


def records_after(txn: lmdb.Transaction, dbs: dict[str, Any], seq: int,
                  limit: int = 10_000) -> Iterator[tuple[int, dict[str, Any]]]:
    """(seq, record) of the records after `seq`, in order (at most `limit`)."""
    with txn.cursor(db=dbs["journal"]) as cur:
        if not cur.set_range(U64.pack(seq + 1)):
            return
        for count, (key, value) in enumerate(cur):
            if count >= limit:
                return
            yield U64.unpack(key)[0], decode(value)


def seq_at(txn: lmdb.Transaction, dbs: dict[str, Any], time_ns: int) -> int:
    """The number of the first record written at or after `time_ns` (one past the
    newest if none): times rise with numbers (records are numbered and timed inside
    the write lock), so bisection over the numbers, which have gaps, finds it."""
    low, high = first_seq(txn, dbs), last_seq(txn, dbs) + 1
    if low == 0:
        return 1
    with txn.cursor(db=dbs["journal"]) as cur:
        def time_from(seq: int) -> tuple[int, int]:
            """(number, time) of the first record numbered `seq` or more."""
            cur.set_range(U64.pack(seq))
            return U64.unpack(cur.key())[0], decode(cur.value())["t"]

        while low < high:
            middle = (low + high) // 2
            if time_from(middle)[1] >= time_ns:
                high = middle
            else:
                low = middle + 1
        return time_from(low)[0] if low <= last_seq(txn, dbs) else low


def folder_records(txn: lmdb.Transaction, dbs: dict[str, Any], folder: int,
                   from_seq: int) -> Iterator[int]:
    """The numbers of the records about a folder's entries, from `from_seq` on."""
    prefix = U64.pack(folder)
    with txn.cursor(db=dbs["journal_folders"]) as cur:
        if not cur.set_range(prefix + U64.pack(from_seq)):
            return
        for key in cur.iternext(keys=True, values=False):
            if not key.startswith(prefix):
                return
            yield U64.unpack(key[8:])[0]


def record(txn: lmdb.Transaction, dbs: dict[str, Any], seq: int) -> dict[str, Any] | None:
    raw = txn.get(U64.pack(seq), db=dbs["journal"])
    return None if raw is None else decode(raw)
