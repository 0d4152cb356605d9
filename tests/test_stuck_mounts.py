"""A mount whose daemon died or hangs: `encfs umount` still frees the mount point,
and the daemon's watchdog logs a request that is not answered in time."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import lmdb
import pytest

from encfs.fs import connection
from encfs.remote import RUN_DIR

from conftest import Mounted, in_mount_table, start_mount, stop_mount

UMOUNT_BOUND = 60.0


def encfs_umount(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "encfs", "umount", str(path)], capture_output=True,
                          text=True, timeout=UMOUNT_BOUND)


def test_umount_of_a_mount_whose_daemon_was_killed(store: Path, tmp_path: Path) -> None:
    mounted = start_mount(store, tmp_path / "mnt")
    try:
        mounted.process.kill()  # not waited for: a thread caught in the kernel can keep it from going
        done = encfs_umount(mounted.path)
        mounted.process.wait(timeout=10)
        assert done.returncode == 0, done.stderr
        assert "unmounted" in done.stdout and "Traceback" not in done.stderr
        assert not in_mount_table(mounted.path)
        assert os.listdir(mounted.path) == []
    finally:
        stop_mount(mounted)


def test_umount_of_a_mount_whose_daemon_hangs(store: Path, tmp_path: Path) -> None:
    mounted = start_mount(store, tmp_path / "mnt")
    (mounted / "kept").mkdir()
    os.kill(mounted.process.pid, signal.SIGSTOP)
    blocked = subprocess.Popen(["ls", "-l", str(mounted / "kept")], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)  # waits for the daemon, keeping the mount busy
    try:
        time.sleep(0.5)
        assert blocked.poll() is None
        started = time.monotonic()
        done = encfs_umount(mounted.path)
        assert done.returncode == 0, done.stderr
        assert "did not answer" in done.stderr and "Traceback" not in done.stderr
        assert time.monotonic() - started < UMOUNT_BOUND
        assert not in_mount_table(mounted.path)
        assert os.listdir(mounted.path) == []  # the mount point is free again
        assert blocked.wait(timeout=10) != 0  # and the waiting caller got an error
    finally:
        blocked.kill()
        blocked.wait()
        os.kill(mounted.process.pid, signal.SIGCONT)
        mounted.process.kill()
        mounted.process.wait(timeout=10)
        stop_mount(mounted)
        if in_mount_table(mounted.path):
            subprocess.run(["fusermount3", "-uz", str(mounted.path)], capture_output=True)
    remounted = start_mount(store, tmp_path / "mnt")
    try:
        assert os.listdir(remounted.path) == ["kept"]
    finally:
        stop_mount(remounted)


def test_umount_of_a_healthy_mount_in_use_is_refused(mount: Mounted) -> None:
    (mount / "folder").mkdir()
    holder = subprocess.Popen(["sleep", "60"], cwd=mount / "folder")
    try:
        done = encfs_umount(mount.path)
        assert done.returncode == 1
        assert "could not unmount" in done.stderr and "Traceback" not in done.stderr
        assert (mount / "folder").is_dir()  # still served
    finally:
        holder.kill()
        holder.wait()


def test_umount_of_a_path_that_is_not_mounted(tmp_path: Path) -> None:
    done = encfs_umount(tmp_path)
    assert done.returncode == 1 and "is not mounted" in done.stderr


def test_a_request_not_answered_in_time_is_logged(store: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Another process holds the store's write lock (a long CLI change would): a
    mkdir through the mount waits for it, and the watchdog logs it with its path."""
    monkeypatch.setenv("ENCFS_REQUEST_SECONDS", "1")
    mounted = start_mount(store, tmp_path / "mnt")
    try:
        environment = lmdb.open(str(store / "meta.lmdb"), max_dbs=64, subdir=True)
        made: list[str] = []
        with environment.begin(write=True):
            maker = threading.Thread(target=lambda: made.append(str(os.mkdir(mounted / "waiting"))))
            maker.start()
            time.sleep(4)
        maker.join(timeout=30)
        environment.close()
        assert made, "the mkdir never finished"
        log = (store / "log" / "encfs.log").read_text()
        assert "not answered after" in log and "mkdir" in log and "/waiting" in log
    finally:
        stop_mount(mounted)


def test_a_daemon_with_a_stuck_request_still_stops_on_sigterm(store: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A request that cannot finish (it waits for the store's write lock, held here)
    does not keep the daemon alive after SIGTERM, nor its caller blocked."""
    monkeypatch.setenv("ENCFS_REQUEST_SECONDS", "1")
    mounted = start_mount(store, tmp_path / "mnt")
    environment = lmdb.open(str(store / "meta.lmdb"), max_dbs=64, subdir=True)
    caller = None
    try:
        with environment.begin(write=True):
            caller = subprocess.Popen([sys.executable, "-c", f"import os; os.mkdir({str(mounted / 'x')!r})"],
                                      stderr=subprocess.PIPE, text=True)
            time.sleep(1)
            mounted.process.terminate()
            mounted.process.wait(timeout=UMOUNT_BOUND)
            assert caller.wait(timeout=UMOUNT_BOUND) != 0
        log = (store / "log" / "encfs.log").read_text()
        assert "did not stop when asked" in log
    finally:
        if caller is not None and caller.poll() is None:
            caller.kill()
            caller.wait()
        environment.close()
        stop_mount(mounted)


RENAMER = """
import os, sys, time
end = time.monotonic() + 90
while time.monotonic() < end:
    try:
        os.rename(sys.argv[1], sys.argv[1])
    except FileNotFoundError:
        pass
"""
REPLACER = """
import os, sys, time
folder, end, i = sys.argv[1], time.monotonic() + 90, 0
while time.monotonic() < end and not os.path.exists(sys.argv[2]):
    os.rename(f"{folder}/s", f"{folder}/o{i}")
    os.mkdir(f"{folder}/s")
    os.rmdir(f"{folder}/o{i}")
    i += 1
"""


def test_a_request_stuck_inside_libfuse_is_logged_and_umount_frees_it(
        store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadlock the rename guard prevents, let through on purpose: libfuse's own
    path locks hold a rename for ever, so encfs never sees the request. The watchdog
    still logs it (from the kernel's count of unanswered requests), and `encfs
    umount` frees the mount and its blocked caller."""
    monkeypatch.setenv("ENCFS_REQUEST_SECONDS", "1")
    monkeypatch.setenv("ENCFS_RENAME_GUARD", "off")
    m1 = start_mount(store, tmp_path / "m1")
    monkeypatch.delenv("ENCFS_RENAME_GUARD")
    m2 = start_mount(store, tmp_path / "m2")
    stop_replacing = tmp_path / "stop"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        (m1 / "A" / "s").mkdir(parents=True)
        workers.append(subprocess.Popen([sys.executable, "-c", RENAMER, str(m1 / "A" / "s")]))
        workers.append(subprocess.Popen([sys.executable, "-c", REPLACER, str(m2 / "A"), str(stop_replacing)]))
        log_file, deadline = store / "log" / "encfs.log", time.monotonic() + 80
        while "stuck inside libfuse" not in log_file.read_text() and time.monotonic() < deadline:
            time.sleep(0.5)
        stop_replacing.touch()
        assert "stuck inside libfuse" in log_file.read_text(), "the rename never hung, or the hang was silent"
        assert workers[0].poll() is None  # the renamer is blocked in the kernel
        done = encfs_umount(m1.path)
        assert done.returncode == 0, done.stderr
        assert not in_mount_table(m1.path)
        assert workers[0].wait(timeout=30) != 0  # freed: its rename failed
    finally:
        stop_replacing.touch()
        if any(worker.poll() is None for worker in workers):
            for mounted in (m1, m2):
                connection.abort(mounted.path)  # frees the blocked workers whatever happened
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait(timeout=30)
        m1.process.kill()
        stop_mount(m1)
        stop_mount(m2)


def test_a_socket_whose_daemon_never_answers_does_not_stop_a_new_mount(store: Path, tmp_path: Path) -> None:
    """A daemon that hangs (killed while one of its threads waits on its own mount)
    keeps its command socket listening with nobody taking connections. A new mount
    probes every socket at start to drop stale ones; it must not wait on that one."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    path = RUN_DIR / f"test-hung-{os.getpid()}.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    filler = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(path))
        listener.listen(0)
        filler.connect(str(path))  # the backlog is full: the next connect would wait for ever
        mounted = start_mount(store, tmp_path / "mnt")
        try:
            assert in_mount_table(mounted.path)
            assert path.exists()  # a socket that is not refused is not anyone's to remove
        finally:
            stop_mount(mounted)
    finally:
        filler.close()
        listener.close()
        path.unlink(missing_ok=True)
