"""Damaged metadata: found before the file is mapped, and recognised when met later.

LMDB maps `data.mdb` into memory and trusts it. A file shorter than its header says
makes a read of a missing page kill the process with SIGBUS, so `check_data_file`
reads the two meta pages with ordinary reads first. Their layout (LMDB 0.9, 64-bit,
little-endian), after the 16-byte page header whose flags at offset 10 mark a meta
page:

    +0  magic u32 (0xBEEFC0DE)     +4  version u32 (1)
    +8  fixed map address u64      +16 map size u64
    +24 free-pages tree (48 bytes; its first u32 is the page size)
    +72 main tree (48 bytes)       +120 last page used u64    +128 transaction id u64

The newer meta page (the larger transaction id) is the one LMDB uses: every page up
to its last page must be in the file. Damage inside pages (flipped bytes) is not
visible from the header: `damage_in` recognises what reading such pages raises.
"""

from __future__ import annotations

import json
import os
import struct
import traceback
from pathlib import Path
from typing import BinaryIO, NamedTuple

import lmdb

from encfs.errors import DamagedMetadata, StoreError

DATA_FILE = "data.mdb"
PAGE_HEADER = 16
META_PAGE_FLAG = 0x08
MAGIC = 0xBEEFC0DE
DATA_VERSION = 1
_FLAGS = struct.Struct("<H")
_META = struct.Struct("<IIQQI92xQQ")  # magic, version, address, map size, page size, (trees), last page, txn
MIN_PAGE, MAX_PAGE = 512, 1 << 16

# What LMDB raises for pages that are not what they should be.
_LMDB_DAMAGE = (lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.InvalidError, lmdb.VersionMismatchError,
                lmdb.PanicError, lmdb.CursorFullError)
# What decoding a record or key that is not what encfs wrote raises.
_DECODING = (ValueError, KeyError, TypeError, IndexError, struct.error, json.JSONDecodeError)
_META_PACKAGE = str(Path(__file__).parent) + os.sep
_WRITING = {"u64", "_text_key", "put_node", "put_collection", "put_link", "link", "add_error"}


class MetaPage(NamedTuple):
    page_size: int
    map_size: int
    last_page: int
    txn_id: int


def check_data_file(meta_dir: Path) -> None:
    """Refuse (DamagedMetadata) a data file that LMDB would map unsafely: missing,
    shorter than its header says, or with meta pages that are not LMDB's."""
    data = meta_dir / DATA_FILE
    try:
        with open(data, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            first = _meta_page(file, 0, "first")
            second = _meta_page(file, first.page_size, "second")
    except FileNotFoundError:
        raise DamagedMetadata(f"{data} is missing") from None
    except IsADirectoryError:
        raise DamagedMetadata(f"{data} is not a file") from None
    except OSError as exc:
        raise StoreError(f"cannot read {data}: {exc.strerror}") from None
    needed = _needed(first, second)
    if size < needed:
        raise DamagedMetadata(f"{data} is {size} bytes long but its header needs {needed}: it was cut short")


def used_size(meta_dir: Path) -> int:
    """The bytes of the data file its newer header says are in use (the file may be
    longer: it is preallocated ahead of LMDB's writes)."""
    with open(meta_dir / DATA_FILE, "rb") as file:
        first = _meta_page(file, 0, "first")
        return _needed(first, _meta_page(file, first.page_size, "second"))


def _needed(first: MetaPage, second: MetaPage) -> int:
    newer = max(first, second, key=lambda meta: meta.txn_id)
    return (newer.last_page + 1) * newer.page_size


def _meta_page(file: BinaryIO, offset: int, which: str) -> MetaPage:
    file.seek(offset)
    raw = file.read(PAGE_HEADER + _META.size)
    if len(raw) < PAGE_HEADER + _META.size:
        size = os.fstat(file.fileno()).st_size
        raise DamagedMetadata(f"{file.name} is {size} bytes long, too short for its header")
    (flags,) = _FLAGS.unpack_from(raw, 10)
    magic, version, _address, map_size, page_size, last_page, txn_id = _META.unpack_from(raw, PAGE_HEADER)
    if not flags & META_PAGE_FLAG or magic != MAGIC or version != DATA_VERSION:
        raise DamagedMetadata(f"the {which} header page of {file.name} is not an LMDB header")
    if not MIN_PAGE <= page_size <= MAX_PAGE or page_size & (page_size - 1):
        raise DamagedMetadata(f"the {which} header page of {file.name} gives a page size of {page_size}")
    return MetaPage(page_size, map_size, last_page, txn_id)


def damage_in(exc: BaseException) -> DamagedMetadata | None:
    """The damage an exception shows, or None if it shows none (a fault of encfs).

    LMDB's own complaints about pages are damage. So is a decoding error raised while
    the metadata layer turns stored bytes into records (nothing else runs there):
    what it read is not what encfs wrote. The same error raised elsewhere is a bug."""
    if isinstance(exc, DamagedMetadata):
        return exc
    if isinstance(exc, _LMDB_DAMAGE):
        return DamagedMetadata(f"LMDB: {exc}")
    if isinstance(exc, _DECODING) and not isinstance(exc, UnicodeEncodeError) and _raised_reading(exc):
        return DamagedMetadata(f"a stored record cannot be read ({type(exc).__name__}: {exc})")
    return None


def _raised_reading(exc: BaseException) -> bool:
    """Whether the innermost encfs frame of the traceback is in this package and is
    not one that turns values into bytes (a value out of range there is input)."""
    package = str(Path(__file__).parents[1])
    encfs_frames = [frame for frame in traceback.extract_tb(exc.__traceback__)
                    if frame.filename.startswith(package)]
    if not encfs_frames:
        return False
    innermost = encfs_frames[-1]
    return innermost.filename.startswith(_META_PACKAGE) and innermost.name not in _WRITING \
        and not innermost.name.startswith("encode")
