"""Blobs in an S3-compatible bucket (boto3), read through a local cache (cache.py).

Objects, under the store's prefix:

    PREFIX/blobs/<sha256>    content stored whole inside a commit (small files, manifests)
    PREFIX/uploads/<uuid>    content uploaded while it was written (multipart), or before
                             its commit; its sha256 is not known when the upload starts
    PREFIX/quarantine/<sha256>.<random>[.txt]
                             a copy of a damaged object, set aside by `encfs fsck --repair`
                             (and a note of where it was and why); never collected

Where each blob's bytes are, and the object's ETag, is the blob's *place* in the
metadata (`places`, meta/store.py): every GET names that ETag (If-Match) and checks
the length, and the bytes are checked against the blob's block checksums as they
fill the cache, so an object changed behind the store's back is EIO, never wrong
bytes. Credentials come from the standard AWS chain only (environment, profile,
instance role); the store records the bucket, prefix, endpoint, profile and region.

Deleting: when a blob's last reference goes, the deleter (a background thread)
deletes its object inside a metadata write transaction that sees it still unused, so
it never races a commit that counts the same content again. Objects no record names
(a crash between upload and commit, a failed delete) are left to `collect`, which
deletes only those older than a grace period: a concurrent mount that has just
uploaded content and is about to commit it never loses it (and a commit checks that
its upload is still there, inside its transaction, before it names it).
"""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from encfs.blobs.cache import BlobCache
from encfs.errors import EncfsError, StoreError
from encfs.integrity import Sums, block_sum

if TYPE_CHECKING:
    from encfs.meta.store import MetaStore, ReadTxn

log = logging.getLogger("encfs")

PART = 16 << 20
QUARANTINE = "quarantine"  # damaged objects set aside by `encfs fsck --repair`, never collected
PARTS_IN_FLIGHT = 8  # per upload, while the file is being written
UPLOAD_WORKERS = 10
GRACE_SECONDS = 3600.0
LOG_EVERY_SECONDS = 10.0
DELETE_BATCH = 1000
CLOSE_WAIT_SECONDS = 10.0
AWAY_SECONDS = 0.5  # short: reads work again as soon as the server is back


class BucketError(EncfsError):
    """The bucket did not answer, or answered with something else than what was stored."""

    errno = errno.EIO


@dataclass(frozen=True)
class BucketPlace:
    """Where a store keeps its blobs: s3://BUCKET/PREFIX, and how to reach it."""

    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None

    @classmethod
    def parse(cls, url: str, endpoint_url: str | None = None, profile: str | None = None,
              region: str | None = None) -> BucketPlace:
        if not url.startswith("s3://"):
            raise StoreError(f"{url!r} is not a bucket URL: give s3://BUCKET or s3://BUCKET/PREFIX")
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise StoreError(f"{url!r} names no bucket: give s3://BUCKET or s3://BUCKET/PREFIX")
        return cls(bucket, prefix.strip("/"), endpoint_url or None, profile or None, region or None)

    @classmethod
    def from_marker(cls, recorded: dict[str, Any]) -> BucketPlace:
        return cls.parse(recorded["url"], recorded.get("endpoint_url"), recorded.get("profile"),
                         recorded.get("region"))

    def marker(self) -> dict[str, Any]:
        """What the store marker records (never a credential)."""
        return {"url": self.url, "endpoint_url": self.endpoint_url, "profile": self.profile,
                "region": self.region}

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(profile_name=self.profile, region_name=self.region)
        config = Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3, read_timeout=30,
                        max_pool_connections=32, request_checksum_calculation="when_required",
                        response_checksum_validation="when_required")
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)


def bucket_problem(exc: Exception) -> str:
    """A sentence for why a bucket call failed, naming the cause."""
    import botocore.exceptions as bex

    if isinstance(exc, bex.ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), error.get("Message", "")
        known = {
            "NoSuchBucket": "the bucket does not exist", "404": "not found",
            "InvalidAccessKeyId": "the access key is not known to the server (wrong credentials)",
            "SignatureDoesNotMatch": "the secret key is wrong (wrong credentials)",
            "AccessDenied": "the credentials lack permission",
            "403": "access denied (credentials or permission)",
            "PreconditionFailed": "the object changed (its ETag differs)",
            "NoSuchKey": "the object is missing",
        }
        return known.get(code, f"{code}: {message}" if message else code)
    if isinstance(exc, bex.NoCredentialsError):
        return "no AWS credentials found (environment, profile or instance role)"
    if isinstance(exc, bex.ProfileNotFound):
        return str(exc)
    if isinstance(exc, bex.EndpointConnectionError | bex.ConnectionClosedError | bex.ReadTimeoutError
                  | bex.ConnectTimeoutError):
        return f"the bucket's server does not answer ({exc})"
    return str(exc) or type(exc).__name__


def _changed_or_gone(exc: Exception) -> str | None:
    """What a GET or HEAD (If-Match the stored ETag) refused says of the object: that
    it changed or is gone; None if the refusal says nothing about it (unreachable)."""
    import botocore.exceptions as bex

    if not isinstance(exc, bex.ClientError):
        return None
    code = str(exc.response.get("Error", {}).get("Code", ""))
    if code in ("PreconditionFailed", "412"):
        return "its ETag is no longer the one stored"
    if code in ("NoSuchKey", "NotFound", "404"):
        return "it is missing"
    return None


def check_bucket(place: BucketPlace) -> None:
    """At init: the bucket exists and the credentials may write, read and delete in it."""
    try:
        client = place.client()
        probe = place.key(f"encfs-check-{uuid.uuid4().hex}")
        _head_bucket(client, place)
        client.put_object(Bucket=place.bucket, Key=probe, Body=b"encfs")
        client.get_object(Bucket=place.bucket, Key=probe)["Body"].read()
        client.delete_object(Bucket=place.bucket, Key=probe)
    except StoreError:
        raise
    except Exception as exc:
        raise StoreError(f"cannot use {place.url} for blobs: {bucket_problem(exc)}") from None


def _head_bucket(client: Any, place: BucketPlace) -> None:
    import botocore.exceptions as bex

    try:
        client.head_bucket(Bucket=place.bucket)
    except bex.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code"))
        if code in ("404", "NoSuchBucket"):
            raise StoreError(f"cannot use {place.url} for blobs: the bucket {place.bucket} "
                             "does not exist") from None
        if code == "403":  # a HEAD answer has no body: a listing says which refusal it is
            client.list_objects_v2(Bucket=place.bucket, MaxKeys=1)
        raise


# ----------------------------------------------------------------- places


@dataclass(frozen=True)
class Place:
    """Where one blob's bytes are: an object key and its ETag."""

    key: str
    etag: str

    def pack(self) -> bytes:
        return f"{self.key}\n{self.etag}".encode()

    @classmethod
    def unpack(cls, raw: bytes) -> Place:
        key, _, etag = raw.decode().partition("\n")
        return cls(key, etag)


# ----------------------------------------------------------------- uploads


class StreamUpload:
    """The content of one draft going up while it is written: each full part of the
    spool file written in order is uploaded in the background (multipart); `finish`
    uploads the rest and completes it. Content rewritten out of order (or a failed
    part) is uploaded whole at `finish` instead."""

    def __init__(self, store: S3BlobStore) -> None:
        self.store = store
        self.key = store.place_of.key(f"uploads/{uuid.uuid4().hex}")
        self.completed: Place | None = None
        self._upload_id: str | None = None
        self._upload_key = self.key  # the key the multipart upload was begun for
        self._parts: dict[int, Future] = {}
        self._covered = 0
        self._fd = -1
        self._broken = False
        self._lock = threading.Lock()

    def feed(self, fd: int, end: int) -> None:
        """Bytes [0, end) of the spool file `fd` are written, in order, for good."""
        if self._broken:
            return
        while end - self._covered >= PART:
            if sum(not p.done() for p in self._parts.values()) >= PARTS_IN_FLIGHT:
                return  # the writer is faster than the bucket: the next feed sends more
            if self._fd < 0:
                self._fd = os.dup(fd)
            self._send(self._covered, PART)

    def _send(self, offset: int, length: int) -> None:
        number = offset // PART + 1
        self._covered = offset + length
        self._parts[number] = self.store.uploading.submit(self._put_part, self._fd, number, offset, length)

    def _ensure_started(self) -> str:
        with self._lock:
            if self._upload_id is None:
                client = self.store.client
                self._upload_key = self.key
                self._upload_id = client.create_multipart_upload(Bucket=self.store.place_of.bucket,
                                                                 Key=self.key)["UploadId"]
            return self._upload_id

    def _put_part(self, fd: int, number: int, offset: int, length: int) -> dict[str, Any]:
        upload_id = self._ensure_started()
        body = os.pread(fd, length, offset)
        if len(body) != length:
            raise OSError(errno.EIO, "the draft ended before its part")
        answer = self.store.client.upload_part(Bucket=self.store.place_of.bucket, Key=self.key,
                                               UploadId=upload_id, PartNumber=number, Body=body)
        return {"PartNumber": number, "ETag": answer["ETag"]}

    def invalidate(self) -> None:
        """The content was rewritten out of order: what went up is of no use."""
        if not self._broken:
            self._broken = True
            self._abandon()

    def finish(self, fd: int, size: int, sha: str) -> Place:
        """Upload what is left and complete the object; returns where it is. A bucket
        that does not answer is BucketError (logged)."""
        if self.completed is not None:
            return self.completed
        try:
            if not self._broken and self._parts:
                try:
                    self.completed = self._complete(size)
                    return self.completed
                except Exception as exc:
                    log.info("upload of %s while written failed (%s): uploading it whole", self.key,
                             bucket_problem(exc))
                    self._broken = True
                    self._abandon()
                    self.key = self.store.place_of.key(f"uploads/{uuid.uuid4().hex}")
            self.completed = self.store.upload_file(fd, size, self.key)
            return self.completed
        except Exception as exc:
            raise self.store.unreachable("store", self.key, sha, exc) from None

    def _complete(self, size: int) -> Place:
        while size > self._covered:
            self._send(self._covered, min(PART, size - self._covered))
        parts = [self._parts[n].result() for n in sorted(self._parts)]
        store = self.store
        answer = store.client.complete_multipart_upload(
            Bucket=store.place_of.bucket, Key=self.key, UploadId=self._upload_id,
            MultipartUpload={"Parts": parts})
        self._upload_id = None
        self._release_fd()
        return Place(self.key, answer["ETag"])

    def _abandon(self) -> None:
        """Abort the multipart upload once its parts in flight are done, in the
        background (retried there while the bucket is away)."""
        if not self._parts and self._fd < 0 and self._upload_id is None:
            return  # nothing went up (a small file, say): nothing to abort
        parts, self._parts = list(self._parts.values()), {}
        fd, self._fd = self._fd, -1
        for part in parts:
            part.cancel()

        def settle() -> None:
            for part in parts:
                if not part.cancelled():
                    part.exception()
            if fd >= 0:
                os.close(fd)
            with self._lock:  # the upload's own key: `finish` may have chosen a new one since
                upload_id, self._upload_id = self._upload_id, None
                key = self._upload_key
            if upload_id is not None:
                self.store.forget_upload(key, upload_id)

        threading.Thread(target=settle, name="encfs-s3-abandon", daemon=True).start()

    def abort(self) -> None:
        """The draft is dropped (refused, or its content was stored already): nothing
        of it stays in the bucket."""
        self._broken = True
        self._abandon()
        if self.completed is not None:
            self.store.delete_upload(self.completed)
            self.completed = None

    def _release_fd(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


# ----------------------------------------------------------------- reading


class S3BlobReader:
    """A blob read by range through the cache. The blob's place, size and checksums are
    looked up at the first read."""

    def __init__(self, store: S3BlobStore, sha: str) -> None:
        self.store, self.sha = store, sha
        self._object: Any = None
        self._place: Place | None = None
        self._sums: Sums | None = None
        self._lock = threading.Lock()

    def _opened(self) -> Any:
        with self._lock:
            if self._object is None:
                place, size, sums = self.store.lookup(self.sha)
                self._place, self._sums = place, sums
                self._object = self.store.cache.open(f"blob:{self.sha}", size, self.sha, self._fetch,
                                                     self._check, self._stream)
            return self._object

    def _fetch(self, offset: int, length: int) -> bytes:
        assert self._place is not None
        return self.store.get_range(self._place, self.sha, self._object.size, offset, length)

    def _stream(self, offset: int, length: int) -> Any:
        assert self._place is not None
        return self.store.open_range(self._place, self.sha, self._object.size, offset, length)

    def _check(self, offset: int, data: bytes) -> None:
        """Each whole block of a fetched range against the blob's checksums."""
        sums = self._sums
        if sums is None:
            return
        assert offset % sums.block == 0
        view = memoryview(data)  # slices of it are not copies
        for start in range(0, len(data), sums.block):
            index = (offset + start) // sums.block
            if index >= len(sums.values) or block_sum(view[start:start + sums.block]) != sums.values[index]:
                assert self._place is not None
                raise self.store.changed(self._place, self.sha, f"block {index} differs from its checksum")

    def pread(self, size: int, offset: int) -> bytes:
        return self._opened().pread(size, offset)

    def descriptor_for(self, offset: int, size: int) -> int | None:
        return self._opened().descriptor_for(offset, size)

    def fileno(self) -> None:
        return None

    def verify(self, offset: int, length: int) -> None:
        """Fetching checks (a range is checked as it is fetched)."""

    def stored_copy_problem(self) -> str | None:
        """The object's ETag and length against the ones stored (one HEAD): an object
        changed or removed behind the store's back is not shared by new content."""
        place, size, _ = self.store.lookup(self.sha)
        return self.store.object_problem(place, self.sha, size)

    def close(self) -> None:
        with self._lock:
            if self._object is not None:
                self._object.close()
                self._object = None


# ----------------------------------------------------------------- the store


class S3BlobStore:
    checks_reads = True

    def __init__(self, place: BucketPlace, store_path: Path, meta: MetaStore, cache: BlobCache) -> None:
        self.place_of = place
        self.root = store_path
        self.spool = store_path / "spool"
        self.meta = meta
        self.cache = cache
        self._client: Any = None
        self.uploading = ThreadPoolExecutor(max_workers=UPLOAD_WORKERS, thread_name_prefix="encfs-upload")
        self._handed: OrderedDict[str, set[str]] = OrderedDict()  # sha -> keys this process stored
        self._deletions: queue.Queue[str] = queue.Queue()
        self._aborts: queue.Queue[tuple[str, str]] = queue.Queue()
        self._logged: dict[str, float] = {}
        self._away_until = 0.0  # reads fail at once until then: the server did not answer
        self._lock = threading.Lock()
        threading.Thread(target=self._delete_loop, name="encfs-s3-delete", daemon=True).start()
        threading.Thread(target=self._abort_loop, name="encfs-s3-abort", daemon=True).start()

    @property
    def client(self) -> Any:
        """The boto3 client, made at first use (a command that reads no blob, `encfs ls`
        say, does not pay for importing boto3)."""
        with self._lock:
            if self._client is None:
                self._client = self.place_of.client()
            return self._client

    def create(self) -> None:
        self.spool.mkdir(parents=True, exist_ok=True, mode=0o700)

    def spool_dir(self) -> Path:
        return self.spool

    def new_upload(self) -> StreamUpload:
        return StreamUpload(self)

    # ------------------------------------------------------------- storing

    def write(self, sha: str, data: bytes | bytearray, durable: bool) -> bytes:
        """Small content, inside its commit's transaction: in the bucket when this returns."""
        key = self.place_of.key(f"blobs/{sha}")
        try:
            answer = self.client.put_object(Bucket=self.place_of.bucket, Key=key, Body=bytes(data))
        except Exception as exc:
            raise self.unreachable("store", key, sha, exc) from None
        self._hand(sha, key)
        return Place(key, answer["ETag"]).pack()

    def adopt(self, sha: str, spool_path: Path, durable: bool, upload: StreamUpload | None = None) -> bytes:
        """The draft's content becomes blob `sha`: named by its upload if it went up
        before the transaction (checked to be still there), else uploaded now."""
        upload = upload or StreamUpload(self)
        if upload.completed is not None:  # the commit's failure from here on deletes it (delete)
            self._hand(sha, upload.completed.key)
        if upload.completed is not None and not self._still_there(upload.completed):
            upload.completed = None  # collected meanwhile (a very late commit): up again
        fd = os.open(spool_path, os.O_RDONLY)
        try:
            place = upload.finish(fd, os.fstat(fd).st_size, sha)
        finally:
            os.close(fd)
        self._hand(sha, place.key)
        spool_path.unlink(missing_ok=True)
        return place.pack()

    def upload_file(self, fd: int, size: int, key: str) -> Place:
        """A whole spool file to `key`: one PUT if small, else parts in parallel."""
        bucket = self.place_of.bucket
        if size < 2 * PART:
            answer = self.client.put_object(Bucket=bucket, Key=key, Body=os.pread(fd, size, 0))
            return Place(key, answer["ETag"])
        upload_id = self.client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]

        def part(number: int) -> dict[str, Any]:
            offset = (number - 1) * PART
            length = PART if number < count else size - offset
            body = os.pread(fd, length, offset)
            answer = self.client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                             Body=body)
            return {"PartNumber": number, "ETag": answer["ETag"]}

        count = max(1, size // PART)  # the last part takes the rest (at least PART)
        try:
            parts = list(self.uploading.map(part, range(1, count + 1)))
            answer = self.client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id,
                                                           MultipartUpload={"Parts": parts})
        except BaseException:
            self.forget_upload(key, upload_id)
            raise
        return Place(key, answer["ETag"])

    def object_problem(self, place: Place, sha: str, size: int) -> str | None:
        """What is wrong with the blob's object (HEAD, If-Match its ETag), or None;
        BucketError if the bucket does not answer."""
        args: dict[str, Any] = {"Bucket": self.place_of.bucket, "Key": place.key}
        if place.etag:
            args["IfMatch"] = place.etag
        try:
            head = self.client.head_object(**args)
        except Exception as exc:
            problem = _changed_or_gone(exc)
            if problem is not None:
                return problem
            raise self.unreachable("check", place.key, sha, exc) from None
        if head.get("ContentLength") != size:
            return f"it has {head.get('ContentLength')} bytes instead of {size}"
        return None

    def _still_there(self, place: Place) -> bool:
        """Inside the commit's transaction: the upload was not collected meanwhile."""
        try:
            head = self.client.head_object(Bucket=self.place_of.bucket, Key=place.key, IfMatch=place.etag)
            return bool(head)
        except Exception:
            return False

    def _hand(self, sha: str, key: str) -> None:
        with self._lock:
            self._handed.setdefault(sha, set()).add(key)
            self._handed.move_to_end(sha)
            while len(self._handed) > 10_000:
                self._handed.popitem(last=False)

    def sync(self, sha: str) -> None:
        """Content is in the bucket once stored: nothing more to make durable."""

    def forget_upload(self, key: str, upload_id: str) -> None:
        self._aborts.put((key, upload_id))

    def delete_upload(self, place: Place) -> None:
        """An upload that was not used (its content was stored already): delete it."""
        try:
            self.client.delete_object(Bucket=self.place_of.bucket, Key=place.key)
        except Exception as exc:
            log.info("could not delete unused upload %s (%s): collected later", place.key,
                     bucket_problem(exc))

    # ------------------------------------------------------------- reading

    def open_reader(self, sha: str) -> S3BlobReader:
        return S3BlobReader(self, sha)

    def lookup(self, sha: str) -> tuple[Place, int, Sums | None]:
        with self.meta.read() as r:
            counted, raw_place, raw_sums = r.blob(sha), r.place(sha), r.sums(sha)
        if counted is None:
            raise BucketError(f"blob {sha} is no longer stored")
        place = Place.unpack(raw_place) if raw_place else Place(self.place_of.key(f"blobs/{sha}"), "")
        return place, counted[1], None if raw_sums is None else Sums.unpack(raw_sums)

    def get_range(self, place: Place, sha: str, size: int, offset: int, length: int) -> bytes:
        """Bytes [offset, offset + length) of the blob's object, checked to be of the
        object stored (ETag) and of its length."""
        body = self.open_range(place, sha, size, offset, length)
        try:
            data = body.read()
        except Exception as exc:
            raise self.unreachable("read", place.key, sha, exc) from None
        finally:
            body.close()
        if len(data) != length:
            raise self.changed(place, sha, f"a range of {length} bytes came back with {len(data)}")
        return data

    def open_range(self, place: Place, sha: str, size: int, offset: int, length: int) -> Any:
        """A stream of bytes [offset, offset + length) of the blob's object (GET with
        If-Match its ETag; the object's length checked)."""
        args: dict[str, Any] = {"Bucket": self.place_of.bucket, "Key": place.key,
                                "Range": f"bytes={offset}-{offset + length - 1}"}
        if place.etag:
            args["IfMatch"] = place.etag
        if time.monotonic() < self._away_until:
            raise BucketError(f"the bucket {self.place_of.url} did not answer a moment ago; try again")
        try:
            answer = self.client.get_object(**args)
        except Exception as exc:
            import botocore.exceptions as bex

            if not isinstance(exc, bex.ClientError):  # no answer: the next reads fail at once, a while
                self._away_until = time.monotonic() + AWAY_SECONDS
            problem = _changed_or_gone(exc)
            if problem is not None:
                raise self.changed(place, sha, problem) from None
            raise self.unreachable("read", place.key, sha, exc) from None
        total = str(answer.get("ContentRange", "")).rpartition("/")[2]
        if total.isdigit() and int(total) != size:
            answer["Body"].close()
            raise self.changed(place, sha, f"it has {total} bytes instead of {size}")
        return answer["Body"]

    def changed(self, place: Place, sha: str, problem: str) -> BucketError:
        self._log_once(place.key, logging.ERROR, "object s3://%s/%s (blob %s) changed in the bucket behind "
                       "the store's back: %s; reads of it answer EIO", self.place_of.bucket, place.key, sha,
                       problem)
        return BucketError(f"object s3://{self.place_of.bucket}/{place.key} changed in the bucket: {problem}")

    def unreachable(self, doing: str, key: str, sha: str, exc: Exception) -> BucketError:
        problem = bucket_problem(exc)
        self._log_once(key, logging.ERROR, "cannot %s object s3://%s/%s (blob %s): %s; EIO until the bucket "
                       "answers", doing, self.place_of.bucket, key, sha, problem)
        return BucketError(f"cannot {doing} s3://{self.place_of.bucket}/{key}: {problem}")

    def _log_once(self, key: str, level: int, message: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._logged.get(key, -LOG_EVERY_SECONDS) < LOG_EVERY_SECONDS:
                return
            self._logged[key] = now
        log.log(level, message, *args)

    # ------------------------------------------------------------- deleting

    def delete(self, sha: str) -> None:
        """The blob's last reference went: its object is deleted in the background."""
        self._deletions.put(sha)

    def _delete_loop(self) -> None:
        while True:
            shas = [self._deletions.get()]
            while len(shas) < DELETE_BATCH:
                try:
                    shas.append(self._deletions.get_nowait())
                except queue.Empty:
                    break
            try:
                self._delete_unused(shas)
            except Exception as exc:
                log.warning("could not delete %d unused objects from %s (%s): collected later", len(shas),
                            self.place_of.url, bucket_problem(exc))
            finally:
                for _ in shas:
                    self._deletions.task_done()

    def _delete_unused(self, shas: list[str]) -> None:
        """Inside one metadata write: the objects of blobs still unused are deleted and
        their places dropped (no commit can count them meanwhile)."""
        with self.meta.write(reserve=True) as w:
            keys: set[str] = set()
            for sha in shas:
                if w.blob(sha) is not None:
                    continue
                raw = w.place(sha)
                keys.add(Place.unpack(raw).key if raw else self.place_of.key(f"blobs/{sha}"))
                with self._lock:
                    keys |= self._handed.pop(sha, set())
                w.drop_place(sha)
            self._delete_keys(sorted(keys))

    def _delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), DELETE_BATCH):
            batch = [{"Key": key} for key in keys[start:start + DELETE_BATCH]]
            if batch:
                self.client.delete_objects(Bucket=self.place_of.bucket,
                                           Delete={"Objects": batch, "Quiet": True})

    def _abort_loop(self) -> None:
        """Abort abandoned multipart uploads; while the bucket is away, try again later."""
        while True:
            key, upload_id = self._aborts.get()
            try:
                self.client.abort_multipart_upload(Bucket=self.place_of.bucket, Key=key, UploadId=upload_id)
            except Exception as exc:
                import botocore.exceptions as bex

                gone = isinstance(exc, bex.ClientError) and "NoSuchUpload" in str(exc)
                if not gone:
                    log.info("could not abort upload %s (%s): trying again", key, bucket_problem(exc))
                    threading.Timer(2.0, self._aborts.put, args=((key, upload_id),)).start()
            finally:
                self._aborts.task_done()

    def close(self) -> None:
        """Finish the deletions queued (for a while: what is left is collected later)."""
        deadline = time.monotonic() + CLOSE_WAIT_SECONDS
        while self._deletions.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.02)
        self.uploading.shutdown(wait=False, cancel_futures=True)
        self.cache.close()

    def empty_trash(self) -> int:
        """At mount: collect what a killed process left in the bucket, in the background."""
        threading.Thread(target=self._collect_quietly, name="encfs-s3-collect", daemon=True).start()
        return 0

    def _collect_quietly(self) -> None:
        try:
            collect(self, GRACE_SECONDS)
        except Exception as exc:
            log.warning("could not collect unused objects in %s: %s", self.place_of.url, bucket_problem(exc))

    def list(self) -> Iterator[str]:
        """The blobs stored whole under their sha256 (recovery's question: uploads are
        judged by `collect`)."""
        for key, _ in self.objects():
            name = key.rpartition("/")[2]
            if key == self.place_of.key(f"blobs/{name}"):
                yield name

    def objects(self) -> Iterator[tuple[str, datetime]]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.place_of.bucket, Prefix=self.place_of.key("")):
            for item in page.get("Contents", []):
                yield item["Key"], item["LastModified"]

    def quarantine(self, sha: str | None, note: str, path: str | None = None) -> str | None:
        """Set a damaged blob's object aside: a copy of it as it is now goes to
        PREFIX/quarantine/<sha>.<random>, beside a `.txt` note saying where it was and
        why. Nothing is deleted (the object stays where the metadata names it; its
        items read EIO as before). Returns the copy's URL, None if the object is gone."""
        import botocore.exceptions as bex

        if sha is None:
            return None
        place, _, _ = self.lookup(sha)
        bucket = self.place_of.bucket
        target = self.place_of.key(f"{QUARANTINE}/{sha}.{uuid.uuid4().hex[:8]}")
        try:
            self.client.copy_object(Bucket=bucket, Key=target,
                                    CopySource={"Bucket": bucket, "Key": place.key})
        except bex.ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("NoSuchKey", "404"):
                return None
            raise BucketError(f"cannot copy s3://{bucket}/{place.key} into quarantine: "
                              f"{bucket_problem(exc)}") from None
        self.client.put_object(Bucket=bucket, Key=f"{target}.txt",
                               Body=f"s3://{bucket}/{place.key}\n{note}\n".encode())
        return f"s3://{bucket}/{target}"


def _live_keys(store: S3BlobStore, r: ReadTxn) -> set[str]:
    """The object keys that counted blobs name."""
    live: set[str] = set()
    for sha in r.all_blobs():
        raw = r.place(sha)
        live.add(Place.unpack(raw).key if raw else store.place_of.key(f"blobs/{sha}"))
    return live


@dataclass
class Collected:
    deleted: list[str]
    young: int
    aborted: int


def collect(store: S3BlobStore, grace: float) -> Collected:
    """Delete the objects under the store's prefix that no counted blob names and that
    are older than `grace` seconds, and abort multipart uploads begun before that."""
    cutoff = datetime.now(UTC).timestamp() - grace
    kept_aside = store.place_of.key(f"{QUARANTINE}/")
    listed = [(key, modified) for key, modified in store.objects() if not key.startswith(kept_aside)]
    with store.meta.read() as r:
        live = _live_keys(store, r)
    unused = [(key, modified) for key, modified in listed if key not in live]
    old = [key for key, modified in unused if modified.timestamp() < cutoff]
    young = len(unused) - len(old)
    deleted: list[str] = []
    if old:
        with store.meta.write(reserve=True) as w:  # judged again: no commit is half-way now
            live = _live_keys(store, w)
            deleted = [key for key in old if key not in live]
            for sha, _ in list(w.all_places()):
                if w.blob(sha) is None:
                    w.drop_place(sha)
            store._delete_keys(deleted)
    aborted = 0
    uploads = store.client.list_multipart_uploads(Bucket=store.place_of.bucket, Prefix=store.place_of.key(""))
    for upload in uploads.get("Uploads", []):
        if upload["Initiated"].timestamp() < cutoff:
            store.client.abort_multipart_upload(Bucket=store.place_of.bucket, Key=upload["Key"],
                                                UploadId=upload["UploadId"])
            aborted += 1
    if deleted or aborted:
        log.info("collected %s: deleted %d unused objects, aborted %d abandoned uploads (%d younger than the "
                 "grace period kept)", store.place_of.url, len(deleted), aborted, young)
    return Collected(deleted, young, aborted)
