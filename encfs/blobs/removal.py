"""Removing big files without waiting for the disk.

Unlinking a big file takes the kernel a while (here about 0.5 s per GiB: it frees the
extents and drops the cached pages). A big file that nothing can reach any more (an
obsolete blob already moved out of `blobs/`, a draft whose content was stored
already) is unlinked on a background thread, so the close or `rm` that freed it does
not wait; a small one is unlinked at once. The thread is joined at exit, so a CLI
command leaves nothing behind; a crash may, and recovery removes it.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor

log = logging.getLogger("encfs")

BACKGROUND_MIN = 16 << 20

_removing = ThreadPoolExecutor(max_workers=1, thread_name_prefix="encfs-remove")


def remove(path: str, size: int) -> None:
    """Unlink `path` (of `size` bytes), in the background if it is big."""
    if size >= BACKGROUND_MIN:
        _removing.submit(_unlink, path)
    else:
        _unlink(path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # recovery removes it at the next mount
        log.error("could not remove %s: %s", path, exc)
