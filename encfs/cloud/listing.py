"""Objects under a prefix, and sidecar metadata files (`NAME.metadata.json`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from encfs.cloud.integrations import Integration, ObjectUrl, client_for, explain
from encfs.cloud.objects import S3Object, Version
from encfs.errors import InvalidInput
from encfs.metadata import check_client_metadata

SIDECAR = ".metadata.json"
SIDECAR_MAX = 64 << 10


@dataclass
class Listed:
    url: ObjectUrl
    relative: str  # the key below the prefix
    size: int
    etag: str
    mtime_ns: int

    @property
    def folders(self) -> list[str]:
        return [p for p in self.relative.split("/")[:-1] if p]

    @property
    def name(self) -> str:
        return self.relative.rsplit("/", 1)[-1]


def list_objects(integration: Integration, where: ObjectUrl) -> Iterator[Listed]:
    """Every object under the prefix (folder markers, keys ending in /, left out)."""
    prefix = where.key if not where.key or where.key.endswith("/") else where.key + "/"
    try:
        pages = client_for(integration).get_paginator("list_objects_v2").paginate(
            Bucket=where.bucket, Prefix=prefix)
        for page in pages:
            for entry in page.get("Contents", []):
                key = entry["Key"]
                if key.endswith("/") or not key[len(prefix):].strip("/"):
                    continue
                yield Listed(ObjectUrl(where.bucket, key), key[len(prefix):], entry["Size"],
                             entry["ETag"].strip('"'), int(entry["LastModified"].timestamp() * 1e9))
    except InvalidInput:
        raise
    except Exception as exc:
        raise explain(exc, integration, f"listing s3://{where.bucket}/{prefix}") from exc


def split_sidecars(listed: list[Listed]) -> tuple[list[Listed], dict[str, Listed]]:
    """(objects, sidecars by the relative key of the object they describe)."""
    objects, sidecars = [], {}
    for entry in listed:
        if entry.relative.endswith(SIDECAR) and len(entry.relative) > len(SIDECAR):
            sidecars[entry.relative[: -len(SIDECAR)]] = entry
        else:
            objects.append(entry)
    return objects, sidecars


def read_sidecar(integration: Integration, sidecar: Listed) -> dict[str, Any]:
    """A sidecar's JSON object, checked as client metadata."""
    if sidecar.size > SIDECAR_MAX:
        raise InvalidInput(f"{sidecar.url}: a metadata sidecar is at most {SIDECAR_MAX} bytes")
    data = S3Object(integration, sidecar.url, Version(sidecar.etag, sidecar.size)).get_range(0, sidecar.size)
    try:
        metadata = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"{sidecar.url}: the metadata sidecar is not JSON ({exc})") from None
    check_client_metadata(metadata, str(sidecar.url))
    return metadata
