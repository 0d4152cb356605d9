"""`encfs umount`: unmount normally; when the daemon does not answer (it hangs, is
stopped, or died), abort its FUSE connection and unmount lazily, so that nobody has to
write to /sys/fs/fuse/connections/N/abort by hand. A mount whose daemon answers but
that is in use is left alone (unmounting it would take files from the programs),
unless its watchdog noted a request stuck inside libfuse, which nothing but an abort
can free."""

from __future__ import annotations

import errno
import os
import subprocess
from pathlib import Path

from encfs.errors import EncfsError
from encfs.fs import connection

UNMOUNT_SECONDS = 10.0  # a normal unmount of a healthy mount takes milliseconds
PROBE_SECONDS = 3.0  # a daemon that answers nothing in this long is taken as hung


class UnmountError(EncfsError):
    errno = errno.EBUSY
    exit_code = 1


def is_mounted(mountpoint: Path | str) -> bool:
    """Whether something is mounted there, even a mount whose daemon hangs or died
    (read from mountinfo: a stat of it would block or fail)."""
    return connection.connection_number(mountpoint) is not None


def _run(command: list[str], seconds: float) -> subprocess.CompletedProcess[str] | None:
    """Run a command that may block on the mount; None if it did not finish in time."""
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=seconds)
    except subprocess.TimeoutExpired:
        return None


def daemon_answers(mountpoint: Path) -> bool:
    """Whether the mount's daemon answers a stat of its root in time (in a child
    process: a stat of a hung mount blocks)."""
    done = _run(["stat", "-c", "%i", str(mountpoint)], PROBE_SECONDS)
    return done is not None and done.returncode == 0


def unmount(mountpoint: Path) -> bool:
    """Unmount; True if the connection had to be aborted first (hung or dead daemon)."""
    mountpoint = Path(os.path.abspath(mountpoint))
    if not is_mounted(mountpoint):
        raise UnmountError(f"{mountpoint} is not mounted")
    done = _run(["fusermount3", "-u", str(mountpoint)], UNMOUNT_SECONDS)
    if done is not None and done.returncode == 0 and not is_mounted(mountpoint):
        return False
    if daemon_answers(mountpoint) and not connection.noted_stuck(mountpoint):
        reason = done.stderr.strip().removeprefix("fusermount3: ") if done is not None else "timed out"
        raise UnmountError(f"could not unmount {mountpoint}: {reason} (close the files and folders "
                           "in use there first)")
    connection.abort(mountpoint)  # a daemon that died took its connection with it already
    for command in (["fusermount3", "-u", str(mountpoint)], ["fusermount3", "-uz", str(mountpoint)]):
        if not is_mounted(mountpoint):
            break
        _run(command, UNMOUNT_SECONDS)
    if is_mounted(mountpoint):
        raise UnmountError(f"could not unmount {mountpoint}: its daemon does not answer and its FUSE "
                           "connection could not be aborted (that needs root)")
    return True
