"""What a store holds, for tests that check a refusal changed nothing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from encfs.model import Actor, Folder
from encfs.service import FilesService
from encfs.store import open_store


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def service_of(store: Path) -> Iterator[FilesService]:
    opened = open_store(store)
    try:
        yield FilesService(opened)
    finally:
        opened.close()


def snapshot(store: Path) -> dict[str, Any]:
    """Everything a refusal must leave as it was: the tree, the blobs, the drafts."""
    with service_of(store) as service:
        actor = Actor.local()
        tree: dict[str, tuple[Any, ...]] = {}

        def walk(path: str) -> None:
            for node in service.list_folder(actor, path):
                child = path.rstrip("/") + "/" + node.name
                if isinstance(node, Folder):
                    metadata = json.dumps(node.client_metadata)
                    tree[child] = ("folder", node.description, metadata, node.subfolders)
                    walk(child)
                else:
                    tree[child] = ("file", node.size, node.blob, node.media.kind.value)

        walk("/")
        blobs = sorted(service.blobs.list())
    return {"tree": tree, "blobs": blobs, "spool": sorted(os.listdir(store / "spool"))}
