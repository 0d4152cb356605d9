"""The store directory: where it is, creating it, opening it.

    STORE/
      encfs-store.json   marks the directory as a store (format, id)
      meta.lmdb/         the metadata (see meta/store.py for the key layout)
      blobs/ab/cdef…     file bytes by sha256
      spool/             drafts being written (same disk as blobs: adopting one is a rename)
      trash/             big deleted blobs, being unlinked in the background
      quarantine/        content set aside by recovery or fsck --repair, with a note each
      log/encfs.log      one line per refusal or fault
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import platformdirs

from encfs.blobs.local import LocalBlobStore
from encfs.errors import StoreError
from encfs.meta.store import FORMAT, MetaStore

MARKER = "encfs-store.json"


def default_store_path() -> Path:
    return Path(platformdirs.user_data_dir("encfs")) / "store"


def locate(explicit: str | os.PathLike[str] | None) -> Path:
    """--store, else $ENCFS_STORE, else the platform's user data directory."""
    if explicit:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get("ENCFS_STORE")
    if env:
        return Path(env).expanduser().absolute()
    return default_store_path()


@dataclass
class Store:
    path: Path
    meta: MetaStore
    blobs: LocalBlobStore

    @property
    def log_path(self) -> Path:
        return self.path / "log" / "encfs.log"

    @property
    def store_id(self) -> str:
        with self.meta.read() as r:
            return r.store_id()

    def close(self) -> None:
        self.meta.close()


def init_store(path: Path) -> Path:
    """Create the directory layout. Refuses a non-empty directory that is not a store."""
    if (path / MARKER).exists():
        raise StoreError(f"{path} is already an encfs store")
    if path.exists() and any(path.iterdir()):
        raise StoreError(f"{path} is not empty; give an empty or new directory for the store")
    path.mkdir(parents=True, exist_ok=True)
    for sub in ("meta.lmdb", "log"):
        (path / sub).mkdir(exist_ok=True)
    LocalBlobStore(path / "blobs").create()
    meta = MetaStore(path / "meta.lmdb", create=True)
    from encfs.service import root_folder

    meta.initialise(root_folder())
    with meta.read() as r:
        store_id = r.store_id()
    meta.close()
    (path / MARKER).write_text(json.dumps({"format": FORMAT.decode(), "store_id": store_id}) + "\n")
    return path


def open_store(path: Path) -> Store:
    if not path.exists():
        raise StoreError(f"store {path} does not exist; create it with `encfs init --store {path}`")
    if not path.is_dir() or not (path / MARKER).is_file():
        raise StoreError(f"{path} is not an encfs store (no {MARKER}); create one with `encfs init`")
    try:
        meta = MetaStore(path / "meta.lmdb")
    except Exception as exc:
        raise StoreError(f"cannot open the metadata of store {path}: {exc}") from exc
    if meta.format() != FORMAT:
        meta.close()
        raise StoreError(f"store {path} has an unknown format")
    meta.env.reader_check()
    blobs = LocalBlobStore(path / "blobs")
    (path / "log").mkdir(exist_ok=True)
    return Store(path=path, meta=meta, blobs=blobs)
