"""A Hypothesis run of mixed changes on two mounts of one store, with the kernel's
long caches in force: after each step the mount that made the change shows the
store's state at once, on every path (folders and the Dataset view), and the other
mount shows it within the bound."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from encfs.model import Actor, Folder

from conftest import Mounted
from store_state import item_bytes, service_of

BOUND = 2.0
FOLDERS = ["F", "G"]
NAMES = ["x.jpg", "y.jpg", "z.jpg"]
mounts = st.sampled_from([0, 1])
places = st.tuples(st.sampled_from(FOLDERS), st.sampled_from(NAMES))
payloads = st.binary(min_size=0, max_size=64)

Tree = dict[str, tuple[int, int, bytes]]


def store_tree(service: Any) -> Tree:
    """What the store holds: every file of the folders and of Dataset D, with size,
    link count and bytes."""
    actor = Actor.local()
    tree: Tree = {}
    for folder in FOLDERS:
        for node in service.list_folder(actor, f"/{folder}"):
            if not isinstance(node, Folder):
                tree[f"{folder}/{node.name}"] = (node.size, 1 + node.datasets, item_bytes(service, node))
    for view_name, path in service.dataset_files(actor, "D"):
        node = service.lookup(actor, path)
        tree[f".datasets/D/{view_name}"] = (node.size, 1 + node.datasets, item_bytes(service, node))
    return tree


def mount_tree(root: Path) -> Tree:
    """What a mount shows: every name looked up first (a listing would refresh the
    kernel's attributes of what it lists), then each folder's listing checked."""
    tree: Tree = {}
    for folder in [*FOLDERS, ".datasets/D"]:
        for name in NAMES:
            path = root / folder / name
            try:
                info = os.stat(path)
                tree[f"{folder}/{name}"] = (info.st_size, info.st_nlink, path.read_bytes())
            except FileNotFoundError:
                pass
        listed = {f"{folder}/{name}" for name in os.listdir(root / folder)}
        for key in listed - tree.keys():
            tree[key] = (-1, -1, b"listed but not reachable")
        for key in {key for key in tree if key.startswith(folder + "/")} - listed:
            tree[key] = (-2, -2, b"reachable but not listed")
    return tree


def settled_within(root: Path, expected: Tree, bound: float) -> Tree:
    deadline = time.monotonic() + bound
    while True:
        seen = mount_tree(root)
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(0.02)


def test_two_mounts_follow_each_other(store: Path, mount_factory: Any) -> None:
    a: Mounted = mount_factory(store, "a")
    b: Mounted = mount_factory(store, "b")
    for folder in FOLDERS:
        (a.path / folder).mkdir()
    (a.path / ".datasets" / "D").mkdir()
    roots = [a.path, b.path]

    class TwoMounts(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            self.acting = 0

        def attempt(self, mount: int, change: Any) -> None:
            self.acting = mount
            with contextlib.suppress(OSError):  # refused: both mounts must still agree with the store
                change(roots[mount])

        @rule(mount=mounts, place=places, data=payloads)
        def write(self, mount: int, place: tuple[str, str], data: bytes) -> None:
            self.attempt(mount, lambda root: (root / place[0] / place[1]).write_bytes(data))

        @rule(mount=mounts, place=places)
        def delete(self, mount: int, place: tuple[str, str]) -> None:
            self.attempt(mount, lambda root: os.unlink(root / place[0] / place[1]))

        @rule(mount=mounts, source=places, destination=places)
        def rename(self, mount: int, source: tuple[str, str], destination: tuple[str, str]) -> None:
            self.attempt(mount, lambda root: os.rename(root / source[0] / source[1],
                                                       root / destination[0] / destination[1]))

        @rule(mount=mounts, place=places)
        def link(self, mount: int, place: tuple[str, str]) -> None:
            self.attempt(mount, lambda root: os.link(root / place[0] / place[1],
                                                     root / ".datasets" / "D" / place[1]))

        @rule(mount=mounts, name=st.sampled_from(NAMES))
        def unlink_from_dataset(self, mount: int, name: str) -> None:
            self.attempt(mount, lambda root: os.unlink(root / ".datasets" / "D" / name))

        @invariant()
        def both_mounts_show_the_store(self) -> None:
            with service_of(store) as service:
                expected = store_tree(service)
            acting, other = roots[self.acting], roots[1 - self.acting]
            assert mount_tree(acting) == expected, "the mount that made the change is stale"
            assert settled_within(other, expected, BOUND) == expected, f"not shown within {BOUND} s"

    run_state_machine_as_test(TwoMounts, settings=settings(
        max_examples=10, stateful_step_count=12, deadline=None,
        suppress_health_check=list(HealthCheck)))
