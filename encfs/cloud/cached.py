"""Reading an object in a customer's bucket through the store's block cache.

The cache (blobs/cache.py) is the one a bucket store reads its own blobs through: a
second epoch over imported images costs no GET. An object's cache key is its URL and
its version is its ETag, so an object changed in the bucket is never served from what
was cached of the version before. Every chunk is fetched with the item's own checked
range GET (`S3Object.get_range`: If-Match on the ETag, the length checked)."""

from __future__ import annotations

import logging
from collections.abc import Callable

from encfs.blobs.cache import BlobCache
from encfs.cloud.integrations import CloudError
from encfs.cloud.objects import S3Object

log = logging.getLogger("encfs")


class CachedObjectReader:
    """A BlobReader over an object with a known ETag, through the block cache; a GET
    that fails is EIO with a log line naming the item and the object."""

    def __init__(self, cache: BlobCache, source: S3Object, describe: Callable[[], str]) -> None:
        self.describe = describe
        self.size = source.size
        self.cached = cache.open(f"object:{source.url}", source.size, source.version.etag or "",
                                 fetch_range=source.get_range)

    def pread(self, size: int, offset: int) -> bytes:
        try:
            return self.cached.pread(size, offset)
        except CloudError as exc:
            log.error("read of %s failed: %s", self.describe(), exc.reason)
            raise CloudError(f"the object could not be read: {exc.reason}") from None

    def descriptor_for(self, offset: int, size: int) -> int | None:
        try:
            return self.cached.descriptor_for(offset, size)
        except CloudError:
            return None  # the read that follows with bytes reports it

    def fileno(self) -> None:
        return None

    def verify(self, offset: int, length: int) -> None:
        """Every GET is checked as it is answered (ETag, length)."""

    def stored_copy_problem(self) -> None:
        return None  # an object in the customer's bucket is never a blob that content shares

    def close(self) -> None:
        self.cached.close()
