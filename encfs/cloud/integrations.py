"""Integrations: a name for a bucket (and prefix) and how to reach it.

Only where the bucket is and which AWS profile or region to use are stored;
credentials come from the standard AWS chain (environment, profiles, instance
roles) every time a client is made, and are never written into the store.
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

from encfs.errors import AlreadyExists, EncfsError, InvalidInput, NotFound
from encfs.meta import cloud as tables
from encfs.meta.store import MetaStore

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
CONNECT_SECONDS = 3
READ_SECONDS = 20
ATTEMPTS = 3  # boto3's own retries of a request (bounded: a read waits for a few seconds at most)
QUIET_SECONDS = 2.0  # after a service did not answer, requests fail at once for this long


class CloudError(EncfsError):
    """A bucket could not be reached or refused a request (EIO at the mount)."""


class Unreachable(CloudError):
    """The storage service did not answer (after boto3's bounded retries)."""


@dataclass(frozen=True)
class ObjectUrl:
    bucket: str
    key: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_url(url: str, what: str = "URL") -> ObjectUrl:
    """s3://BUCKET/KEY (the key may be empty for a bucket or a prefix)."""
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise InvalidInput(f"{what} {url!r} is not an s3://BUCKET/KEY URL")
    bucket, _, key = url[5:].partition("/")
    if not BUCKET.match(bucket):
        raise InvalidInput(f"{what} {url!r} does not name a valid bucket")
    return ObjectUrl(bucket, key)


AWS_HOST = re.compile(r"^(?:(?P<bucket>.+)\.)?s3(?:[.-](?P<region>[a-z0-9-]+))?\.amazonaws\.com(?:\.cn)?$")


def object_url(url: str, endpoint: str | None = None, what: str = "objectUrl") -> ObjectUrl:
    """The object an import spec's URL names: s3://BUCKET/KEY, or an https URL of an
    S3 object as Encord specs give them: virtual-hosted
    (https://BUCKET.s3.REGION.amazonaws.com/KEY), path-style
    (https://s3.REGION.amazonaws.com/BUCKET/KEY), or path-style under `endpoint` (an
    integration's own S3 endpoint, http or https). A key in an https URL is
    percent-decoded."""
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return parse_url(url, what)
    parts = urlsplit(url)
    host, path = (parts.hostname or "").lower(), unquote(parts.path)
    if parts.query or parts.fragment:
        raise InvalidInput(f"{what} {url!r} has a query or fragment: give the object's URL alone")
    aws = AWS_HOST.match(host)
    below = path if aws else _under_endpoint(parts, path, endpoint)
    if aws and aws.group("bucket"):
        bucket, key = aws.group("bucket"), path.removeprefix("/")
    elif below is not None:
        bucket, _, key = below.removeprefix("/").partition("/")
    else:
        raise InvalidInput(f"{what} {url!r} is not the URL of an S3 object (s3://BUCKET/KEY, "
                           "https://BUCKET.s3.REGION.amazonaws.com/KEY, "
                           "https://s3.REGION.amazonaws.com/BUCKET/KEY or the integration's endpoint "
                           "followed by /BUCKET/KEY)")
    if not BUCKET.match(bucket):
        raise InvalidInput(f"{what} {url!r} does not name a valid bucket")
    return ObjectUrl(bucket, key)


def _under_endpoint(parts: Any, path: str, endpoint: str | None) -> str | None:
    """The URL's path below the integration's endpoint (same scheme, host and port,
    under the endpoint's own path), or None if the URL is elsewhere."""
    if not endpoint:
        return None
    given = urlsplit(endpoint)
    default = {"http": 80, "https": 443}
    base = unquote(given.path).rstrip("/")
    same = (parts.scheme == given.scheme and (parts.hostname or "").lower() == (given.hostname or "").lower()
            and (parts.port or default.get(parts.scheme)) == (given.port or default.get(given.scheme)))
    return path[len(base):] if same and path.startswith(base + "/") else None


@dataclass(frozen=True)
class Integration:
    name: str
    bucket: str
    prefix: str = ""
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def covers(self, url: ObjectUrl) -> bool:
        return url.bucket == self.bucket and url.key.startswith(self.prefix)

    def object_url(self, url: str, what: str = "objectUrl") -> ObjectUrl:
        """An s3:// or https:// URL of a spec, as the object it names (any bucket)."""
        return object_url(url, _endpoint(self), what)

    def record(self) -> dict[str, Any]:
        fields = asdict(self)
        del fields["name"]
        return fields


_clients: dict[tuple[Any, ...], Any] = {}
CHAIN_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                   "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION", "AWS_REGION")
_clients_lock = threading.Lock()


def client_for(integration: Integration) -> Any:
    """One boto3 client per integration and process (boto3 clients are thread-safe);
    credentials from the standard AWS chain."""
    key = (integration, *(os.environ.get(name) for name in CHAIN_VARIABLES))
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            client = _clients[key] = _new_client(integration)
        return client


def _new_client(integration: Integration) -> Any:
    import boto3
    import botocore.exceptions
    from botocore.config import Config

    try:
        session = boto3.session.Session(profile_name=integration.profile)
    except botocore.exceptions.ProfileNotFound as exc:
        raise CloudError(f"integration {integration.name}: AWS profile {integration.profile!r} "
                         "is not configured") from exc
    config = Config(retries={"max_attempts": ATTEMPTS, "mode": "standard"}, connect_timeout=CONNECT_SECONDS,
                    read_timeout=READ_SECONDS, max_pool_connections=64, parameter_validation=False)
    return session.client("s3", endpoint_url=integration.endpoint_url, region_name=integration.region,
                          config=config)


def explain(exc: Exception, integration: Integration, what: str) -> CloudError:
    """A boto3 failure as a sentence naming the cause."""
    import botocore.exceptions

    where = f"{what} (integration {integration.name})"
    if isinstance(exc, botocore.exceptions.ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"):
            return CloudError(f"{where}: the credentials were refused ({code}); check the AWS "
                              "credentials in the environment or profile")
        if code in ("NoSuchBucket",):
            return CloudError(f"{where}: the bucket does not exist")
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return CloudError(f"{where}: no such object")
        if code in ("AccessDenied", "403", "AllAccessDisabled") or status == 403:
            return CloudError(f"{where}: permission denied (the credentials may not read or list it)")
        if code in ("PreconditionFailed", "412") or status == 412:
            return CloudError(f"{where}: the object changed in the bucket")
        return CloudError(f"{where}: the bucket answered {code or status}")
    if isinstance(exc, botocore.exceptions.NoCredentialsError):
        return CloudError(f"{where}: no AWS credentials found (set AWS_ACCESS_KEY_ID and "
                          "AWS_SECRET_ACCESS_KEY, or a profile)")
    if isinstance(exc, botocore.exceptions.ProfileNotFound):
        return CloudError(f"{where}: AWS profile {integration.profile!r} is not configured")
    if isinstance(exc, (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectionError,
                        botocore.exceptions.ReadTimeoutError, ConnectionError, TimeoutError)):
        return Unreachable(f"{where}: the storage service cannot be reached ({exc})")
    if isinstance(exc, CloudError):
        return exc
    return CloudError(f"{where}: {exc}")


_unreachable_until: dict[str | None, float] = {}


def refuse_if_unreachable(integration: Integration) -> None:
    """A service that just failed to answer (after boto3's retries) is not asked again
    for a moment: the reads queued behind the first (the kernel's read-ahead) fail at
    once instead of each waiting through the retries."""
    until = _unreachable_until.get(_endpoint(integration), 0.0)
    if time.monotonic() < until:
        raise Unreachable(f"integration {integration.name}: the storage service cannot be reached "
                          f"(it did not answer {QUIET_SECONDS:.0f} s ago; not asked again yet)")


def note_unreachable(integration: Integration) -> None:
    _unreachable_until[_endpoint(integration)] = time.monotonic() + QUIET_SECONDS


def _endpoint(integration: Integration) -> str | None:
    return integration.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")


def check(integration: Integration) -> None:
    """Raise a CloudError naming the cause unless the bucket (and prefix) can be listed."""
    try:
        client_for(integration).list_objects_v2(Bucket=integration.bucket, Prefix=integration.prefix,
                                                MaxKeys=1)
    except Exception as exc:
        raise explain(exc, integration, f"bucket {integration.bucket}") from exc


class Integrations:
    """The store's integrations (LMDB through meta/cloud.py)."""

    def __init__(self, meta: MetaStore) -> None:
        self.meta = meta

    def add(self, name: str, url: str, endpoint_url: str | None = None, profile: str | None = None,
            region: str | None = None) -> Integration:
        """Check the bucket first: nothing is recorded unless it can be listed."""
        if not NAME.match(name):
            raise InvalidInput(f"integration name {name!r}: letters, digits, '.', '_' and '-', "
                               "at most 64, starting with a letter or digit")
        where = parse_url(url, "bucket")
        prefix = where.key if not where.key or where.key.endswith("/") else where.key + "/"
        integration = Integration(name, where.bucket, prefix, endpoint_url, profile, region)
        with self.meta.read() as r:
            if tables.integration(r, name) is not None:
                raise AlreadyExists(f"an integration named {name} exists")
        check(integration)
        with self.meta.write() as w:
            if tables.integration(w, name) is not None:
                raise AlreadyExists(f"an integration named {name} exists")
            tables.put_integration(w, name, {**integration.record(), "created": time.time()})
        return integration

    def get(self, name: str) -> Integration:
        with self.meta.read() as r:
            record = tables.integration(r, name)
        if record is None:
            raise NotFound(f"no integration named {name} (see encfs integration ls)")
        return _from_record(name, record)

    def list(self) -> list[Integration]:
        with self.meta.read() as r:
            return [_from_record(name, record) for name, record in tables.integrations(r)]

    def remove(self, name: str) -> None:
        """Refused while items or cloud-synced folders use it: they could no longer be read."""
        self.get(name)
        with self.meta.write() as w:
            users = sum(1 for _, ref in tables.references(w) if ref["integration"] == name)
            folders = sum(1 for _, rec in tables.cloud_synced_folders(w) if rec["integration"] == name)
            if users or folders:
                raise InvalidInput(f"integration {name} is used by {users} files and {folders} cloud-synced "
                                   "folders; remove them first")
            tables.delete_integration(w, name)


def _from_record(name: str, record: dict[str, Any]) -> Integration:
    return Integration(name, record["bucket"], record.get("prefix", ""), record.get("endpoint_url"),
                       record.get("profile"), record.get("region"))
