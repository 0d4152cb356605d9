"""A Hypothesis state machine applies the same random operations to the mount and to a
local directory, and compares the two trees (names, kinds, sizes, bytes) after each step.
Errors must agree too: the same errno, or success on both."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from conftest import Mounted

NAMES = ["a", "b", "c"]
PATHS = [*NAMES, *(f"{d}/{n}" for d in NAMES for n in NAMES)]
paths = st.sampled_from(PATHS)
# what a symbolic link may say: names beside it, up and down, missing, itself
link_targets = st.sampled_from(["a", "b", "../a", "../c/b", "a/b", "missing", "../missing/x", "."])
payloads = st.binary(max_size=300)
offsets = st.integers(min_value=0, max_value=400)


def outcome(action, root: Path) -> str:
    try:
        action(root)
    except OSError as exc:
        return f"errno {exc.errno}"
    return "ok"


def snapshot(root: Path) -> dict[str, tuple[str, int, bytes]]:
    tree: dict[str, tuple[str, int, bytes]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                tree[os.path.relpath(full, root)] = ("link", 0, os.readlink(full).encode())
        for name in dirnames:
            if not os.path.islink(os.path.join(dirpath, name)):
                tree[os.path.relpath(os.path.join(dirpath, name), root)] = ("dir", 0, b"")
        for name in filenames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                continue
            with open(full, "rb") as f:
                data = f.read()
            tree[os.path.relpath(full, root)] = ("file", os.stat(full).st_size, data)
    return tree


def write_file(rel: str, data: bytes):
    def act(root: Path) -> None:
        with open(root / rel, "wb") as f:
            f.write(data)

    return act


def on_descriptor(rel: str, use):
    """An action that opens `rel` for writing (never creating it) and hands `use` the fd."""

    def act(root: Path) -> None:
        fd = os.open(root / rel, os.O_WRONLY)
        try:
            use(fd)
        finally:
            os.close(fd)

    return act


def write_at(rel: str, data: bytes, offset: int):
    return on_descriptor(rel, lambda fd: os.pwrite(fd, data, offset))


def append(rel: str, data: bytes):
    def act(root: Path) -> None:
        with open(root / rel, "ab") as f:
            f.write(data)

    return act


def copy_file(src: str, dst: str):
    """What cp does: the whole file with copy_file_range, into a new or emptied file."""

    def act(root: Path) -> None:
        with open(root / src, "rb") as source, open(root / dst, "wb") as target:
            while os.copy_file_range(source.fileno(), target.fileno(), 1 << 20):
                pass

    return act


def replace_atomically(rel: str, data: bytes):
    """What editors, `sed -i` and `os.replace` do: a new file beside, renamed over."""

    def act(root: Path) -> None:
        temporary = root / f"{rel}.new"
        with open(temporary, "wb") as f:
            f.write(data)
        try:
            os.replace(temporary, root / rel)
        except OSError:
            os.unlink(temporary)
            raise

    return act


def reserve(rel: str, offset: int, length: int):
    return on_descriptor(rel, lambda fd: os.posix_fallocate(fd, offset, length))


class MountMatchesLocalDisk(RuleBasedStateMachine):
    mount_root: Path
    local_root: Path

    def __init__(self) -> None:
        super().__init__()
        for root in (self.mount_root, self.local_root):
            for child in list(root.iterdir()):
                shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()

    def both(self, action) -> None:
        on_mount = outcome(action, self.mount_root)
        on_disk = outcome(action, self.local_root)
        assert on_mount == on_disk, f"mount: {on_mount}, local disk: {on_disk}"

    @rule(rel=paths, data=payloads)
    def create_or_overwrite(self, rel: str, data: bytes) -> None:
        self.both(write_file(rel, data))

    @rule(rel=paths, data=payloads, offset=offsets)
    def write_at_offset(self, rel: str, data: bytes, offset: int) -> None:
        self.both(write_at(rel, data, offset))

    @rule(rel=paths, data=payloads)
    def append(self, rel: str, data: bytes) -> None:
        self.both(append(rel, data))

    @rule(rel=paths, length=offsets)
    def truncate(self, rel: str, length: int) -> None:
        self.both(lambda root: os.truncate(root / rel, length))

    @rule(src=paths, dst=paths)
    def rename(self, src: str, dst: str) -> None:
        self.both(lambda root: os.rename(root / src, root / dst))

    @rule(src=paths, dst=paths)
    def copy(self, src: str, dst: str) -> None:
        self.both(copy_file(src, dst))

    @rule(rel=paths, offset=offsets, length=st.integers(min_value=1, max_value=400))
    def fallocate(self, rel: str, offset: int, length: int) -> None:
        self.both(reserve(rel, offset, length))

    @rule(rel=paths, data=payloads)
    def atomic_replace(self, rel: str, data: bytes) -> None:
        self.both(replace_atomically(rel, data))

    @rule(text=link_targets, rel=paths)
    def symlink(self, text: str, rel: str) -> None:
        self.both(lambda root: os.symlink(text, root / rel))

    @rule(rel=paths)
    def read_through(self, rel: str) -> None:
        self.both(lambda root: (root / rel).read_bytes())

    @rule(rel=paths)
    def unlink(self, rel: str) -> None:
        self.both(lambda root: os.unlink(root / rel))

    @rule(rel=paths)
    def mkdir(self, rel: str) -> None:
        self.both(lambda root: os.mkdir(root / rel))

    @rule(rel=paths)
    def rmdir(self, rel: str) -> None:
        self.both(lambda root: os.rmdir(root / rel))

    @invariant()
    def trees_match(self) -> None:
        assert snapshot(self.mount_root) == snapshot(self.local_root)


def test_mount_behaves_like_local_disk(mount: Mounted, tmp_path: Path) -> None:
    mount_root = mount.path / "work"
    mount_root.mkdir()
    local_root = tmp_path / "local"
    local_root.mkdir()
    MountMatchesLocalDisk.mount_root = mount_root
    MountMatchesLocalDisk.local_root = local_root
    run_state_machine_as_test(
        MountMatchesLocalDisk,
        settings=settings(
            max_examples=int(os.environ.get("ENCFS_STATEFUL_EXAMPLES", "60")),
            stateful_step_count=30, deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
