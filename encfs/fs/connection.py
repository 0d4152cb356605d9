"""A mount's FUSE connection, as the kernel shows it in /sys/fs/fuse/connections/N:
how many requests wait for an answer, and aborting it (every waiting and later
request fails at once, so a hung or dead daemon no longer holds anything).

N is the minor number of the mount's device. It is read from /proc/self/mountinfo,
never from a stat of the mount point, which blocks while the daemon hangs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

CONNECTIONS = Path("/sys/fs/fuse/connections")


def unescape(field: str) -> str:
    """A path as /proc/self/mounts and mountinfo write it (octal escapes)."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


def connection_number(mountpoint: Path | str) -> str | None:
    """The connection number of the FUSE mount at mountpoint (the last one mounted
    there), or None if nothing is mounted there."""
    target, number = os.path.abspath(mountpoint), None
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 4 and unescape(fields[4]) == target:
                number = fields[2].split(":")[1]
    return number


def visible() -> bool:
    """The fusectl file system, mounted if it is not (root only; False otherwise)."""
    if CONNECTIONS.is_dir() and any(CONNECTIONS.iterdir()):
        return True
    if not CONNECTIONS.is_dir():
        return False
    done = subprocess.run(["mount", "-t", "fusectl", "fusectl", str(CONNECTIONS)], capture_output=True)
    return done.returncode == 0


def waiting_requests(number: str) -> int | None:
    """Requests the kernel has sent on connection N and not had answered."""
    try:
        return int((CONNECTIONS / number / "waiting").read_text())
    except (OSError, ValueError):
        return None


def abort(mountpoint: Path | str) -> bool:
    """Abort the connection of the mount at mountpoint; False if that was not possible."""
    number = connection_number(mountpoint)
    if number is None or not visible():
        return False
    try:
        (CONNECTIONS / number / "abort").write_text("1")
    except OSError:
        return False
    return True


# A request stuck inside libfuse: the daemon still answers everything else, so only its
# watchdog knows. It leaves a note for `encfs umount` (root mounts only: aborting a
# connection needs root anyway), naming the connection, the mount and its own pid.
STUCK_DIR = Path("/run/encfs")


def _stuck_note(number: str) -> Path:
    return STUCK_DIR / f"connection-{number}.stuck"


def note_stuck(number: str, mountpoint: Path | str) -> None:
    try:
        STUCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        _stuck_note(number).write_text(f"{os.getpid()}\n{os.path.abspath(mountpoint)}\n")
    except OSError:
        pass


def clear_stuck(number: str) -> None:
    try:
        note = _stuck_note(number)
        if note.read_text().split("\n")[0] == str(os.getpid()):
            note.unlink()
    except (OSError, IndexError):
        pass


def noted_stuck(mountpoint: Path | str) -> bool:
    """Whether the daemon of the mount at mountpoint (alive) has noted a request stuck
    inside libfuse that it cannot answer."""
    number = connection_number(mountpoint)
    if number is None:
        return False
    try:
        pid, noted_mountpoint = _stuck_note(number).read_text().split("\n")[:2]
    except (OSError, ValueError):
        return False
    return noted_mountpoint == os.path.abspath(mountpoint) and Path(f"/proc/{pid}").exists()
