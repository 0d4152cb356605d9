"""The access figures of scripts/bench (A1-A4): what folder access costs a user of a
multi-user mount, measured as real non-root Linux users the bench makes and removes.

One organisation store (it has users), with 1 KiB files in a folder eleven folders
deep (/B/l1/.../l9/small), is mounted for every Linux user (as root, the default).
Two users read and write the same files through it, one pass of a figure each in turn
(a forked process as the user), 20 passes after a warm-up pass; the figure is what all
passes did over the time they took:

  org admin    an org admin: admin of every folder by their role, no grant involved
               ("no grants": the baseline column)
  20 grants    a user whose role comes through grants on the path: viewer on /B through
               a group, editor on the files' folder itself, among 18 grants to others
               on the folders of the path (20 grants on the path in all)

Both pay what any user of a store with users pays: the kernel may not keep names (its
caches are shared by every Linux user), so each path component is a lookup the daemon
answers as the caller. Notes beside each figure: the same files in a store without users
(POSIX modes only: the kernel keeps names and attributes) read by the same Linux user,
and the organisation store through a mount that serves that user only (`encfs mount
--as`: it may keep names too).

 A1. stat of every file (warm)                                     stat/s     >= 0.9 x org admin
 A2. `ls -l` of the folder (a listing and a stat of each entry)    entries/s  >= 0.9 x org admin
 A3. 1 KiB files created (open, write, close)                      files/s    >= 0.9 x org admin
 A4. open + read of every file (warm)                              files/s    >= 0.9 x org admin
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from functools import partial
from pathlib import Path
from types import ModuleType

ROUNDS = 20  # passes of each figure and side, taking turns: what all passes did over the time they took
CREATES_PER_PASS = 20
LEVELS = 10
WHO = ("org admin", "20 grants", "no users", "--as")
FIGURES = (("stat", "A1 access: stat", "stat/s"), ("ls", "A2 access: ls -l", "entries/s"),
           ("create", "A3 access: create 1 KiB files", "files/s"),
           ("read", "A4 access: open+read warm", "files/s"))


def make_users(count: int) -> list[str]:
    names = []
    try:
        for _ in range(count):
            name = f"encfs-b-{uuid.uuid4().hex[:8]}"
            subprocess.run(["useradd", "--no-create-home", name], check=True, capture_output=True)
            names.append(name)
    except BaseException:
        remove_users(names)
        raise
    return names


def remove_users(names: list[str]) -> None:
    for name in names:
        subprocess.run(["userdel", name], capture_output=True)


def prepare(store_path: Path, admin: str, user: str, organised: bool, files: int) -> str:
    """The tree (and, `organised`, the users and the 20 grants); the files' folder."""
    from encfs.model import Actor
    from encfs.service import FilesService
    from encfs.store import init_store, open_store

    root = Actor.from_ids(0, 0)
    init_store(store_path)
    store = open_store(store_path)
    try:
        service = FilesService(store)
        access = service.access_admin
        folder = "/B"
        folders = [folder] + [folder := f"{folder}/l{level}" for level in range(1, LEVELS)]
        folders.append(f"{folders[-1]}/small")
        for path in folders:
            service.create_folder(root, path, mode=0o777)
        if organised:
            access.add_user(root, "admin@example.com", linux_user=admin, org_admin=True)
            access.add_user(root, "user@example.com", linux_user=user)
            for n in range(18):
                access.add_user(root, f"other{n}@example.com")
            access.add_group(root, "team")
            access.change_members(root, "team", add=["user@example.com"], remove=[])
            access.grant(root, "/B", "@team", "viewer")
            access.grant(root, folders[-1], "user@example.com", "editor")
            for n in range(18):
                access.grant(root, folders[n % LEVELS], f"other{n}@example.com", ("viewer", "editor")[n % 2])
        payload = Path(__file__)
        for n in range(files):
            service.upload(root, folders[-1], payload, name=f"f{n:05}.txt")
        service.sync()
    finally:
        store.close()
    return folders[-1]


def measure(where: Path, figure: str, creates: int, label: str) -> list[float]:
    """One pass of one of A1-A4 in the calling process (which runs as the Linux user
    measured): [how many, seconds]."""
    names = sorted(name for name in os.listdir(where) if name.startswith("f"))
    started = time.perf_counter()
    if figure == "stat":
        for name in names:
            os.stat(where / name)
        return [len(names), time.perf_counter() - started]
    if figure == "ls":
        count = 0
        with os.scandir(where) as entries:
            for entry in entries:
                entry.stat()
                count += 1
        return [count, time.perf_counter() - started]
    if figure == "create":
        for n in range(creates):
            with open(where / f"new-{label}-{n:05}", "wb") as out:
                out.write(b"x" * 1024)
        return [creates, time.perf_counter() - started]
    for name in names:
        (where / name).read_bytes()
    return [len(names), time.perf_counter() - started]


def start_as_mount(b: ModuleType, store: Path, mountpoint: Path) -> object:
    """A mount of the organisation store that serves user@example.com only."""
    mountpoint.mkdir()
    log = mountpoint.parent / "mount-as.out"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "encfs", "mount", "--foreground", "--store", str(store),
             "--as", "user@example.com", str(mountpoint)],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=b.REPO)
    mount = b.Mount(mountpoint, process, log)
    deadline = time.monotonic() + b.MOUNT_TIMEOUT
    while not os.path.ismount(mountpoint):
        if process.poll() is not None or time.monotonic() > deadline:
            b.stop_mount(mount)
            raise RuntimeError(f"the --as mount did not come up:\n{mount.output()}")
        time.sleep(0.02)
    return mount


def run_access(run, b: ModuleType, rounds: int = ROUNDS) -> None:
    """Measure A1-A4 into `run` (the bench's Run), with the bench module's helpers `b`."""
    sys.path.insert(0, str(b.REPO / "tests"))
    from access_users import as_user

    files = max(run.sizes.small_files // 20, 100)
    base = run.base / "access"
    base.mkdir()
    base.chmod(0o755)
    run.base.chmod(0o755)
    admin, user = make_users(2)
    mounts: list = []
    try:
        org_store, plain_store = base / "org-store", base / "plain-store"
        folder = prepare(org_store, admin, user, True, files)
        prepare(plain_store, admin, user, False, files)
        org = b.start_mount(org_store, base / "org-mnt")
        mounts.append(org)
        plain = b.start_mount(plain_store, base / "plain-mnt")
        mounts.append(plain)
        served = start_as_mount(b, org_store, base / "as-mnt")
        mounts.append(served)
        sides: dict[str, tuple[str, Path]] = {
            "org admin": (admin, org.path), "20 grants": (user, org.path),
            "no users": (user, plain.path), "--as": (user, served.path)}
        print(f"\naccess figures: {files} files {LEVELS + 1} folders deep, {rounds} passes; {b.load()}",
              flush=True)
        results = {who: {figure: [0.0, 0.0] for figure, _, _ in FIGURES} for who in WHO}
        for number in range(rounds + 1):  # round 0 warms; the sides take turns at each figure, pass by pass
            for figure, _, _ in FIGURES:
                for who in WHO if number % 2 == 0 else reversed(WHO):  # neither side always first
                    linux_user, mounted = sides[who]
                    label = f"{who.replace(' ', '').replace('-', '')}{number}"
                    value = as_user(linux_user, partial(measure, mounted / folder.strip("/"), figure,
                                                        CREATES_PER_PASS, label))
                    if not isinstance(value, list):
                        raise RuntimeError(f"{who}, {figure}: the measurement failed ({value})")
                    if number:
                        results[who][figure][0] += value[0]
                        results[who][figure][1] += value[1]
        report(run, b, results)
    finally:
        for mount in reversed(mounts):
            b.stop_mount(mount)
        remove_users([admin, user])


def report(run, b: ModuleType, results: dict[str, dict[str, list[float]]]) -> None:
    rate = {who: {figure: count / seconds for figure, (count, seconds) in runs.items()}
            for who, runs in results.items()}
    for figure, name, unit in FIGURES:
        run.add(b.Figure(
            name, unit, rate["20 grants"][figure], rate["org admin"][figure],
            b.Target(min_ratio=0.9, baseline="org admin"),
            note=(f"no users (POSIX modes, names kept): {rate['no users'][figure]:,.0f} {unit}; "
                  f"the same user through `mount --as`: {rate['--as'][figure]:,.0f} {unit}")))
