"""Real Linux users for the access tests, and running code as one of them.

`as_user` forks, drops to the user's uid and gid (setresgid/setresuid, as runuser
does) and runs a function there; its result or OSError errno comes back through a
pipe. Forking is a few milliseconds, so two users' calls follow each other well
within the kernel's cache times."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def linux_users(count: int) -> Iterator[list[str]]:
    """`count` new Linux users (<prefix><random>), removed at the end."""
    names: list[str] = []
    try:
        for _ in range(count):
            name = f"{user_prefix()}{uuid.uuid4().hex[:8]}"
            subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", name], check=True,
                           capture_output=True)
            names.append(name)
        yield names
    finally:
        for name in names:
            subprocess.run(["userdel", name], capture_output=True)


def user_prefix() -> str:
    """What the suite's Linux users are called: ENCFS_TEST_USER_PREFIX, or encfs-a-
    (runs side by side on one machine each take their own)."""
    return os.environ.get("ENCFS_TEST_USER_PREFIX", "encfs-a-")


def uid_of(name: str) -> int:
    return pwd.getpwnam(name).pw_uid


def as_user(name: str, call: Callable[[], Any]) -> Any:
    """`call()` run as the Linux user `name`: its result (JSON), or "E<NAME>" for an OSError."""
    entry = pwd.getpwnam(name)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: become the user, answer, exit without cleanup
        try:
            os.close(read_end)
            os.setgroups([])
            os.setresgid(entry.pw_gid, entry.pw_gid, entry.pw_gid)
            os.setresuid(entry.pw_uid, entry.pw_uid, entry.pw_uid)
            try:
                result: Any = call()
            except OSError as exc:
                import errno

                result = "E" + errno.errorcode.get(exc.errno or 0, str(exc.errno))
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    chunks = []
    while chunk := os.read(read_end, 1 << 16):
        chunks.append(chunk)
    os.close(read_end)
    os.waitpid(pid, 0)
    return json.loads(b"".join(chunks)) if chunks else "no answer"


def runuser(name: str, *command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["runuser", "-u", name, "--", *command], capture_output=True, text=True, timeout=60)
