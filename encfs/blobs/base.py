"""The interface every blob store implements (a local directory now, S3 later)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class BlobReader(Protocol):
    def pread(self, size: int, offset: int) -> bytes: ...

    def fileno(self) -> int | None:
        """An OS file descriptor libfuse may read from directly, if there is one."""

    def verify(self, offset: int, length: int) -> None:
        """Raise if the stored bytes of that range are damaged (before they are
        handed out by descriptor, which Python never reads)."""

    def close(self) -> None: ...


class MemoryBlobReader:
    """A reader over content already in memory (a small file just written)."""

    def __init__(self, content: bytes) -> None:
        self.content = content

    def pread(self, size: int, offset: int) -> bytes:
        return self.content[offset : offset + size]

    def fileno(self) -> None:
        return None

    def verify(self, offset: int, length: int) -> None:
        """Bytes just written, held in memory: nothing to check."""

    def close(self) -> None:
        self.content = b""


class BlobStore(Protocol):
    def spool_dir(self) -> Path:
        """Where drafts are written: on the same disk, so adopting one is a rename."""

    def adopt(self, sha: str, spool_path: Path, durable: bool) -> None:
        """Make the finished spool file the content of blob `sha` (it is consumed)."""

    def write(self, sha: str, data: bytes | bytearray, durable: bool) -> None:
        """Store small content given in memory as blob `sha`."""

    def sync(self, sha: str) -> None:
        """Make a stored blob durable (a file fsynced now may share the content of one
        that was only closed)."""

    def open_reader(self, sha: str) -> BlobReader: ...

    def delete(self, sha: str) -> None:
        """Take the blob out of the store (its space may be freed a little later)."""

    def empty_trash(self) -> int:
        """Free what a killed process was still removing; returns how many."""

    def list(self) -> Iterator[str]: ...
