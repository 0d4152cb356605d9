"""The interface every blob store implements: a local directory (local.py) or a
bucket (s3.py), chosen when the store is created and recorded in its marker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol


class BlobReader(Protocol):
    def pread(self, size: int, offset: int) -> bytes: ...

    def fileno(self) -> int | None:
        """An OS file descriptor holding the whole blob, if there is one."""

    def descriptor_for(self, offset: int, size: int) -> int | None:
        """A descriptor libfuse may copy [offset, offset + size) from (at that offset),
        checked; None to answer the read with `pread`'s bytes."""

    def verify(self, offset: int, length: int) -> None:
        """Raise if the stored bytes of that range are damaged (before they are
        handed out by descriptor, which Python never reads)."""

    def stored_copy_problem(self) -> str | None:
        """What is wrong with the stored copy that can be told without reading it (an
        object changed or gone from its bucket), or None. A blob with a descriptor is
        read and checked by its bytes instead (integrity.Verifier)."""

    def close(self) -> None: ...


class MemoryBlobReader:
    """A reader over content already in memory (a small file just written)."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    def pread(self, size: int, offset: int) -> bytes:
        return self.content[offset : offset + size]

    def fileno(self) -> None:
        return None

    def descriptor_for(self, offset: int, size: int) -> None:
        return None

    def verify(self, offset: int, length: int) -> None:
        """Bytes just written, held in memory: nothing to check."""

    def stored_copy_problem(self) -> None:
        return None

    def close(self) -> None:
        self.content = b""


class BlobStore(Protocol):
    checks_reads: bool
    """Whether its readers check what they read themselves (a bucket's, as they fetch);
    a local store's readers are wrapped by integrity.VerifiedBlobReader."""

    def spool_dir(self) -> Path:
        """Where drafts are written: on the same disk, so adopting one is a rename."""

    def new_upload(self) -> Any:
        """What takes a draft's content to the store while it is written (draft.Upload),
        or None when storing it at the commit is a rename."""

    def adopt(self, sha: str, spool_path: Path, durable: bool, upload: Any = None) -> bytes | None:
        """Make the finished spool file the content of blob `sha` (it is consumed).
        Returns the blob's place for the metadata (`places`), None if it needs none."""

    def write(self, sha: str, data: bytes | bytearray, durable: bool) -> bytes | None:
        """Store small content given in memory as blob `sha` (returns its place, as adopt)."""

    def sync(self, sha: str) -> None:
        """Make a stored blob durable (a file fsynced now may share the content of one
        that was only closed)."""

    def open_reader(self, sha: str) -> BlobReader: ...

    def delete(self, sha: str) -> None:
        """Take the blob out of the store (its space may be freed a little later)."""

    def empty_trash(self) -> int:
        """Free what a killed process was still removing; returns how many."""

    def list(self) -> Iterator[str]: ...

    def close(self) -> None:
        """Finish what runs in the background (a bucket's deletions) and let go."""
