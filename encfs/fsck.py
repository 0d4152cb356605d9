"""`encfs fsck`: check a store's metadata and content, and repair what can be repaired.

Metadata (one LMDB transaction, a write transaction when repairing):
  - every node has its `stats` row, equal to what its record says, and every `stats`
    row has a node;
  - every `dirents` row names a node that is there, under that parent and name, of
    that type; every node but the root is named by its parent's entry;
  - a folder's `subfolders` count is the number of folders in it;
  - a blob's count in `blobs` is the number of items naming it, and the `holders`
    index names exactly those items; the checksum a small item's record carries
    (`bsum`) is its blob's in `sums`;
  - Dataset links are three rows (`links`, `linked`, `views`) in step, with the Dataset
    and the item there, and an item's `datasets` count is its number of links;
  - `members` and `contents` hold the same pairs;
  - the rows that tie folders to groups (`sources`), DICOM series (`series`), changes
    to settle (`unsettled`) and synced Datasets (`synced`), and Projects to Datasets
    (`attached`, `attachments`), name folders, items, Datasets and Projects that are
    there, and a synced Dataset has its `synced` row;
  - every item has its search postings, and every posting names an item of that name;
  - the attribute index (`attrs`) holds exactly each item's keys (kind, size, dimensions,
    duration, fps, created, client metadata as the metadata schema types it).
Content: every blob an item names is a file of the right size whose bytes hash to its
name, and whose stored block checksums match; blob files no item names are listed.

Repairing never deletes content. Index rows are rebuilt from the records (records are
the truth); a row that points at nothing is dropped; a node no entry names is put
back under its parent or, if that is gone, in `/lost+found`; a damaged blob file and
a blob file nothing names are moved to `STORE/quarantine/` with a note (in a bucket
store, a damaged object is copied to the store's `quarantine/` prefix with a note, and
stays where it is). An item whose
content is damaged or missing stays, and is reported until its content is written
again (identical content repairs the blob) or it is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field

from encfs.blobs.s3 import BucketError, S3BlobStore
from encfs.integrity import READ_CHUNK, Sums, fingerprint_fd
from encfs.meta import holders
from encfs.meta.attrindex import entries_of
from encfs.meta.cloud import all_tombstoned
from encfs.meta.codec import decode_attributes, decode_collection, decode_node
from encfs.meta.search import grams_of
from encfs.meta.store import U64, ReadTxn, WriteTxn, u64
from encfs.model import ROOT_ID, Dataset, Folder, Item, Node, Project, attributes_of
from encfs.store import Store

LOST_AND_FOUND = "lost+found"


@dataclass
class Problem:
    kind: str
    where: str
    detail: str
    outcome: str = ""  # "fixed", "quarantined: PATH", or "" (remains)

    @property
    def remains(self) -> bool:
        return not self.outcome

    def line(self) -> str:
        tail = f"  [{self.outcome}]" if self.outcome else ""
        return f"{self.kind}: {self.where}: {self.detail}{tail}"


@dataclass
class Report:
    problems: list[Problem] = field(default_factory=list)
    counted: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, where: str, detail: str, outcome: str = "") -> Problem:
        problem = Problem(kind, where, detail, outcome)
        self.problems.append(problem)
        return problem

    @property
    def remaining(self) -> list[Problem]:
        return [p for p in self.problems if p.remains]

    def as_json(self) -> str:
        return json.dumps({"checked": self.counted, "problems": [asdict(p) for p in self.problems],
                           "remaining": len(self.remaining)}, indent=2)

    def text(self) -> str:
        lines = [p.line() for p in self.problems]
        checked = ", ".join(f"{n:,} {what}" for what, n in self.counted.items())
        fixed = len(self.problems) - len(self.remaining)
        lines.append(f"checked {checked}: {len(self.problems)} problems found, {fixed} repaired, "
                     f"{len(self.remaining)} remain")
        return "\n".join(lines)


Progress = Callable[[int], None]


def content_size(store: Store) -> int:
    """Bytes the content check reads (for a progress bar)."""
    with store.meta.read() as r:
        sizes = {}
        for _, raw in r.node_records():
            node = _decode(raw)
            if isinstance(node, Item) and node.blob:
                sizes[node.blob] = node.size
    return sum(sizes.values())


def fsck(store: Store, repair: bool, progress: Progress | None = None) -> Report:
    """Check the store (and repair it if `repair`); `progress` is told the bytes of
    content checked as they go."""
    report = Report()
    if repair:
        with store.meta.write() as w:
            named = MetadataCheck(w, report, w).run()
    else:
        with store.meta.read() as r:
            named = MetadataCheck(r, report, None).run()
    ContentCheck(store, report, repair, progress or (lambda n: None)).run(named)
    return report


def _decode(raw: bytes) -> Node | None:
    try:
        return decode_node(raw)
    except Exception:
        return None


class MetadataCheck:
    """The metadata invariants over one transaction; `w` is set when repairing."""

    def __init__(self, r: ReadTxn, report: Report, w: WriteTxn | None) -> None:
        self.r, self.report, self.w = r, report, w
        self.nodes: dict[int, Node] = {}
        self.collections: dict[int, Dataset | Project] = {}
        self.tombstoned = all_tombstoned(r)  # out of the tree and search until their object returns

    def fix(self, kind: str, where: str, detail: str, repair: Callable[[WriteTxn], None] | None) -> None:
        """Record a problem, and repair it now when repairing and it can be."""
        if self.w is not None and repair is not None:
            repair(self.w)
            self.report.add(kind, where, detail, "fixed")
        else:
            self.report.add(kind, where, detail)

    def rows(self, db: str) -> Iterator[tuple[bytes, bytes]]:
        """Every row of a sub-database, read in full first (repairs may change it)."""
        with self.r.txn.cursor(db=self.r.dbs[db]) as cur:
            return iter(list(cur))

    def delete(self, db: str, key: bytes) -> Callable[[WriteTxn], None]:
        return lambda w: w.txn.delete(key, db=w.dbs[db])

    def delete_duplicate(self, db: str, key: bytes, value: bytes) -> Callable[[WriteTxn], None]:
        return lambda w: w.txn.delete(key, value, db=w.dbs[db])

    def put(self, db: str, key: bytes, value: bytes) -> Callable[[WriteTxn], None]:
        return lambda w: w.txn.put(key, value, db=w.dbs[db])

    def run(self) -> dict[str, int]:
        """Check everything; returns the size of each blob the items name."""
        self.load_nodes()
        self.check_stats()
        self.check_dirents()
        self.check_subfolders()
        self.check_links()
        self.check_group_pairs()
        self.check_side_rows()
        self.check_postings()
        self.check_attributes()
        return self.check_blob_counts()

    # ------------------------------------------------------------ nodes and entries

    def load_nodes(self) -> None:
        for key, raw in self.rows("nodes"):
            node = _decode(raw)
            if node is None:
                self.report.add("unreadable record", f"node {U64.unpack(key)[0]}", "cannot be decoded")
            else:
                self.nodes[node.id] = node
        self.report.counted["folders"] = sum(isinstance(n, Folder) for n in self.nodes.values())
        self.report.counted["items"] = sum(isinstance(n, Item) for n in self.nodes.values())

    def check_stats(self) -> None:
        for key, raw in self.rows("stats"):
            node_id = U64.unpack(key)[0]
            node = self.nodes.get(node_id)
            if node is None:
                self.fix("stray stats row", f"node {node_id}", "attributes of a node that is not there",
                         self.delete("stats", key))
            elif decode_attributes(raw) != attributes_of(node):
                self.fix("stats out of step", self.where(node), "the attributes differ from the record",
                         lambda w, node=node: w.put_node(node))
        for node in self.nodes.values():
            if self.r.attributes(node.id) is None:
                self.fix("missing stats row", self.where(node), "the node has no attributes row",
                         lambda w, node=node: w.put_node(node))

    def check_dirents(self) -> None:
        named: set[int] = set(self.tombstoned)
        for key, value in self.rows("dirents"):
            parent_id, name = U64.unpack(key[:8])[0], key[8:].decode(errors="replace")
            child_id, is_folder = U64.unpack(value[:8])[0], value[8:9] == b"d"
            child = self.nodes.get(child_id)
            where = f"entry {name!r} in folder {parent_id}"
            if child is None:
                self.fix("dangling entry", where, f"names node {child_id}, which is not there",
                         self.delete("dirents", key))
            elif child.parent != parent_id or child.name != name:
                self.fix("stray entry", where, f"node {child_id} is {child.name!r} in folder {child.parent}",
                         self.delete("dirents", key))
            elif is_folder != isinstance(child, Folder):
                self.fix("entry of the wrong type", where, "the entry's file/folder mark is wrong",
                         lambda w, child=child: w.link(child.parent, child.name, child.id,
                                                       isinstance(child, Folder)))
                named.add(child_id)
            else:
                named.add(child_id)
        for node in list(self.nodes.values()):
            if node.id != ROOT_ID and node.id not in named:
                self.fix("unnamed node", self.where(node), "no folder entry names it",
                         lambda w, node=node: self.relink(w, node))

    def relink(self, w: WriteTxn, node: Node) -> None:
        """Name a node no entry names: under its parent again, else in /lost+found."""
        parent = self.nodes.get(node.parent)
        if isinstance(parent, Folder) and w.child_id(parent.id, node.name) is None and (
                parent.id != ROOT_ID or isinstance(node, Folder)):
            w.link(parent.id, node.name, node.id, isinstance(node, Folder))
            return
        found = self.lost_and_found(w)
        node.parent, node.name = found.id, f"{node.id}-{node.name}"
        w.put_node(node)
        w.link(found.id, node.name, node.id, isinstance(node, Folder))
        if isinstance(node, Item):
            w.index_name(node.id, node.name)

    def lost_and_found(self, w: WriteTxn) -> Folder:
        existing = w.child_id(ROOT_ID, LOST_AND_FOUND)
        if existing is not None and isinstance(self.nodes.get(existing), Folder):
            return self.nodes[existing]  # type: ignore[return-value]
        now = time.time_ns()
        folder = Folder(id=w.next_id(), parent=ROOT_ID, name=LOST_AND_FOUND, mode=stat.S_IFDIR | 0o700,
                        uid=0, gid=0, owner="system", created_ns=now, mtime_ns=now, ctime_ns=now,
                        atime_ns=now, description="nodes encfs fsck found unnamed")
        w.put_node(folder)
        w.link(ROOT_ID, folder.name, folder.id, True)
        self.nodes[folder.id] = folder
        return folder

    def check_subfolders(self) -> None:
        counts: Counter[int] = Counter()
        for key, value in self.rows("dirents"):
            if value[8:9] == b"d":
                counts[U64.unpack(key[:8])[0]] += 1
        for node in self.nodes.values():
            if isinstance(node, Folder) and node.subfolders != counts[node.id]:
                detail = f"counts {node.subfolders} subfolders, holds {counts[node.id]}"

                def recount(w: WriteTxn, node: Folder = node) -> None:
                    node.subfolders = counts[node.id]
                    w.put_node(node)

                self.fix("subfolder count", self.where(node), detail, recount)

    # ------------------------------------------------------------ Datasets, groups, search

    def load_collections(self) -> None:
        for key, raw in self.rows("collections"):
            try:
                collection = decode_collection(raw)
            except Exception:
                self.report.add("unreadable record", f"collection {U64.unpack(key)[0]}", "cannot be decoded")
                continue
            self.collections[collection.id] = collection

    def check_links(self) -> None:
        self.load_collections()
        datasets = {i: c for i, c in self.collections.items() if isinstance(c, Dataset)}
        links: dict[tuple[int, int], str] = {}
        for key, value in self.rows("links"):
            pair = (U64.unpack(key[:8])[0], U64.unpack(key[8:])[0])
            if pair[0] not in datasets or not isinstance(self.nodes.get(pair[1]), Item):
                self.fix("dangling link", f"Dataset {pair[0]}, item {pair[1]}",
                         "links a Dataset or an item that is not there", self.delete("links", key))
                continue
            links[pair] = value[1:].decode(errors="replace")
        linked = {(U64.unpack(k[8:])[0], U64.unpack(k[:8])[0]) for k, _ in self.rows("linked")}
        views = {(U64.unpack(k[:8])[0], k[8:].decode(errors="replace")): U64.unpack(v)[0]
                 for k, v in self.rows("views")}
        for pair, view in links.items():
            where = f"Dataset {pair[0]}, item {pair[1]}"
            if pair not in linked:
                self.fix("link out of step", where, "no `linked` row",
                         self.put("linked", u64(pair[1]) + u64(pair[0]), b""))
            if views.get((pair[0], view)) != pair[1]:
                self.fix("link out of step", where, f"no view {view!r}",
                         self.put("views", u64(pair[0]) + view.encode(), u64(pair[1])))
        for dataset_id, item_id in linked - set(links):
            self.fix("stray link row", f"Dataset {dataset_id}, item {item_id}", "a `linked` row with no link",
                     self.delete("linked", u64(item_id) + u64(dataset_id)))
        for (dataset_id, view), item_id in views.items():
            if links.get((dataset_id, item_id)) != view:
                self.fix("stray view", f"Dataset {dataset_id}, view {view!r}", "a view with no link",
                         self.delete("views", u64(dataset_id) + view.encode()))
        per_item = Counter(item_id for _, item_id in links)
        for node in self.nodes.values():
            if isinstance(node, Item) and node.datasets != per_item[node.id]:
                detail = f"counts {node.datasets} Datasets, is in {per_item[node.id]}"

                def recount(w: WriteTxn, node: Item = node) -> None:
                    node.datasets = per_item[node.id]
                    w.put_node(node)

                self.fix("Dataset count", self.where(node), detail, recount)

    def check_group_pairs(self) -> None:
        members = {(U64.unpack(k[:8])[0], U64.unpack(k[8:])[0]) for k, _ in self.rows("members")}
        contents = {(U64.unpack(k[8:])[0], U64.unpack(k[:8])[0]) for k, _ in self.rows("contents")}
        for member, group in members | contents:
            where = f"group {group}, member {member}"
            if member not in self.nodes or group not in self.nodes:
                def drop(w: WriteTxn, member: int = member, group: int = group) -> None:
                    w.txn.delete(u64(member) + u64(group), db=w.dbs["members"])
                    w.txn.delete(u64(group) + u64(member), db=w.dbs["contents"])

                self.fix("dangling group row", where, "names a node that is not there", drop)
            elif (member, group) not in contents:
                self.fix("group rows out of step", where, "no `contents` row",
                         self.put("contents", u64(group) + u64(member), b""))
            elif (member, group) not in members:
                self.fix("group rows out of step", where, "no `members` row",
                         self.put("members", u64(member) + u64(group), b""))

    def check_side_rows(self) -> None:
        """Rows that only tie other things together: one naming something that is not
        there is dropped (the records are the truth), and a synced Dataset's row is
        written again from its record."""
        def is_folder(node_id: int) -> bool:
            return isinstance(self.nodes.get(node_id), Folder)

        def is_item(node_id: int) -> bool:
            return isinstance(self.nodes.get(node_id), Item)

        def is_a(kind: type, collection_id: int) -> bool:
            return isinstance(self.collections.get(collection_id), kind)

        for key, _ in self.rows("sources"):
            folder, group = U64.unpack(key[:8])[0], U64.unpack(key[8:16])[0]
            if not (is_folder(folder) and is_item(group)):
                self.dangling("sources", key, f"folder {folder}, group {group}")
        for key, value in self.rows("series"):
            folder, item = U64.unpack(key[:8])[0], U64.unpack(value[:8])[0]
            if not (is_folder(folder) and is_item(item)):
                self.dangling("series", key, f"folder {folder}, DICOM row naming item {item}")
        for key, _ in self.rows("unsettled"):
            if not is_item(U64.unpack(key)[0]):
                self.dangling("unsettled", key, f"item {U64.unpack(key)[0]}")
        for key, _ in self.rows("synced"):
            folder, dataset = U64.unpack(key[:8])[0], U64.unpack(key[8:16])[0]
            record = self.collections.get(dataset)
            if not (is_folder(folder) and isinstance(record, Dataset) and record.synced_folder == folder):
                self.dangling("synced", key, f"folder {folder}, Dataset {dataset}")
        for dataset in self.collections.values():
            folder = dataset.synced_folder if isinstance(dataset, Dataset) else None
            if folder is not None and is_folder(folder) and self.r.txn.get(
                    u64(folder) + u64(dataset.id), db=self.r.dbs["synced"]) is None:
                self.fix("sync row missing", f"Dataset {dataset.name!r}", f"synced with folder {folder}",
                         self.put("synced", u64(folder) + u64(dataset.id), b""))
        self.check_attachments(is_a)

    def check_attachments(self, is_a: Callable[[type, int], bool]) -> None:
        attached = {(U64.unpack(k[:8])[0], U64.unpack(k[8:])[0]) for k, _ in self.rows("attached")}
        attachments = {(U64.unpack(k[8:])[0], U64.unpack(k[:8])[0]) for k, _ in self.rows("attachments")}
        for project, dataset in attached | attachments:
            where = f"Project {project}, Dataset {dataset}"
            if not (is_a(Project, project) and is_a(Dataset, dataset)):
                def drop(w: WriteTxn, project: int = project, dataset: int = dataset) -> None:
                    w.set_attached(project, dataset, False)

                self.fix("dangling row", where, "names a Project or Dataset that is not there", drop)
            elif (project, dataset) not in attachments:
                self.fix("attachment rows out of step", where, "no `attachments` row",
                         self.put("attachments", u64(dataset) + u64(project), b""))
            elif (project, dataset) not in attached:
                self.fix("attachment rows out of step", where, "no `attached` row",
                         self.put("attached", u64(project) + u64(dataset), b""))

    def dangling(self, db: str, key: bytes, where: str) -> None:
        self.fix("dangling row", where, f"a `{db}` row naming something that is not there",
                 self.delete(db, key))

    def check_postings(self) -> None:
        postings: dict[int, set[str]] = defaultdict(set)
        for key, _ in self.rows("grams"):
            gram, item_id = key[:-9].decode(errors="replace"), U64.unpack(key[-8:])[0]
            item = self.nodes.get(item_id)
            if not isinstance(item, Item) or gram not in grams_of(item.name.casefold()):
                self.fix("stray posting", f"gram {gram!r}, item {item_id}", "names no item of that name",
                         self.delete("grams", key))
            else:
                postings[item_id].add(gram)
        for node in self.nodes.values():
            if (isinstance(node, Item) and node.id not in self.tombstoned
                    and not grams_of(node.name.casefold()) <= postings[node.id]):
                self.fix("missing postings", self.where(node), "search would not find it by name",
                         lambda w, node=node: w.index_name(node.id, node.name))

    def check_attributes(self) -> None:
        types = self.r.declared_types()
        items = {node.id: node for node in self.nodes.values() if isinstance(node, Item)}
        wanted = {item_id: entries_of(item, types) for item_id, item in items.items()}
        have: dict[int, set[bytes]] = defaultdict(set)
        for key, value in self.rows("attrs"):
            item_id = U64.unpack(value)[0]
            if key in wanted.get(item_id, ()):
                have[item_id].add(key)
            else:
                self.fix("stray attribute key", f"item {item_id}", "the attribute index holds a value the "
                         "item does not have", self.delete_duplicate("attrs", key, value))
        for item_id, keys in wanted.items():
            missing = keys - have[item_id]
            if missing:
                self.fix("missing attribute keys", self.where(items[item_id]), "search by kind, size, "
                         "dimensions, dates or metadata would miss it",
                         lambda w, i=item_id, m=missing: w.index_attributes(i, set(), m))

    # ------------------------------------------------------------ blob counts

    def check_blob_counts(self) -> dict[str, int]:
        counts: Counter[str] = Counter()
        sizes: dict[str, int] = {}
        for node in self.nodes.values():
            if isinstance(node, Item) and node.blob:
                counts[node.blob] += 1
                sizes[node.blob] = node.size
        recorded = {key.hex(): value for key, value in self.rows("blobs")}
        for sha in set(counts) | set(recorded):
            stored = self.r.blob(sha)
            if stored is None or stored[0] != counts[sha]:
                have = 0 if stored is None else stored[0]
                self.fix("blob count", f"blob {sha}", f"counted {have}, named by {counts[sha]} items",
                         lambda w, sha=sha: w.set_blob(sha, counts[sha], sizes.get(sha, 0)))
        for key, _ in self.rows("sums"):
            if key.hex() not in counts:
                self.fix("stray checksums", f"blob {key.hex()}", "checksums of a blob no item names",
                         self.delete("sums", key))
        self.check_holders()
        self.check_block_sum_copies()
        self.report.counted["blobs"] = len(counts)
        return sizes

    def check_holders(self) -> None:
        """The index of which items name each blob, against the items themselves."""
        named = {node.id: node.blob for node in self.nodes.values() if isinstance(node, Item) and node.blob}
        indexed = {U64.unpack_from(key, 32)[0]: key[:32].hex() for key, _ in self.rows("holders")}
        recorded = {U64.unpack(key)[0]: value.hex() for key, value in self.rows("held")}
        wrong = {i for i in set(named) | set(indexed) | set(recorded)
                 if not named.get(i) == indexed.get(i) == recorded.get(i)}
        for item_id in sorted(wrong):
            self.fix("blob holders", f"item {item_id}",
                     f"names blob {named.get(item_id)}, the index says {indexed.get(item_id)}",
                     lambda w, i=item_id: self.reindex_holder(w, i, named.get(i), indexed.get(i)))

    def check_block_sum_copies(self) -> None:
        """The checksum a small item's record carries (`bsum`) is its blob's in `sums`:
        a wrong copy would make every read of the file fail."""
        for node in self.nodes.values():
            copy = node.block_sum_hint() if isinstance(node, Item) else None
            if copy is None:
                continue
            raw = self.r.sums(node.blob or "")
            stored = Sums.unpack(raw).values if raw is not None else ()
            if tuple(stored) != (copy,):
                found = ", ".join(f"{value:016x}" for value in stored) or "none"
                self.fix("record checksum", self.where(node),
                         f"the record carries block checksum {copy:016x}, the blob has {found}",
                         lambda w, item=node: self.recopy_block_sum(w, item))

    @staticmethod
    def recopy_block_sum(w: WriteTxn, item: Item) -> None:
        item.only_block_sum = None
        w.put_node(item)  # copies it again from `sums`, if the blob has one block

    @staticmethod
    def reindex_holder(w: WriteTxn, item_id: int, sha: str | None, indexed: str | None) -> None:
        if indexed:
            w.txn.delete(bytes.fromhex(indexed) + U64.pack(item_id), db=w.dbs["holders"])
        w.txn.delete(U64.pack(item_id), db=w.dbs["held"])
        holders.hold(w.txn, w.dbs, item_id, sha)

    def where(self, node: Node) -> str:
        """A node's path as its records say (`?` where a parent is missing)."""
        parts, current, seen = [], node, set()
        while current.id != ROOT_ID and current.id not in seen:
            seen.add(current.id)
            parts.append(current.name)
            parent = self.nodes.get(current.parent)
            if parent is None:
                parts.append("?")
                break
            current = parent
        return f"{'/' + '/'.join(reversed(parts))} (id {node.id})"


class ContentCheck:
    """Every named blob read in full: present, of its size, hashing to its name."""

    def __init__(self, store: Store, report: Report, repair: bool, progress: Progress) -> None:
        self.store, self.report, self.repair, self.progress = store, report, repair, progress
        self.blobs = store.blobs

    def run(self, named: dict[str, int]) -> None:
        in_bucket = isinstance(self.blobs, S3BlobStore)
        for sha, size in sorted(named.items()):
            if in_bucket:
                self.check_object(sha, size)
            else:
                self.check_blob(sha, size)
            self.progress(size)
        if in_bucket:  # objects no item names are `encfs gc`'s (with its grace period)
            return
        for sha in sorted(set(self.blobs.list()) - set(named)):
            self.check_unnamed(sha)

    def check_object(self, sha: str, size: int) -> None:
        """A bucket store's blob: its object read whole (not through the cache), its
        length, ETag and sha256 checked."""
        blobs = self.blobs
        assert isinstance(blobs, S3BlobStore)
        try:
            place, _, _ = blobs.lookup(sha)
            found = hashlib.sha256()
            if size:
                body = blobs.open_range(place, sha, size, 0, size)
                try:
                    while chunk := body.read(READ_CHUNK):
                        found.update(chunk)
                finally:
                    body.close()
        except BucketError as exc:
            self.damaged_object(sha, exc.reason)
            return
        if found.hexdigest() != sha:
            self.damaged_object(sha, "its object's bytes do not hash to its name")

    def damaged_object(self, sha: str, problem: str) -> None:
        """A bucket store's damaged object: with --repair a copy of it is set aside in
        the bucket's quarantine/ (nothing is deleted); its items stay damaged."""
        detail = f"{problem}; content of {self.items_of(sha) or 'no item'}"
        if not self.repair:
            self.report.add("damaged content", f"blob {sha}", detail)
            return
        try:
            copied = self.blobs.quarantine(sha, f"encfs fsck: damaged content: {problem}")
        except BucketError as exc:
            self.report.add("damaged content", f"blob {sha}", f"{detail}; not set aside: {exc.reason}")
            return
        if copied is None:
            self.report.add("damaged content", f"blob {sha}", f"{detail}; the object is gone: nothing to "
                            "set aside")
            return
        self.report.add("damaged content", f"blob {sha}", detail, f"quarantined: {copied}")
        self.report.add("damaged content", f"blob {sha}", f"the object stays in place, damaged; {detail} "
                        "(remove or rewrite those items)")

    def check_unnamed(self, sha: str) -> None:
        """A blob file no item named when the metadata was checked. A mount may have
        stored it since: it is judged again in a write transaction (no commit is
        half-way), and quarantined in it."""
        detail = "a blob file no item names"
        with self.store.meta.write() as w:
            if w.blob(sha) is not None:
                return
            if self.repair:
                moved = self.blobs.quarantine(sha, "encfs fsck: no item names this blob")
                if moved is not None:
                    self.report.add("unnamed blob file", f"blob {sha}", detail, f"quarantined: {moved}")
                return
        self.report.add("unnamed blob file", f"blob {sha}", detail)

    def check_blob(self, sha: str, size: int) -> None:
        path = self.blobs.path(sha)
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            owners = self.items_of(sha)
            if owners:  # else its last item went since the metadata was checked
                self.report.add("missing content", f"blob {sha}", f"no blob file; content of {owners}")
            return
        try:
            actual = os.fstat(fd).st_size
            found, sums = fingerprint_fd(fd, actual) if actual == size else ("", None)
        finally:
            os.close(fd)
        if actual != size:
            problem = f"the blob file has {actual} bytes instead of {size}"
        elif found != sha:
            problem = "its bytes do not hash to its name" + self.first_bad_block(sha, sums)
        else:
            assert sums is not None
            self.check_sums(sha, sums)
            return
        self.damaged(sha, problem)

    def first_bad_block(self, sha: str, found: Sums | None) -> str:
        with self.store.meta.read() as r:
            raw = r.sums(sha)
        if raw is None or found is None:
            return ""
        stored = Sums.unpack(raw)
        for index, (want, have) in enumerate(zip(stored.values, found.values, strict=False)):
            if want != have:
                start = index * stored.block
                return f" (block {index}, from byte {start}, differs from its checksum)"
        return ""

    def damaged(self, sha: str, problem: str) -> None:
        owners = self.items_of(sha)
        detail = f"{problem}; content of {owners or 'no item'} (write identical content again to repair it)"
        if self.repair:
            moved = self.blobs.quarantine(sha, f"encfs fsck: damaged content: {problem}")
            self.report.add("damaged content", f"blob {sha}", detail, f"quarantined: {moved}")
            if owners:
                self.report.add("missing content", f"blob {sha}", f"moved to quarantine; content of {owners}")
        else:
            self.report.add("damaged content", f"blob {sha}", detail)

    def check_sums(self, sha: str, sums: Sums) -> None:
        """The content is whole: its stored checksums must match it (or be written)."""
        with self.store.meta.read() as r:
            raw = r.sums(sha)
        if raw is not None and Sums.unpack(raw) == sums:
            return
        detail = "no block checksums (stored before them)" if raw is None else "block checksums differ"
        if not self.repair:
            if raw is not None:
                self.report.add("checksums out of step", f"blob {sha}", detail)
            return
        with self.store.meta.write() as w:
            w.put_sums(sha, sums.pack())
        if raw is not None:
            self.report.add("checksums out of step", f"blob {sha}", detail, "fixed")

    def items_of(self, sha: str) -> str:
        """The paths of the items naming the blob now ("" if none)."""
        with self.store.meta.read() as r:
            ids = [node_id for node_id, raw in r.node_records()
                   if (node := _decode(raw)) is not None and isinstance(node, Item) and node.blob == sha]
            paths = []
            for node_id in ids[:5]:
                paths.append(_path(r, node_id))
        more = f" and {len(ids) - 5} more" if len(ids) > 5 else ""
        return ", ".join(paths) + more


def _path(r: ReadTxn, node_id: int) -> str:
    parts, current = [], r.node(node_id)
    while current is not None and current.id != ROOT_ID and len(parts) < 256:
        parts.append(current.name)
        current = r.node(current.parent)
    return "/" + "/".join(reversed(parts))
