"""Blobs as files under STORE/blobs/ab/cdef…, named by their sha256."""

from __future__ import annotations

import contextlib
import fcntl
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from encfs.blobs.removal import BACKGROUND_MIN, remove


class LocalBlobReader:
    """An open blob file. It stays readable after the blob is deleted, which is
    what keeps a file unlinked while open readable until it is closed. It holds a
    shared `flock` (when it can have one at once): a writer takes a blob over as its
    item's unsettled content only when nobody reads it (live_drafts.py)."""

    shares_lock = True

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        if self.shares_lock:
            with contextlib.suppress(BlockingIOError):
                fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)

    def pread(self, size: int, offset: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def fileno(self) -> int:
        return self.fd

    def descriptor_for(self, offset: int, size: int) -> int:
        return self.fd

    def verify(self, offset: int, length: int) -> None:
        """Unchecked: the service wraps the readers of items (integrity.py)."""

    def stored_copy_problem(self) -> None:
        return None  # its bytes are checked through the descriptor

    def close(self) -> None:
        os.close(self.fd)


class LocalBlobStore:
    checks_reads = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spool = root.parent / "spool"
        self.trash = root.parent / "trash"
        self._prefix = os.path.abspath(root) + os.sep  # blob paths are built as text: hot paths build many

    def create(self) -> None:
        """Make the directory layout: 256 fan-out folders, so a write needs no mkdir."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.spool.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.trash.mkdir(parents=True, exist_ok=True, mode=0o700)
        for n in range(256):
            (self.root / f"{n:02x}").mkdir(exist_ok=True, mode=0o700)

    def spool_dir(self) -> Path:
        return self.spool

    def path(self, sha: str) -> str:
        return f"{self._prefix}{sha[:2]}{os.sep}{sha[2:]}"

    def new_upload(self) -> None:
        """Nothing to send ahead: adopting a draft is a rename."""
        return None

    def adopt(self, sha: str, spool_path: Path, durable: bool, upload: object = None) -> None:
        target = self.path(sha)
        os.rename(spool_path, target)
        if durable:
            _fsync_dir(os.path.dirname(target))

    def write(self, sha: str, data: bytes | bytearray, durable: bool) -> None:
        target = self.path(sha)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        if durable:
            _fsync_dir(os.path.dirname(target))

    def sync(self, sha: str) -> None:
        target = self.path(sha)
        fd = os.open(target, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        _fsync_dir(os.path.dirname(target))

    def open_reader(self, sha: str) -> LocalBlobReader:
        return LocalBlobReader(self.path(sha))

    def delete(self, sha: str) -> None:
        """Take the blob out of the store now. A big one is renamed into `trash/` (at
        once, inside the caller's transaction) and unlinked in the background."""
        path = self.path(sha)
        try:
            size = os.stat(path).st_size
            if size < BACKGROUND_MIN:
                os.unlink(path)
                return
            self.trash.mkdir(exist_ok=True, mode=0o700)  # stores made before there was a trash
            gone = f"{self.trash}{os.sep}{sha}.{uuid.uuid4().hex}"
            os.rename(path, gone)
        except FileNotFoundError:
            return
        remove(gone, size)

    def quarantine(self, sha: str | None, note: str, path: str | None = None) -> Path | None:
        """Move a blob file (or another file of the store, `path`) into
        `STORE/quarantine/`, beside a note saying why: content encfs cannot account
        for is set aside, never deleted. None if the file is not there."""
        source = path or self.path(sha or "")
        folder = self.root.parent / "quarantine"
        folder.mkdir(mode=0o700, exist_ok=True)
        target = folder / f"{sha or os.path.basename(source)}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(source, target)
        except FileNotFoundError:
            return None
        target.with_name(target.name + ".txt").write_text(f"{source}\n{note}\n")
        return target

    def empty_trash(self) -> int:
        """Unlink what a killed process left in `trash/`; returns how many."""
        if not self.trash.exists():
            return 0
        left = list(self.trash.iterdir())
        for entry in left:
            entry.unlink(missing_ok=True)
        return len(left)

    def close(self) -> None:
        """Nothing held open."""

    def list(self) -> Iterator[str]:
        if not self.root.exists():
            return
        for sub in self.root.iterdir():
            for entry in sub.iterdir():
                yield sub.name + entry.name


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
