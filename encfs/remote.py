"""A non-root user's `encfs` commands, run by a root mount's daemon for them.

The store is private to root (0700): a user who could open its LMDB or blob files
could change anything. So a root mount listens on a local socket (`/run/encfs/`,
one per mountpoint, open to every user); a non-root `encfs` command that names a
store it cannot open, or gives no store while such a mount runs, sends its argv,
its working folder and its stdin, stdout and stderr (SCM_RIGHTS) there. The daemon
learns who asks from the socket itself (SO_PEERCRED, SO_PEERGROUPS), never from the
request, and runs the command in a child process of its own with that identity
(`ENCFS_CALLER`): the command acts as that user (`Actor.local()`), sees the service
only through `CallerGate` (the same POSIX rules the kernel applies on the mount), and
writes straight to the caller's terminal. Its exit status goes back on the socket.

`encfs upload FOLDER FILES…` reads local files: the user's own command opens them (with
the user's rights) and sends the descriptors with its request; the child reads those
and nothing else (`caller_files`), never a path with the daemon's rights.
"""

from __future__ import annotations

import array
import contextlib
import hashlib
import json
import logging
import os
import select
import socket
import stat
import struct
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from encfs.errors import StoreError
from encfs.model import Actor, act_for
from encfs.posix import Credentials, groups_of_process

log = logging.getLogger("encfs")

RUN_DIR = Path("/run/encfs")
CALLER_ENV = "ENCFS_CALLER"
SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)
LOCAL_COMMANDS = ("init", "mount", "umount", "fsck")  # never run for another user
# What the daemon runs for other users; CallerGate holds the rule of each service call
# they make. A command not listed here may read local files or act on the whole store.
REMOTE_COMMANDS = ("ls", "info", "search", "folder", "rm", "mv", "errors", "batch", "upload", "dataset",
                   "project", "user", "group", "access", "activity", "integration", "import", "sync")
MAX_REQUEST = 1 << 20
MAX_FILES = 250  # local files an `upload` passes as descriptors (SCM_RIGHTS takes at most 253)
FILES_ENV = "ENCFS_CALLER_FILES"  # in the child: which argument is which passed descriptor
_passed_links: set[Path] = set()  # in the child: the links caller_files made
HEADER = struct.Struct("!I")
STATUS = struct.Struct("!i")


def socket_path(mountpoint: Path) -> Path:
    digest = hashlib.sha256(os.fsencode(os.path.realpath(mountpoint))).hexdigest()[:24]
    return RUN_DIR / f"{digest}.sock"


# ---------------------------------------------------------------- in the daemon


class CommandServer:
    """Serves the CLI of non-root users for one mount (a thread per command)."""

    def __init__(self, store_path: Path, mountpoint: Path) -> None:
        self.store_path = store_path
        self.path = socket_path(mountpoint)
        self.listener: socket.socket | None = None

    def start(self) -> None:
        try:
            RUN_DIR.mkdir(mode=0o755, exist_ok=True)
            info = RUN_DIR.lstat()
            if info.st_uid != 0 or info.st_mode & 0o022 or not stat.S_ISDIR(info.st_mode):
                log.error("not serving other users' commands: only root may write in %s", RUN_DIR)
                return
            remove_stale_sockets()
            self.path.unlink(missing_ok=True)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(str(self.path))
            os.chmod(self.path, 0o666)
            listener.listen(16)
        except OSError as exc:
            log.error("not serving other users' commands: %s", exc)
            return
        self.listener = listener
        threading.Thread(target=self._accept, name="encfs-commands", daemon=True).start()
        log.info("serving other users' encfs commands at %s", self.path)

    def stop(self) -> None:
        if self.listener is None:
            return
        self.listener.close()
        self.path.unlink(missing_ok=True)

    def _accept(self) -> None:
        assert self.listener is not None
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return  # closed: the mount stops
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        fds: list[int] = []
        try:
            who = peer_credentials(connection)
            request, fds = receive_request(connection)
            status = self._run(connection, who, request, fds)
            with contextlib.suppress(OSError):  # the caller may have gone
                connection.sendall(STATUS.pack(status))
        except Exception:
            log.exception("serving a command for another user failed")
        finally:
            for fd in fds:
                os.close(fd)
            connection.close()

    def _run(self, connection: socket.socket, who: Credentials, request: dict[str, Any],
             fds: list[int]) -> int:
        argv = [str(arg) for arg in request.get("argv", [])]
        if len(fds) < 3:
            return 1
        stdio, passed = fds[:3], fds[3:]
        command = next((arg for arg in argv if not arg.startswith("-")), "")
        if command not in REMOTE_COMMANDS:
            os.write(fds[2], f"encfs: encfs {command or ' '.join(argv)} is only for the store's owner "
                             "(root), not run for other users through a mount\n".encode(errors="replace"))
            return 1
        cwd = str(request.get("cwd", "/"))
        env = {**os.environ, "ENCFS_STORE": str(self.store_path), CALLER_ENV: json.dumps(
            {"uid": who.uid, "gid": who.gid, "groups": sorted(who.groups)}),
            FILES_ENV: json.dumps(passed_files(request.get("files"), passed) if command == "upload" else {})}
        log.info("running encfs %s for uid %d", command, who.uid)
        child = subprocess.Popen([sys.executable, "-m", "encfs", *argv], stdin=stdio[0], stdout=stdio[1],
                                 stderr=stdio[2], cwd=cwd if os.path.isdir(cwd) else "/", env=env,
                                 start_new_session=True, pass_fds=passed if command == "upload" else ())
        while child.poll() is None:
            ready, _, _ = select.select([connection], [], [], 0.2)
            if ready and not connection.recv(1, socket.MSG_PEEK):  # the caller went away
                child.terminate()
                child.wait()
        return child.returncode


def passed_files(names: Any, passed: list[int]) -> dict[str, int]:
    """The local files an upload's command passed: the argument it named each by ->
    the descriptor (a regular file the caller opened), as the child will have it."""
    if not isinstance(names, list) or len(names) != len(passed):
        return {}
    return {str(Path(str(name))): fd for name, fd in zip(names, passed, strict=True)
            if stat.S_ISREG(os.fstat(fd).st_mode)}


def remove_stale_sockets() -> None:
    """Sockets left by daemons that were killed: nobody listens on them any more."""
    for path in RUN_DIR.glob("*.sock"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.setblocking(False)  # a hung daemon's full backlog answers EAGAIN at once, not never
            try:
                probe.connect(str(path))
            except ConnectionRefusedError:
                path.unlink(missing_ok=True)
            except OSError:
                pass


def peer_credentials(connection: socket.socket) -> Credentials:
    """Who is at the other end, as the kernel says (not as the request says)."""
    raw = connection.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    try:
        packed = connection.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 1024)
        groups = frozenset(array.array("I", packed))
    except OSError:
        groups = groups_of_process(pid)
    return Credentials(uid, gid, groups)


def receive_request(connection: socket.socket) -> tuple[dict[str, Any], list[int]]:
    fds = array.array("i")
    data, ancillary, _flags, _ = connection.recvmsg(MAX_REQUEST,
                                                    socket.CMSG_SPACE((3 + MAX_FILES) * fds.itemsize))
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    received = list(fds)
    if len(data) < HEADER.size:
        return {}, received
    (size,) = HEADER.unpack(data[: HEADER.size])
    body = data[HEADER.size :]
    while len(body) < min(size, MAX_REQUEST):
        more = connection.recv(size - len(body))
        if not more:
            break
        body += more
    try:
        request = json.loads(body.decode())
    except ValueError:
        request = {}
    return request if isinstance(request, dict) else {}, received


# ---------------------------------------------------------------- in the child the daemon runs


def caller() -> Credentials | None:
    """The user this process runs a command for (set by a root mount's daemon only)."""
    text = os.environ.get(CALLER_ENV)
    if not text or os.geteuid() != 0:
        return None
    fields = json.loads(text)
    return Credentials(int(fields["uid"]), int(fields["gid"]), frozenset(int(g) for g in fields["groups"]))


def caller_files(files: tuple[Path, ...]) -> tuple[Path, ...]:
    """The local files of an `upload` run for a caller: each the descriptor the caller's
    command opened, under its own name (a link, in a folder only root may enter, to
    /proc/self/fd/N). A file the caller did not pass (a folder, say) is refused: nothing
    is read with the daemon's rights."""
    if caller() is None:
        return files
    import atexit
    import shutil
    import tempfile

    from encfs.errors import NotFound

    passed = json.loads(os.environ.get(FILES_ENV) or "{}")
    missing = [str(local) for local in files if str(local) not in passed]
    if missing:
        raise NotFound("not local files: " + ", ".join(missing))
    place = Path(tempfile.mkdtemp(prefix="encfs-upload-"))
    atexit.register(shutil.rmtree, place, True)
    reached = []
    for number, local in enumerate(files):
        (place / str(number)).mkdir()
        link = place / str(number) / local.name
        link.symlink_to(f"/proc/self/fd/{passed[str(local)]}")
        _passed_links.add(link)
        reached.append(link)
    return tuple(reached)


def passed_by_caller(source: Path) -> bool:
    """Whether `source` is a file the caller's command passed (not a path of the daemon's)."""
    return Path(source) in _passed_links


def act_for_caller() -> None:
    who = caller()
    if who is not None:
        act_for(Actor.from_ids(who.uid, who.gid))


def gated(service: Any) -> Any:
    """The service as the caller may use it (unchanged for the store's owner)."""
    from encfs.caller_gate import CallerGate

    who = caller()
    return service if who is None or who.is_root else CallerGate(service, who)


# ---------------------------------------------------------------- in a non-root user's encfs


@dataclass(frozen=True)
class RunningMount:
    mountpoint: Path
    store: Path

    @property
    def socket(self) -> Path:
        return socket_path(self.mountpoint)


def running_mounts() -> list[RunningMount]:
    """encfs mounts on this machine whose daemon serves other users' commands."""
    from encfs.fs.connection import unescape

    found = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            before, _, after = line.partition(" - ")
            fields, tail = before.split(), after.split()
            if len(fields) > 4 and len(tail) > 1 and tail[0] == "fuse.encfs" and tail[1].startswith("encfs:"):
                mount = RunningMount(Path(unescape(fields[4])), Path(unescape(tail[1][len("encfs:") :])))
                if _served_by_root(mount.socket):
                    found.append(mount)
    return found


def _served_by_root(path: Path) -> bool:
    try:
        info = path.lstat()
    except OSError:
        return False
    return info.st_uid == 0 and stat.S_ISSOCK(info.st_mode)


def mount_for(argv: list[str]) -> RunningMount | None:
    """The mount to send this command to, or None to run it here (root, a store this
    user can open, a command that is not for another user's store)."""
    if os.geteuid() == 0 or caller() is not None:
        return None
    command = next((arg for arg in argv if not arg.startswith("-")), "")
    if not command or command == "umount" or "--help" in argv or "--version" in argv:
        return None
    explicit = _store_given(argv)
    if explicit is not None:
        if _can_open(explicit):
            return None
        if command in LOCAL_COMMANDS:
            raise StoreError(f"the store {explicit} belongs to another user: encfs {command} is only for the "
                             "store's owner")
        return _mount_of(explicit)
    if command in LOCAL_COMMANDS:
        return None
    if os.access(_default_store() / "encfs-store.json", os.R_OK):
        return None
    mounts = running_mounts()
    inside = [m for m in mounts if any(_is_inside(arg, m.mountpoint) for arg in argv)]
    if len(inside) == 1 or len(mounts) == 1:
        return (inside or mounts)[0]
    if not mounts:
        return None  # the usual "no store here" message follows
    names = ", ".join(str(m.mountpoint) for m in mounts)
    raise StoreError(f"several encfs mounts are running ({names}); say which store with --store or "
                     "ENCFS_STORE")


def _default_store() -> Path:
    """store.default_store_path, without platformdirs (this side runs on the system's
    Python, which may lack encfs's packages)."""
    try:
        from encfs.store import default_store_path
    except ImportError:
        data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
        return Path(data) / "encfs" / "store"
    return default_store_path()


def _store_given(argv: list[str]) -> Path | None:
    for index, arg in enumerate(argv):
        if arg == "--store" and index + 1 < len(argv):
            return Path(argv[index + 1]).absolute()
        if arg.startswith("--store="):
            return Path(arg.split("=", 1)[1]).absolute()
    env = os.environ.get("ENCFS_STORE")
    return Path(env).expanduser().absolute() if env else None


def _can_open(store: Path) -> bool:
    """Whether this user's encfs should open the store itself: theirs, or not a store
    at all (the usual message follows). Root's store is in a folder only root enters."""
    try:
        os.stat(store)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    marker = store / "encfs-store.json"
    if not os.access(store, os.R_OK | os.X_OK):
        return False
    return os.access(marker, os.R_OK) or not os.path.lexists(marker)


def _is_inside(arg: str, mountpoint: Path) -> bool:
    absolute = os.path.abspath(arg)
    return absolute == str(mountpoint) or absolute.startswith(str(mountpoint).rstrip("/") + "/")


def _mount_of(store: Path) -> RunningMount:
    wanted = {os.path.normpath(store), os.path.realpath(store)}
    for mount in running_mounts():
        if os.path.normpath(mount.store) in wanted:
            return mount
    raise StoreError(f"cannot open the store {store}: Permission denied (it belongs to another user), and "
                     "no mount of it is running; ask its owner to mount it (a root mount serves every user)")


def forward_if_needed(argv: list[str]) -> None:
    """Run the command through a mount and exit with its status, if it is for one.
    Needs only the standard library: a user's Python may lack encfs's packages."""
    try:
        through = mount_for(argv)
        if through is None:
            return
        status = run_through(through, argv)
    except StoreError as exc:
        print(f"encfs: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    sys.exit(status)


def upload_files(argv: list[str]) -> list[str]:
    """The local files an `encfs upload FOLDER FILES…` names (its arguments after the
    folder; --store takes a value)."""
    positional, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--store":
            skip = True
        elif not arg.startswith("-"):
            positional.append(arg)
    return positional[2:] if positional[:1] == ["upload"] else []


def open_files(names: list[str]) -> list[int]:
    """Open the files as this user (their rights decide); a refusal stops the command."""
    if len(names) > MAX_FILES:
        raise StoreError(f"upload through a mount takes at most {MAX_FILES} files at a time")
    opened: list[int] = []
    try:
        for name in names:
            opened.append(os.open(name, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        for fd in opened:
            os.close(fd)
        raise StoreError(f"cannot read {name}: {exc.strerror}") from None
    return opened


def run_through(mount: RunningMount, argv: list[str]) -> int:
    """Send the command to the mount's daemon; its output appears here; its status."""
    names = upload_files(argv)
    files = open_files(names)
    request = json.dumps({"argv": argv, "cwd": os.getcwd(), "files": names}).encode()
    try:
        return _send(mount, request, files)
    finally:
        for fd in files:
            os.close(fd)


def _send(mount: RunningMount, request: bytes, files: list[int]) -> int:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        try:
            connection.connect(str(mount.socket))
        except OSError as exc:
            raise StoreError(f"cannot reach the encfs mount at {mount.mountpoint}: {exc.strerror}") from None
        fds = array.array("i", [sys.stdin.fileno(), sys.stdout.fileno(), sys.stderr.fileno(), *files])
        sys.stdout.flush()
        connection.sendmsg([HEADER.pack(len(request)) + request],
                           [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
        reply = b""
        while len(reply) < STATUS.size:
            more = connection.recv(STATUS.size - len(reply))
            if not more:
                raise StoreError(f"the encfs mount at {mount.mountpoint} stopped before the command finished")
            reply += more
    return STATUS.unpack(reply)[0]
