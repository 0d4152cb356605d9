"""Reading bucket objects by range, never handing out bytes of a version other than
the one an item refers to.

The pieces are small on purpose, so a cache can sit between them:

- `RangeSource` is the whole interface a reader needs: `get_range(offset, size)`
  returns exactly those bytes of one version of one object, or raises.
- `S3Object` is the source that asks the bucket: every GET carries the ETag it
  expects (`If-Match`) and its answer is checked (ETag, total length, byte count).
- `ObjectReader` is the mount's `BlobReader` over any `RangeSource`, with a read-ahead
  window for sequential readers; `RangedFile` is a file object over one for the
  media parsers (probing reads only the headers they ask for).

A local block cache plugs in as a `RangeSource` that wraps `S3Object` (keyed by
URL and ETag, which name one version's bytes for good).
"""

from __future__ import annotations

import contextlib
import io
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from encfs.cloud.integrations import (
    CloudError,
    Integration,
    ObjectUrl,
    Unreachable,
    client_for,
    explain,
    note_unreachable,
    refuse_if_unreachable,
)

log = logging.getLogger("encfs")
_read_ahead_pool = ThreadPoolExecutor(8, thread_name_prefix="encfs-read-ahead")
FIRST_WINDOW = 1 << 20
READ_AHEAD = 8 << 20  # the largest window of a sequential reader
NEAR = 2 << 20  # a read this close to where the last ended is still sequential
WINDOWS_KEPT = 3
PROBE_BLOCK = 64 << 10


class RangeSource(Protocol):
    size: int

    def get_range(self, offset: int, size: int) -> bytes:
        """Exactly the bytes [offset, offset + size) (fewer only at the end), of the
        version this source stands for; raises CloudError otherwise."""


@dataclass
class Version:
    """What identifies the bytes of an object: its ETag (None: not known yet, pinned
    by the first answer) and its size (None: not known yet)."""

    etag: str | None
    size: int | None


def _etag(raw: str | None) -> str | None:
    return raw.strip('"') if raw else raw


def _total_length(content_range: str | None) -> int | None:
    if not content_range or "/" not in content_range:
        return None
    total = content_range.rsplit("/", 1)[1]
    return int(total) if total.isdigit() else None


class ObjectChanged(CloudError):
    """The object is no longer the version the item refers to."""


class S3Object:
    """One version of one object, read by ranged GETs checked on every answer."""

    def __init__(self, integration: Integration, url: ObjectUrl, version: Version,
                 on_pinned: Callable[[str], None] | None = None) -> None:
        self.integration = integration
        self.url = url
        self.version = version
        self.on_pinned = on_pinned  # told the ETag when a version first learns it
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self.version.size or 0

    def head(self) -> dict[str, Any]:
        """HEAD the object; pins its version if not known yet. {} if it is missing."""
        import botocore.exceptions

        refuse_if_unreachable(self.integration)
        try:
            answer = client_for(self.integration).head_object(Bucket=self.url.bucket, Key=self.url.key)
        except botocore.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                return {}
            raise explain(exc, self.integration, str(self.url)) from exc
        except Exception as exc:
            raise self._explained(exc) from exc
        self._check(_etag(answer.get("ETag")), answer.get("ContentLength"))
        return answer

    def get_range(self, offset: int, size: int) -> bytes:
        if size <= 0 or (self.version.size is not None and offset >= self.version.size):
            return b""
        arguments: dict[str, Any] = {"Bucket": self.url.bucket, "Key": self.url.key,
                                     "Range": f"bytes={offset}-{offset + size - 1}"}
        if self.version.etag:
            arguments["IfMatch"] = f'"{self.version.etag}"'
        refuse_if_unreachable(self.integration)
        try:
            answer = client_for(self.integration).get_object(**arguments)
            data = answer["Body"].read()
        except ObjectChanged:
            raise
        except Exception as exc:
            error = self._explained(exc)
            if "changed in the bucket" in error.reason:
                raise ObjectChanged(error.reason) from exc
            if _status(exc) == 416 and offset == 0:  # an empty object has no first byte
                self.head()
                return b""
            raise error from exc
        self._check(_etag(answer.get("ETag")), _total_length(answer.get("ContentRange")))
        expected = size if self.version.size is None else min(size, self.version.size - offset)
        if len(data) != expected:
            raise ObjectChanged(f"{self.url}: the bucket returned {len(data)} bytes where {expected} "
                                "were asked")
        return data

    def _explained(self, exc: Exception) -> CloudError:
        error = explain(exc, self.integration, str(self.url))
        if isinstance(error, Unreachable):
            note_unreachable(self.integration)
        return error

    def _check(self, etag: str | None, total: int | None) -> None:
        """Pin the version at the first answer; refuse any answer of another one."""
        with self._lock:
            if self.version.etag and etag and etag != self.version.etag:
                raise ObjectChanged(f"{self.url}: the object changed in the bucket (ETag {etag}, "
                                    f"expected {self.version.etag})")
            if self.version.size is not None and total is not None and total != self.version.size:
                raise ObjectChanged(f"{self.url}: the object changed in the bucket (size {total}, "
                                    f"expected {self.version.size})")
            pinned = self.version.etag is None and etag is not None
            self.version.etag = self.version.etag or etag
            if self.version.size is None:
                self.version.size = total
        if pinned and self.on_pinned is not None and etag is not None:
            self.on_pinned(etag)


def _status(exc: Exception) -> int | None:
    response = getattr(exc, "response", None)
    return response.get("ResponseMetadata", {}).get("HTTPStatusCode") if response else None


class ObjectReader:
    """A BlobReader over a RangeSource: what an open file of an item imported by
    reference reads. A failed or refused GET is EIO with a log line naming the item
    and the object; nothing of another version is ever returned.

    Reads are served from a window of the object. A reader that goes on where it
    stopped is sequential: its window doubles (1 to 8 MiB) and the next window is
    fetched in the background while it reads this one; a random reader fetches
    1 MiB around what it asks."""

    def __init__(self, source: RangeSource, size: int, describe: Any) -> None:
        self.source = source
        self.size = size
        self.describe = describe
        self._windows: list[tuple[int, bytes]] = []  # the latest few, newest last
        self._next: tuple[int, Future[bytes]] | None = None
        self._span = FIRST_WINDOW
        self._expected = 0  # where a sequential reader reads next
        self._lock = threading.Lock()

    def pread(self, size: int, offset: int) -> bytes:
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
        with self._lock:
            # the kernel's parallel requests arrive a little out of order: near is sequential
            sequential = abs(offset - self._expected) <= NEAR
            self._expected = max(self._expected, offset + size) if sequential else offset + size
            found = self._held(offset, size)
            if found is None:
                self._span = min(self._span * 2, READ_AHEAD) if sequential else FIRST_WINDOW
                self._take_read_ahead()
                found = self._held(offset, size) or self._remember(
                    offset, self._fetch(offset, max(size, self._span)))
            start, data = found
            if sequential and self._next is None:
                self._read_ahead(max(s + len(d) for s, d in self._windows))
            return data[offset - start : offset - start + size]

    def _held(self, offset: int, size: int) -> tuple[int, bytes] | None:
        for start, data in reversed(self._windows):
            if start <= offset and offset + size <= start + len(data):
                return start, data
        return None

    def _remember(self, offset: int, data: bytes) -> tuple[int, bytes]:
        self._windows = [*self._windows[-(WINDOWS_KEPT - 1):], (offset, data)]
        return offset, data

    def _fetch(self, offset: int, size: int) -> bytes:
        try:
            return self.source.get_range(offset, size)
        except CloudError as exc:
            log.error("read of %s failed: %s", self.describe(), exc.reason)
            raise CloudError(f"the object could not be read: {exc.reason}") from None

    def _take_read_ahead(self) -> None:
        """Keep the window fetched ahead (a failure there is met again, and reported,
        by the read's own GET)."""
        ahead, self._next = self._next, None
        if ahead is not None:
            with contextlib.suppress(Exception):
                self._remember(ahead[0], ahead[1].result())

    def _read_ahead(self, offset: int) -> None:
        if offset < self.size:
            self._next = (offset, _read_ahead_pool.submit(self.source.get_range, offset, self._span))

    def fileno(self) -> None:
        return None

    def descriptor_for(self, offset: int, size: int) -> None:
        return None  # bytes fetched into memory: answered with pread's

    def verify(self, offset: int, length: int) -> None:
        """Every GET is checked as it is answered (ETag, length)."""

    def stored_copy_problem(self) -> None:
        return None  # an object in the customer's bucket is never a blob that content shares

    def close(self) -> None:
        self._windows = []
        self._next = None


class RangedFile(io.RawIOBase):
    """A read-only file object over a RangeSource for the media parsers: it reads the
    blocks they ask for (a header, an index at the end of a video), never the whole object."""

    def __init__(self, source: RangeSource, size: int) -> None:
        super().__init__()
        self.source = source
        self.length = size
        self.position = 0
        self.blocks: dict[int, bytes] = {}
        self.fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.length}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        wanted = min(len(buffer), self.length - self.position)
        if wanted <= 0:
            return 0
        data = self._read(self.position, wanted)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)

    def _read(self, offset: int, size: int) -> bytes:
        first, last = offset // PROBE_BLOCK, (offset + size - 1) // PROBE_BLOCK
        missing = [n for n in range(first, last + 1) if n not in self.blocks]
        if missing:
            start = missing[0] * PROBE_BLOCK
            data = self.source.get_range(start, (missing[-1] + 1) * PROBE_BLOCK - start)
            self.fetched += len(data)
            for n in range(missing[0], missing[-1] + 1):
                self.blocks[n] = data[(n - missing[0]) * PROBE_BLOCK : (n - missing[0] + 1) * PROBE_BLOCK]
        joined = b"".join(self.blocks[n] for n in range(first, last + 1))
        skip = offset - first * PROBE_BLOCK
        return joined[skip : skip + size]
