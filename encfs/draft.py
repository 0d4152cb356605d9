"""A draft: the new content of one item while it is being written.

Writes go to a spool file beside the blob store. While writes arrive in order the
sha256 is computed on the fly, so committing a large sequential write costs no second
pass; any other write pattern is hashed once at commit.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import tempfile
from pathlib import Path

HASH_CHUNK = 4 << 20


class Draft:
    def __init__(self, spool_dir: Path) -> None:
        fd, name = tempfile.mkstemp(dir=spool_dir, prefix="draft-")
        fcntl.flock(fd, fcntl.LOCK_EX)  # tells a sweeper that a live process owns it
        self.fd = fd
        self.path = Path(name)
        self.size = 0
        self._hash: hashlib._Hash | None = hashlib.sha256()
        self._hashed = 0

    @classmethod
    def from_local_file(cls, spool_dir: Path, source: Path) -> Draft:
        draft = cls(spool_dir)
        try:
            with open(source, "rb") as src:
                while chunk := src.read(HASH_CHUNK):
                    view = memoryview(chunk)
                    while view:
                        view = view[draft.write(view, draft.size) :]
        except BaseException:
            draft.discard()
            raise
        return draft

    def write(self, data: bytes | memoryview, offset: int) -> int:
        written = os.pwrite(self.fd, data, offset)
        if self._hash is not None and offset == self._hashed and written == len(data):
            self._hash.update(data)
            self._hashed += written
        elif offset < self._hashed:
            self._hash = None
        self.size = max(self.size, offset + written)
        return written

    def read(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def truncate(self, length: int) -> None:
        os.ftruncate(self.fd, length)
        if length < self._hashed:
            self._hash = None
        self.size = length

    def invalidate_hash(self) -> None:
        """The spool was filled behind our back (copied from a blob)."""
        self._hash = None

    def digest(self) -> str:
        if self._hash is None or self._hashed != self.size:
            self._rehash()
        assert self._hash is not None
        return self._hash.hexdigest()

    def _rehash(self) -> None:
        h = hashlib.sha256()
        offset = 0
        while offset < self.size:
            chunk = os.pread(self.fd, min(HASH_CHUNK, self.size - offset), offset)
            if not chunk:
                break
            h.update(chunk)
            offset += len(chunk)
        self._hash, self._hashed = h, offset

    def head(self, size: int = 64 * 1024) -> bytes:
        return os.pread(self.fd, size, 0)

    def fsync(self) -> None:
        os.fsync(self.fd)

    def discard(self) -> None:
        """Drop the draft; safe to call twice and after the spool was adopted."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
