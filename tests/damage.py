"""Ways to damage a store's metadata file, as a disk or a careless hand would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from encfs.meta.check import used_size

DAMAGED = "the store's metadata is damaged: run encfs fsck"
PAGE = 4096


def data_file(store: Path) -> Path:
    return store / "meta.lmdb" / "data.mdb"


def cut_short(store: Path, size: int) -> None:
    """Truncate data.mdb to `size` bytes (negative: that many bytes less than it uses)."""
    os.truncate(data_file(store), size if size >= 0 else used_size(store.joinpath("meta.lmdb")) + size)


def break_record(store: Path, needle: bytes) -> int:
    """Turn the first byte of every stored copy of the record holding `needle` (a
    JSON record: it starts at the `{` before it) into garbage; returns how many."""
    path = data_file(store)
    data = bytearray(path.read_bytes())
    broken, start = 0, data.find(needle)
    while start != -1:
        data[data.rindex(b'{"id"', 0, start)] = ord("~")
        broken += 1
        start = data.find(needle, start + 1)
    assert broken, f"no record holds {needle!r}"
    path.write_bytes(bytes(data))
    return broken


def break_page_headers(store: Path) -> None:
    """Give every page after the two header pages flags that no LMDB page has."""
    path = data_file(store)
    data = bytearray(path.read_bytes())
    for offset in range(2 * PAGE, len(data), PAGE):
        data[offset + 10:offset + 12] = b"\xff\x7f"
    path.write_bytes(bytes(data))


def encfs(*args: str | bytes | os.PathLike[str], timeout: float = 60,
          **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m encfs` as a real process (so signals and tracebacks show as a
    user sees them); output stays bytes."""
    argv = [sys.executable, "-m", "encfs", *(a if isinstance(a, bytes) else str(a) for a in args)]
    return subprocess.run(argv, capture_output=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]
