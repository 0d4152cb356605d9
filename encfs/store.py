"""The store directory: where it is, creating it, opening it.

    STORE/
      encfs-store.json   marks the directory as a store (format, id, and where its blobs
                         are: this directory, or a bucket (s3://BUCKET/PREFIX, endpoint,
                         profile, region: never a credential) with its cache's size)
      meta.lmdb/         the metadata (see meta/store.py for the key layout)
      blobs/ab/cdef…     file bytes by sha256 (a store whose blobs are in a bucket: none)
      cache/             a bucket store's local cache of blob bytes (blobs/cache.py)
      spool/             drafts being written (same disk as blobs: adopting one is a rename)
      trash/             big deleted blobs, being unlinked in the background
      quarantine/        content set aside by recovery or fsck --repair, with a note each
      log/encfs.log      one line per refusal or fault (rotated: encfs.log.1, .2, .3)

The store is private: its directories are 0700 and its files 0600, whatever a file's
mode on the mount (the mount decides who reads what; the store holds everything).
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from encfs.blobs.base import BlobStore
from encfs.blobs.cache import BlobCache
from encfs.blobs.local import LocalBlobStore
from encfs.blobs.s3 import BucketPlace, S3BlobStore, check_bucket
from encfs.errors import StoreError
from encfs.logs import note_in_log
from encfs.meta.check import check_data_file, damage_in
from encfs.meta.room import DEFAULT_MAX_METADATA, SMALLEST_MAX_METADATA, human
from encfs.meta.store import FORMAT, MetaStore

MARKER = "encfs-store.json"
PRIVATE_FOLDER, PRIVATE_FILE = 0o700, 0o600
SUBFOLDERS = ("meta.lmdb", "blobs", "spool", "trash", "log")
DEFAULT_CACHE_SIZE = 8 << 30


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
    blobs: BlobStore
    _object_cache: BlobCache | None = field(default=None, repr=False)

    @property
    def object_cache(self) -> BlobCache:
        """Where bytes read from buckets are kept on the local disk: a bucket store's
        own blob cache, or `cache/` for the objects a local store's items refer to."""
        if isinstance(self.blobs, S3BlobStore):
            return self.blobs.cache
        if self._object_cache is None:
            self._object_cache = BlobCache(self.path / "cache", DEFAULT_CACHE_SIZE)
        return self._object_cache

    @property
    def log_path(self) -> Path:
        return self.path / "log" / "encfs.log"

    @property
    def store_id(self) -> str:
        with self.meta.read() as r:
            return r.store_id()

    def close(self) -> None:
        if self._object_cache is not None:
            self._object_cache.close()
        self.blobs.close()
        self.meta.close()


@dataclass(frozen=True)
class BucketBlobs:
    """A store's blobs in a bucket, as given to `encfs init --blobs`."""

    place: BucketPlace
    cache_size: int = DEFAULT_CACHE_SIZE
    cache_dir: Path | None = None

    def marker(self) -> dict:
        return {**self.place.marker(), "cache_size": self.cache_size,
                "cache_dir": None if self.cache_dir is None else str(self.cache_dir)}


def init_store(path: Path, max_metadata: int = DEFAULT_MAX_METADATA,
               bucket: BucketBlobs | None = None) -> Path:
    """Create the directory layout, private to its owner. Refuses a non-empty
    directory that is not a store. `max_metadata`: how big the metadata may grow;
    `bucket`: keep the blobs there (checked first: it exists and may be written)."""
    if (path / MARKER).exists():
        raise StoreError(f"{path} is already an encfs store")
    if path.exists() and any(path.iterdir()):
        raise StoreError(f"{path} is not empty; give an empty or new directory for the store")
    if max_metadata < SMALLEST_MAX_METADATA:
        raise StoreError(f"the metadata maximum must be at least {human(SMALLEST_MAX_METADATA)}")
    if bucket is not None:
        check_bucket(bucket.place)
    path.mkdir(parents=True, exist_ok=True, mode=PRIVATE_FOLDER)
    os.chmod(path, PRIVATE_FOLDER)
    for sub in ("meta.lmdb", "log"):
        (path / sub).mkdir(exist_ok=True, mode=PRIVATE_FOLDER)
    if bucket is None:
        LocalBlobStore(path / "blobs").create()
    else:
        for sub in ("spool", "trash"):
            (path / sub).mkdir(exist_ok=True, mode=PRIVATE_FOLDER)
    meta = MetaStore(path / "meta.lmdb", create=True, max_metadata=max_metadata)
    from encfs.service import root_folder

    meta.initialise(root_folder())
    with meta.read() as r:
        store_id = r.store_id()
    meta.close()
    marker = {"format": FORMAT.decode(), "store_id": store_id, "max_metadata": max_metadata}
    if bucket is not None:
        marker["blobs"] = bucket.marker()
    fd = os.open(path / MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with open(fd, "w") as out:
        out.write(json.dumps(marker) + "\n")
    restrict(path)
    return path


def open_store(path: Path) -> Store:
    if not path.exists():
        raise StoreError(f"store {path} does not exist; create it with `encfs init --store {path}`")
    try:
        is_store = path.is_dir() and (path / MARKER).is_file()
    except OSError as exc:
        raise StoreError(f"cannot open store {path}: {exc.strerror}") from None
    if not is_store:
        raise StoreError(f"{path} is not an encfs store (no {MARKER}); create one with `encfs init`")
    check_data_file(path / "meta.lmdb")
    make_private(path)
    try:
        meta = MetaStore(path / "meta.lmdb", max_metadata=_max_metadata(path))
    except Exception as exc:
        raise damage_in(exc) or StoreError(f"cannot open the metadata of store {path}: {exc}") from exc
    try:
        known = meta.format() == FORMAT
        meta.env.reader_check()
    except Exception as exc:
        meta.close()
        damage = damage_in(exc)
        if damage is None:
            raise
        raise damage from exc
    if not known:
        meta.close()
        raise StoreError(f"store {path} has an unknown format")
    try:
        blobs = _blob_store(path, meta)
    except BaseException:
        meta.close()
        raise
    (path / "log").mkdir(exist_ok=True, mode=PRIVATE_FOLDER)
    return Store(path=path, meta=meta, blobs=blobs)


def _blob_store(path: Path, meta: MetaStore) -> BlobStore:
    """The blob store the marker names: the store's own `blobs/`, or a bucket."""
    recorded = _marker(path).get("blobs")
    if not recorded:
        return LocalBlobStore(path / "blobs")
    try:
        place = BucketPlace.from_marker(recorded)
        cache_dir = Path(recorded["cache_dir"]) if recorded.get("cache_dir") else path / "cache"
        size = recorded.get("cache_size")
        cache_size = DEFAULT_CACHE_SIZE if size is None else int(size)
    except (KeyError, TypeError, ValueError, StoreError) as exc:
        raise StoreError(f"store {path}: its marker names no usable bucket ({exc})") from None
    store = S3BlobStore(place, path, meta, BlobCache(cache_dir, cache_size))
    store.create()
    return store


def _marker(path: Path) -> dict:
    try:
        value = json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def blobs_description(path: Path) -> str:
    """Where a store's blobs are, for people."""
    recorded = _marker(path).get("blobs")
    return recorded["url"] if isinstance(recorded, dict) and "url" in recorded else str(path / "blobs")


def _max_metadata(path: Path) -> int:
    """The maximum recorded at init (stores made before there was one: the default)."""
    try:
        value = json.loads((path / MARKER).read_text()).get("max_metadata")
    except (OSError, ValueError, AttributeError):
        return DEFAULT_MAX_METADATA
    return value if isinstance(value, int) and value >= SMALLEST_MAX_METADATA else DEFAULT_MAX_METADATA


def _is_open(path: Path) -> bool:
    try:
        return bool(os.lstat(path).st_mode & 0o077)
    except OSError:
        return False


def make_private(path: Path) -> None:
    """A store other users can enter (made before stores were private, or changed by
    hand) is made private again, with a warning on stderr and in the log. Checked at
    every open: the store folder, its folders and blob fan-out folders, and the files
    next to them; if any is open, every folder and file is fixed."""
    blobs = path / "blobs"
    fan_out = [blobs / f"{n:02x}" for n in range(256)]
    known_files = [path / MARKER, path / "meta.lmdb" / "data.mdb", path / "meta.lmdb" / "lock.mdb",
                   path / "log" / "encfs.log"]
    places = [path, *(path / sub for sub in SUBFOLDERS), *fan_out, *known_files]
    if not any(_is_open(place) for place in places):
        return
    folders, files, failed = restrict(path)
    warning = (f"the store {path} could be read by other users: made it private again "
               f"({folders} folders to 0700, {files} files to 0600)")
    if failed:
        warning += f"; could not change {failed} (not their owner?)"
    print(f"encfs: warning: {warning}", file=sys.stderr)
    note_in_log(path / "log" / "encfs.log", warning)


def restrict(path: Path) -> tuple[int, int, int]:
    """Folders to 0700 and files to 0600 under `path` (symbolic links are left alone);
    returns how many folders and files changed and how many could not be."""
    counts = [0, 0, 0]
    for folder, _, names in os.walk(path):
        _restrict_one(folder, PRIVATE_FOLDER, counts, 0)
        for name in names:
            _restrict_one(os.path.join(folder, name), PRIVATE_FILE, counts, 1)
    return counts[0], counts[1], counts[2]


def _restrict_one(place: str, mode: int, counts: list[int], slot: int) -> None:
    try:
        info = os.lstat(place)
        if stat.S_ISLNK(info.st_mode) or not info.st_mode & 0o077:
            return
        os.chmod(place, mode if stat.S_ISDIR(info.st_mode) else stat.S_IMODE(info.st_mode) & mode)
        counts[slot] += 1
    except FileNotFoundError:
        return
    except OSError:
        counts[2] += 1
