"""What a store holds and how a refusal looks, for tests that check a refusal changed nothing."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from encfs.model import Actor, Folder, Special
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


def stored_bytes(store: Path, path: str) -> bytes:
    """The committed content of an item, read from the store itself (no mount's page
    cache can answer for it)."""
    with service_of(store) as service:
        return item_bytes(service, service.lookup(Actor.local(), path))


def item_bytes(service: FilesService, item: Any) -> bytes:
    """An item's committed content, read through an open service."""
    reader = service.open_reader(Actor.local(), item)
    if reader is None:
        return b""
    try:
        return reader.pread(item.size, 0)
    finally:
        reader.close()


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
                elif isinstance(node, Special):
                    tree[child] = ("special", node.mode, node.target, node.rdev)
                else:
                    tree[child] = ("file", node.size, node.blob, node.media.kind.value)

        walk("/")
        blobs = sorted(service.blobs.list())
        datasets = {
            entry["name"]: (entry, service.dataset_files(actor, entry["name"]))
            for entry in service.list_datasets(actor)
        }
        projects = {entry["name"]: entry["datasets"] for entry in service.list_projects(actor)}
    return {"tree": tree, "blobs": blobs, "spool": sorted(os.listdir(store / "spool")), "datasets": datasets,
            "projects": projects}


def members(store: Path, dataset: str) -> dict[str, str]:
    """A Dataset's files: view name -> Files path."""
    with service_of(store) as service:
        return dict(service.dataset_files(Actor.local(), dataset))


def explain(result: Result | subprocess.CompletedProcess[str]) -> str:
    if isinstance(result, Result):
        return (f"exit {result.exit_code}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}\n"
                f"exception: {result.exception!r}")
    return f"exit {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"


def refused(result: Result, *phrases: str, code: int | None = None) -> Result:
    """A CLI refusal: non-zero exit, every phrase on stderr, no traceback."""
    assert result.exit_code != 0, explain(result)
    if code is not None:
        assert result.exit_code == code, explain(result)
    assert result.exception is None or isinstance(result.exception, SystemExit), explain(result)
    for phrase in phrases:
        assert phrase in result.stderr, explain(result)
    return result


def sync_files(paths: dict[Path, bytes]) -> None:
    """Write each file and fsync it."""
    for path, data in paths.items():
        with open(path, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def poll(predicate: Callable[[], Any], timeout: float = 3.0) -> Any:
    """The predicate's first true value within `timeout` seconds (else its last value)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


def os_refused(expected: int, call: Callable[[], Any]) -> OSError:
    with pytest.raises(OSError) as caught:
        call()
    assert caught.value.errno == expected, (
        f"expected {errno.errorcode[expected]}, got "
        f"{errno.errorcode.get(caught.value.errno or 0, caught.value.errno)}: {caught.value}"
    )
    return caught.value
