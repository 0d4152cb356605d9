"""The interface every blob store implements (a local directory now, S3 later)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Protocol


class BlobReader(Protocol):
    def pread(self, size: int, offset: int) -> bytes: ...

    def close(self) -> None: ...


class BlobStore(Protocol):
    def spool_dir(self) -> Path:
        """Where drafts are written: on the same disk, so adopting one is a rename."""

    def adopt(self, sha: str, spool_path: Path, durable: bool) -> None:
        """Make the finished spool file the content of blob `sha` (it is consumed)."""

    def open_reader(self, sha: str) -> BlobReader: ...

    def copy_into(self, sha: str, fd: int) -> None:
        """Write the whole blob into an open file (to start a draft from it)."""

    def delete(self, sha: str) -> None: ...

    def list(self) -> Iterator[str]: ...
