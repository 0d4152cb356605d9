"""Open files of one mount.

All descriptors of one item in this mount share one `OpenFile`, as they share one
inode on a local disk: a write through one is read at once through the others. The
first write starts a draft (see draft.py); `flush` (every close) and `fsync` hand it
to the service, which commits it. A draft kept as the item's unsettled content
(live_drafts.py) stays with the open file after a commit, and later writes go on
into it. The committed content is read through a blob reader opened at `open`, so
a file removed while open stays readable until closed;
its reads are checked against the blob's checksums (integrity.py): damage is EIO.
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from encfs.blobs.base import BlobReader
from encfs.draft import Draft, Payload
from encfs.errors import NoSpace
from encfs.model import Actor, Item
from encfs.service import FilesService

RETIRED_READERS_KEPT = 8


@dataclass
class OpenFile:
    item: Item
    reader: BlobReader | None = None
    draft: Draft | None = None
    handles: int = 0
    mtime_override: int | None = None
    lost_to_full_disk: bool = False
    retired: list[BlobReader] = field(default_factory=list)
    lock: threading.RLock = field(default_factory=threading.RLock)

    @property
    def size(self) -> int:
        return self.draft.size if self.draft is not None else self.item.size

    def read(self, size: int, offset: int) -> bytes:
        if self.draft is not None:
            return self.draft.read(size, offset)
        if self.reader is None:
            return b""
        return self.reader.pread(size, offset)

    def read_source(self, size: int, offset: int) -> tuple[int | bytes, int]:
        """What to answer a read with: bytes, or an open file descriptor (and how
        much of it) for libfuse to copy from without passing through Python."""
        if self.draft is not None or self.reader is None:
            data = self.read(size, offset)
            return data, len(data)
        size = max(0, min(size, self.item.size - offset))
        fd = self.reader.descriptor_for(offset, size) if size else None  # checked: libfuse copies from it
        if fd is None:
            data = self.reader.pread(size, offset)
            return data, len(data)
        return fd, size

    def replace_reader(self, reader: BlobReader | None) -> None:
        """A read answered with a descriptor is copied after we return, so an old
        reader is closed only some commits later (or at the last close)."""
        if self.reader is not None:
            self.retired.append(self.reader)
        self.reader = reader
        while len(self.retired) > RETIRED_READERS_KEPT:
            self.retired.pop(0).close()

    def close_readers(self) -> None:
        self.replace_reader(None)
        for reader in self.retired:
            reader.close()
        self.retired.clear()


class OpenFiles:
    """Handle number -> OpenFile, and item id -> OpenFile."""

    def __init__(self, service: FilesService) -> None:
        self.service = service
        self._by_handle: dict[int, OpenFile] = {}
        self._by_item: dict[int, OpenFile] = {}
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def open(self, actor: Actor, path: str, item: Item, truncate: bool) -> int:
        with self._lock:
            opened = self._by_item.get(item.id)
            if opened is None:
                opened = self._by_item[item.id] = OpenFile(item=item)
            opened.handles += 1
            number = next(self._numbers)
            self._by_handle[number] = opened
        try:
            with opened.lock:
                if truncate:
                    self._ensure_draft(actor, opened, keep_content=False)
                    self.service.truncate_draft(actor, path, opened.draft, 0)  # type: ignore[arg-type]
                elif opened.reader is None and opened.draft is None:
                    opened.reader = self.service.open_reader(actor, item)
        except BaseException:
            self.release(number)
            raise
        return number

    def get(self, number: int) -> OpenFile:
        return self._by_handle[number]

    def find(self, number: int) -> OpenFile | None:
        return self._by_handle.get(number)

    def for_item(self, item_id: int) -> OpenFile | None:
        return self._by_item.get(item_id)

    def _ensure_draft(self, actor: Actor, opened: OpenFile, keep_content: bool) -> Draft:
        if opened.draft is None:
            opened.draft = self.service.start_draft(actor, opened.item, keep_content, opened.reader)
        return opened.draft

    def write(self, actor: Actor, path: str, opened: OpenFile, data: bytes | Payload, offset: int) -> int:
        with opened.lock:
            draft = self._ensure_draft(actor, opened, keep_content=True)
            try:
                written = self.service.write(actor, path, draft, data, offset)
            except NoSpace:
                opened.lost_to_full_disk = True
                raise
            opened.mtime_override = None
            return written

    def truncate(self, actor: Actor, path: str, opened: OpenFile, length: int) -> None:
        with opened.lock:
            draft = self._ensure_draft(actor, opened, keep_content=length > 0)
            self.service.truncate_draft(actor, path, draft, length)
            opened.mtime_override = None

    def allocate(self, actor: Actor, path: str, opened: OpenFile, offset: int, length: int,
                 mode: int = 0) -> None:
        with opened.lock:
            draft = self._ensure_draft(actor, opened, keep_content=True)
            self.service.allocate_draft(actor, path, draft, offset, length, mode)  # a refusal loses no bytes
            opened.mtime_override = None

    def copy_stored(self, actor: Actor, path: str, target: OpenFile, source: OpenFile, offset_in: int,
                    offset_out: int, length: int) -> int | None:
        """copy_file_range from a committed file: bytes copied, with none moved. The
        first piece (both offsets 0) goes into an empty target, which takes the start
        of the source's blob; the kernel sends a copy of 4 GiB or more in pieces, and
        each next piece (the same offset on both sides, where the target ends) takes
        more of it. None for any other copy: the caller then lets the kernel copy through
        reads and writes."""
        if target is source or offset_in != offset_out:
            return None
        first, second = sorted((source, target), key=lambda opened: opened.item.id)
        with first.lock, second.lock:
            if source.draft is None and source.item.blob is None and source.item.size:
                source.item = self.service.settle_now(source.item) or source.item  # unsettled: hashed now
            item = source.item
            if source.draft is not None or item.blob is None or offset_in >= item.size:
                return None
            if offset_in > 0:
                added = target.draft.take_more_of(item.blob, offset_out, length) if target.draft else 0
                return added or None
            if target.size != 0 or (target.draft is not None and not target.draft.is_blank()):
                return None
            draft = self._ensure_draft(actor, target, keep_content=False)
            if not self.service.take_content(actor, path, draft, item, length):
                return None
            target.mtime_override = None
            return draft.size

    def set_mtime(self, opened: OpenFile, mtime_ns: int) -> None:
        """utimens while a draft is pending: the commit keeps this mtime."""
        with opened.lock:
            if opened.draft is not None:
                opened.mtime_override = mtime_ns

    def commit(self, actor: Actor, path: str, opened: OpenFile, durable: bool) -> None:
        with opened.lock:
            draft = opened.draft
            pending = draft is not None and (draft.changed or opened.lost_to_full_disk)
            if draft is not None and not pending and opened.mtime_override is None:
                if draft.live_name is None:  # nothing changed (a refused fallocate, say): no new version
                    opened.draft = None
                    draft.discard()
                draft = None
            if draft is None:
                if durable:
                    self.service.make_durable(opened.item)
                return
            opened.draft = None
            if opened.lost_to_full_disk:
                opened.lost_to_full_disk = False
                draft.discard()
                raise NoSpace("no space left on the store's disk; the file keeps its previous content", path)
            mtime = opened.mtime_override
            opened.mtime_override = None
            small = draft.memory_content()
            committed = self.service.commit(actor, path, opened.item.id, draft, durable, mtime)
            if committed is None:  # removed while open: its descriptors go on with the draft
                opened.draft = draft
                return
            opened.item = committed
            if draft.live_name is not None:  # its file is the item's content: writes go on in place
                draft.changed = False
                opened.draft = draft
                return
            opened.replace_reader(self.service.open_reader(actor, committed, known_content=small))

    def release(self, number: int) -> None:
        with self._lock:
            opened = self._by_handle.pop(number, None)
            if opened is None:
                return
            opened.handles -= 1
            if opened.handles > 0:
                return
            self._by_item.pop(opened.item.id, None)
        with opened.lock:
            if opened.draft is not None:  # a flush failed: nothing half-stored remains
                opened.draft.discard()
                opened.draft = None
            opened.close_readers()
