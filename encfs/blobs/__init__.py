"""Blob stores: file bytes by sha256, written once, read by range, deleted by the service."""

from encfs.blobs.base import BlobReader, BlobStore
from encfs.blobs.local import LocalBlobStore

__all__ = ["BlobReader", "BlobStore", "LocalBlobStore"]
