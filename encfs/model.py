"""The product's nouns as plain dataclasses: what the service hands out and takes in."""

from __future__ import annotations

import enum
import os
import stat
from dataclasses import dataclass, field
from typing import Any, NamedTuple

ROOT_ID = 1


class Kind(enum.StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    IMAGE_GROUP = "image_group"
    IMAGE_SEQUENCE = "image_sequence"
    DICOM_FILE = "dicom_file"
    DICOM_SERIES = "dicom_series"
    AUDIO = "audio"
    PDF = "pdf"
    TEXT = "text"
    NIFTI = "nifti"
    OTHER = "other"


GENERATED_KINDS = frozenset({Kind.IMAGE_GROUP, Kind.IMAGE_SEQUENCE, Kind.DICOM_SERIES})


@dataclass(frozen=True)
class Actor:
    """The user on whose behalf a call is made (the mount maps the caller's uid)."""

    name: str
    uid: int = 0
    gid: int = 0

    @classmethod
    def local(cls) -> Actor:
        """Who runs this process, or the caller it runs a command for (`act_for`)."""
        if _acting_for is not None:
            return _acting_for
        uid, gid = os.getuid(), os.getgid()
        return cls(name=f"uid:{uid}", uid=uid, gid=gid)

    @classmethod
    def from_ids(cls, uid: int, gid: int) -> Actor:
        return cls(name=f"uid:{uid}", uid=uid, gid=gid)


_acting_for: Actor | None = None


def act_for(actor: Actor) -> None:
    """From now on this process acts for `actor`: a command a mount's daemon runs for
    a non-root caller (remote.py)."""
    global _acting_for
    _acting_for = actor


@dataclass
class Media:
    """What probing the bytes found. Fields a kind does not have stay None."""

    kind: Kind = Kind.OTHER
    mime: str = "application/octet-stream"
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    fps: float | None = None
    frames: int | None = None
    note: str = ""
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Node:
    """Common to folders and items: a stable id and a place in the tree."""

    id: int
    parent: int
    name: str
    mode: int
    uid: int
    gid: int
    owner: str
    created_ns: int
    mtime_ns: int
    ctime_ns: int
    atime_ns: int
    client_metadata: dict[str, Any] = field(default_factory=dict)
    xattrs: dict[str, str] = field(default_factory=dict)

    @property
    def is_folder(self) -> bool:
        return stat.S_ISDIR(self.mode)


@dataclass
class Folder(Node):
    description: str = ""
    subfolders: int = 0


@dataclass
class Item(Node):
    size: int = 0
    blob: str | None = None
    media: Media = field(default_factory=Media)
    members: list[int] = field(default_factory=list)  # frames or slices, in order (groups only)
    source_folder: int | None = None  # the folder of an image group's or sequence's frames
    dicom: dict[str, Any] | None = None  # the header fields of a DICOM file
    datasets: int = 0  # how many Datasets hold it ("Linked to"); st_nlink is 1 + this
    identity: int | None = None  # the Encord identity, when a save handed one over (saving.py)
    # (blob, checksum) of content that is one block, kept in the record (meta/store.py
    # put_node) so that the first read of a small file looks nothing up (integrity.py);
    # it counts only while its blob is the item's blob.
    only_block_sum: tuple[str, int] | None = field(default=None, compare=False, repr=False)

    def block_sum_hint(self) -> int | None:
        """The checksum of the item's content if that is one block and it is known."""
        hint = self.only_block_sum
        return hint[1] if hint is not None and hint[0] == self.blob else None

    @property
    def is_generated(self) -> bool:
        """Groups, sequences and series are made by encfs, not written by people."""
        return self.media.kind in GENERATED_KINDS


SPECIAL_TYPES = frozenset({stat.S_IFLNK, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK})


def is_special_mode(mode: int) -> bool:
    """Symbolic links, FIFOs, sockets and device nodes: entries of their own."""
    return stat.S_IFMT(mode) in SPECIAL_TYPES


@dataclass
class Special(Node):
    """A symbolic link, FIFO, socket or device node in a folder: an entry of its own,
    not an item of Encord's kinds (never probed, searched or linked into a Dataset).
    `target` is a symbolic link's text as given; `rdev` a device node's number."""

    target: str = ""
    rdev: int = 0

    @property
    def size(self) -> int:
        return len(self.target.encode("utf-8", "surrogateescape"))


class Attributes(NamedTuple):
    """What `stat` shows of a node, kept beside its record so that listings and
    lookups need not decode the whole record."""

    id: int
    mode: int
    uid: int
    gid: int
    size: int
    atime_ns: int
    mtime_ns: int
    ctime_ns: int
    nlink: int
    rdev: int = 0  # device nodes only


@dataclass
class SearchHit:
    path: str
    item: Item


FOLDER_SIZE = 4096


def attributes_of(node: Node) -> Attributes:
    if isinstance(node, Folder):
        return Attributes(node.id, node.mode, node.uid, node.gid, FOLDER_SIZE, node.atime_ns,
                          node.mtime_ns, node.ctime_ns, 2 + node.subfolders)
    if isinstance(node, Special):
        return Attributes(node.id, node.mode, node.uid, node.gid, node.size, node.atime_ns, node.mtime_ns,
                          node.ctime_ns, 1, node.rdev)
    assert isinstance(node, Item)
    return Attributes(node.id, node.mode, node.uid, node.gid, node.size, node.atime_ns, node.mtime_ns,
                      node.ctime_ns, 1 + node.datasets)


@dataclass
class Collection:
    """What Datasets and Projects share: a unique name, a description, an owner."""

    id: int
    name: str
    description: str
    owner: str
    uid: int
    gid: int
    created_ns: int
    mtime_ns: int


@dataclass
class Dataset(Collection):
    """A list of links to items. A synced Dataset's files are its folder's files
    (subfolders included); a mirrored one is a synced Dataset made with its folder."""

    synced_folder: int | None = None
    mirrored: bool = False


@dataclass
class Project(Collection):
    """Annotation work over the files of the Datasets attached to it."""
