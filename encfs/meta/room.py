"""How big the metadata may get: the LMDB map's size, the disk space held for it,
and the reserve that only deletes may use.

The map is address space, not disk: it starts modest (the data file and a quarter
more, at least MIN_MAP) and doubles when the data comes near it, up to the store's
maximum. The
data file is preallocated ahead of LMDB's writes, so that a reserve of disk space is
always there inside it: a change that adds records is refused (ENOSPC) once less
than the reserve is left, in the map or on the disk, and a delete may use the reserve.
"""

from __future__ import annotations

MIB = 1 << 20
GIB = 1 << 30
MIN_MAP = 256 * MIB
DEFAULT_MAX_METADATA = 64 * GIB
SMALLEST_MAX_METADATA = 1 * MIB
MIN_RESERVE, MAX_RESERVE = 1 * MIB, 64 * MIB


def round_up(size: int, unit: int = MIB) -> int:
    return -(-size // unit) * unit


def reserve_for(used: int, max_metadata: int) -> int:
    """Room kept for deletes: an eighth of what is used, between 1 and 64 MiB, and
    never more than a quarter of the maximum (a tiny store keeps a tiny reserve)."""
    return min(max_metadata // 4, max(MIN_RESERVE, min(MAX_RESERVE, used // 8)))


def first_map_size(data_size: int, max_metadata: int) -> int:
    """The map a process opens the store with: the data file and a quarter more (room
    for the reserve twice over, so that a first write need not grow it), at least
    MIN_MAP, at most the maximum (LMDB raises it to what the data uses, if more)."""
    return min(max_metadata, max(MIN_MAP, round_up(data_size + data_size // 4 + 2 * MIN_RESERVE)))


def grown_map_size(map_size: int, needed: int, max_metadata: int) -> int:
    """The next map size when `needed` bytes do not fit: doubled, up to the maximum."""
    return min(max_metadata, max(2 * map_size, round_up(needed)))


def parse_size(text: str) -> int:
    """'512MiB', '2G', '1048576' -> bytes (K, M, G, T are powers of 1024)."""
    cleaned = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 << 10, "M": MIB, "G": GIB, "T": 1 << 40}
    factor = units.get(cleaned[-1:], 1)
    number = cleaned[:-1] if cleaned[-1:] in units else cleaned
    try:
        value = float(number)
    except ValueError:
        raise ValueError(f"not a size: {text!r} (say 512MiB, 4GiB or a number of bytes)") from None
    return int(value * factor)


def human(size: int) -> str:
    for unit, factor in (("GiB", GIB), ("MiB", MIB), ("KiB", 1 << 10)):
        if size >= factor:
            return f"{size / factor:.1f} {unit}"
    return f"{size} B"
