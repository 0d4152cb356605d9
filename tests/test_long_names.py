"""A name over 255 bytes is ENAMETOOLONG for every call, before any other check
(the kernel passes FUSE names of up to 1,024 bytes on, so encfs answers)."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import Mounted
from store_state import os_refused

LONG = "n" * 256
LONG_UTF8 = "é" * 128  # 256 bytes


def calls(folder: Path, name: str) -> dict[str, Callable[[], Any]]:
    long = folder / name
    return {
        "stat": lambda: os.stat(long),
        "lstat": lambda: os.lstat(long),
        "open": lambda: os.open(long, os.O_RDONLY),
        "create": lambda: os.open(long, os.O_CREAT | os.O_WRONLY, 0o644),
        "unlink": lambda: os.unlink(long),
        "chmod": lambda: os.chmod(long, 0o600),
        "chown": lambda: os.chown(long, 0, 0),
        "utime": lambda: os.utime(long),
        "truncate": lambda: os.truncate(long, 0),
        "mkdir": lambda: os.mkdir(long),
        "rmdir": lambda: os.rmdir(long),
        "rename from": lambda: os.rename(long, folder / "short"),
        "rename to": lambda: os.rename(folder / "short", long),
        "symlink": lambda: os.symlink("short", long),
        "readlink": lambda: os.readlink(long),
        "mkfifo": lambda: os.mkfifo(long),
        "mknod": lambda: os.mknod(long),
        "getxattr": lambda: os.getxattr(long, "user.x"),
        "setxattr": lambda: os.setxattr(long, "user.x", b"v"),
        "listdir": lambda: os.listdir(long),
        "link": lambda: os.link(folder / "short", long),
    }


@pytest.mark.parametrize("name", [LONG, LONG_UTF8])
def test_every_call_with_a_long_name_is_enametoolong(mount: Mounted, folder: Path, name: str) -> None:
    (folder / "short").write_text("x")
    for call, action in calls(folder, name).items():
        try:
            os_refused(errno.ENAMETOOLONG, action)
        except AssertionError as exc:
            raise AssertionError(f"{call}: {exc}") from None
    assert sorted(os.listdir(folder)) == ["short"]
    assert (folder / "short").read_text() == "x"


def test_255_bytes_is_a_valid_name(folder: Path) -> None:
    name = "é" * 127 + "n"  # 255 bytes
    (folder / name).write_text("fits")
    os.symlink(name, folder / ("l" * 255))
    assert (folder / ("l" * 255)).read_text() == "fits"
