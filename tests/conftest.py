"""Fixtures: a real store on disk and a real FUSE mount of it, run as its own process
and always unmounted and stopped (by its own pid) in teardown, pass or fail."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cloud_helpers import Cloud, make_cloud

from encfs.store import init_store

from seaweed import SeaweedS3

REQUIRED_TOOLS = ("fusermount3", "getfattr", "setfattr", "rsync", "find")
MOUNT_TIMEOUT = 20.0


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]
    if missing or not os.path.exists("/dev/fuse"):
        raise pytest.UsageError(
            f"missing system dependencies: {', '.join(missing) or '/dev/fuse'} "
            "(scripts/test installs fuse3, attr and rsync)"
        )


@dataclass
class Mounted:
    store: Path
    path: Path
    process: subprocess.Popen
    output: Path

    def log(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def __truediv__(self, other: str) -> Path:
        return self.path / other


def start_mount(store: Path, mountpoint: Path, preexec_fn: Callable[[], None] | None = None) -> Mounted:
    """Start `encfs mount --foreground` and wait until it answers; `preexec_fn` runs in
    the daemon's process before it starts (to set its limits, say)."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    output = mountpoint.parent / f"{mountpoint.name}.out"
    with open(output, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "encfs", "mount", "--foreground", "--store", str(store), str(mountpoint)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, preexec_fn=preexec_fn,
        )
    mounted = Mounted(store, mountpoint, process, output)
    deadline = time.monotonic() + MOUNT_TIMEOUT
    while not os.path.ismount(mountpoint):
        if process.poll() is not None or time.monotonic() > deadline:
            stop_mount(mounted)
            raise RuntimeError(f"mount did not come up:\n{mounted.log()}")
        time.sleep(0.02)
    return mounted


def in_mount_table(path: Path) -> bool:
    """Whether `path` is a mount point, also one whose FUSE connection was aborted
    (os.path.ismount says False there: stat fails with ENOTCONN)."""
    wanted = os.path.abspath(path).replace(" ", "\\040")
    with open("/proc/self/mountinfo") as table:
        return any(line.split()[4] == wanted for line in table)


def stop_mount(mounted: Mounted) -> None:
    """Unmount (lazily if busy), then stop the daemon by its own pid."""
    if in_mount_table(mounted.path):
        done = subprocess.run(["fusermount3", "-u", str(mounted.path)], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["fusermount3", "-uz", str(mounted.path)], capture_output=True)
    try:
        mounted.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        mounted.process.kill()
        mounted.process.wait(timeout=10)
    if in_mount_table(mounted.path):  # a killed daemon or an aborted connection leaves it behind
        subprocess.run(["fusermount3", "-uz", str(mounted.path)], capture_output=True)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    return init_store(tmp_path / "store")


@pytest.fixture
def mount(store: Path, tmp_path: Path) -> Iterator[Mounted]:
    mounted = start_mount(store, tmp_path / "mnt")
    try:
        yield mounted
    finally:
        stop_mount(mounted)


@pytest.fixture
def mount_factory(tmp_path: Path) -> Iterator:
    """Start more mounts (of any store); all are stopped at teardown."""
    started: list[Mounted] = []

    def start(store: Path, name: str) -> Mounted:
        mounted = start_mount(store, tmp_path / name)
        started.append(mounted)
        return mounted

    try:
        yield start
    finally:
        for mounted in started:
            stop_mount(mounted)


@pytest.fixture
def folder(mount: Mounted) -> Path:
    """A folder on the mount to put files in (the root takes folders only)."""
    path = mount.path / "data"
    path.mkdir()
    return path


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedS3]:
    """One SeaweedFS S3 server for the session; each test makes its own buckets."""
    server = SeaweedS3(tmp_path_factory.mktemp("seaweed"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bucket(seaweed: SeaweedS3, request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty bucket on the session's server, named after the test (removed
    with what it holds afterwards)."""
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-")
    made = seaweed.make_bucket(f"t-{name}-{uuid.uuid4().hex[:8]}")
    yield made
    seaweed.drop_bucket(made)


@pytest.fixture
def s3_store(seaweed: SeaweedS3, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A store whose blobs are in `bucket` under the prefix `store`, with a 32 MiB cache;
    the session server's AWS variables are set (mounts and commands inherit them)."""
    from encfs.blobs.s3 import BucketPlace
    from encfs.store import BucketBlobs

    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    place = BucketPlace.parse(f"s3://{bucket}/store")
    return init_store(tmp_path / "store", bucket=BucketBlobs(place, 32 << 20))


@pytest.fixture
def cloud(seaweed: SeaweedS3, bucket: str, store: Path, monkeypatch: pytest.MonkeyPatch) -> Cloud:
    """A store with integration `data` to the test's bucket, the AWS chain pointed at it."""
    return make_cloud(seaweed, bucket, store, monkeypatch)


@pytest.fixture(autouse=True)
def isolated_store_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test may fall back to the user's real store."""
    monkeypatch.setenv("ENCFS_STORE", str(tmp_path / "no-store-given"))


def errors_of(mounted: Mounted) -> str:
    return (mounted.path / ".encfs" / "errors").read_text()


class _Lines(logging.Handler):
    def __init__(self, level: int) -> None:
        super().__init__(level)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextmanager
def logged_lines(name: str, level: int = logging.INFO) -> Iterator[list[str]]:
    """The messages logger `name` writes at `level` or above meanwhile, whatever other
    tests (a mount's log set-up in this process) did to its propagation."""
    logger, handler = logging.getLogger(name), _Lines(level)
    was = logger.level
    logger.setLevel(level)  # setLevel, not `.level =`: it also clears the loggers' cached answers
    logger.addHandler(handler)
    try:
        yield handler.lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(was)
