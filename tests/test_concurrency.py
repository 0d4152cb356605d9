"""Several processes at once on one mount, as parallel copies and a DataLoader's
workers use it: every file whole, every name listed, nothing left behind."""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from conftest import Mounted, start_mount, stop_mount
from store_state import service_of, stored_bytes

WORKERS = 4
FILES_PER_WORKER = 120
STARTUP_SECONDS = 1.0  # long enough for every worker's interpreter to start

# Writes FILES_PER_WORKER files named w<worker>-<n>.bin, each a different size and
# content, and prints nothing: the test checks the bytes.
WRITER = """
import os, sys
folder, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for n in range(count):
    body = (f"{worker}:{n}:".encode() * 400)[: 1000 + 37 * n]
    with open(os.path.join(folder, f"w{worker}-{n:04d}.bin"), "wb") as f:
        f.write(body)
"""

# Reads every file of the folder, each worker starting at another place, and prints
# name and sha256.
READER = """
import hashlib, os, sys
folder, worker, workers = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
names = sorted(os.listdir(folder))
start = worker * len(names) // workers
for name in names[start:] + names[:start]:
    with open(os.path.join(folder, name), "rb") as f:
        print(name, hashlib.sha256(f.read()).hexdigest())
"""

# Appends lines of 100 bytes with O_APPEND, one write each.
APPENDER = """
import os, sys
path, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
for n in range(count):
    os.write(fd, f"{worker}-{n:05d}".encode().ljust(99, b".") + b"\\n")
os.close(fd)
"""


def expected_body(worker: int, n: int) -> bytes:
    return (f"{worker}:{n}:".encode() * 400)[: 1000 + 37 * n]


def run_all(script: str, argvs: list[list[str]]) -> list[str]:
    """Run one process per argv, all starting the script's work at one moment (once
    every interpreter is up), and wait for all; their outputs in order."""
    start = time.time() + STARTUP_SECONDS
    together = f"import time\ntime.sleep(max(0.0, {start} - time.time()))\n{script}"
    processes = [subprocess.Popen([sys.executable, "-c", together, *argv], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for argv in argvs]
    outputs = []
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        outputs.append(out)
    return outputs


def test_parallel_writers_into_one_folder_lose_nothing(mount: Mounted, folder: Path) -> None:
    run_all(WRITER, [[str(folder), str(w), str(FILES_PER_WORKER)] for w in range(WORKERS)])

    expected = {f"w{w}-{n:04d}.bin": expected_body(w, n)
                for w in range(WORKERS) for n in range(FILES_PER_WORKER)}
    assert sorted(os.listdir(folder)) == sorted(expected)
    for name, body in expected.items():
        assert (folder / name).read_bytes() == body, name
    for name in ("w0-0000.bin", f"w{WORKERS - 1}-{FILES_PER_WORKER - 1:04d}.bin"):
        assert stored_bytes(mount.store, f"/data/{name}") == expected[name]
    with service_of(mount.store) as service:
        assert len(list(service.blobs.list())) == len(expected)  # every body differs
    assert os.listdir(mount.store / "spool") == []


def test_parallel_readers_all_read_every_file_whole(mount: Mounted, folder: Path) -> None:
    bodies = {f"img{n:04d}.bin": os.urandom(20_000 + n) for n in range(300)}
    for name, body in bodies.items():
        (folder / name).write_bytes(body)
    digests = {name: hashlib.sha256(body).hexdigest() for name, body in bodies.items()}

    outputs = run_all(READER, [[str(folder), str(w), str(WORKERS)] for w in range(WORKERS)])

    for out in outputs:
        seen = dict(line.split() for line in out.splitlines())
        assert seen == digests


def test_parallel_appends_to_one_file_keep_every_line_whole(mount: Mounted, folder: Path) -> None:
    path = folder / "shared.log"
    lines_each = 300
    run_all(APPENDER, [[str(path), str(w), str(lines_each)] for w in range(WORKERS)])

    content = path.read_bytes()
    lines = content.splitlines()
    assert len(content) == WORKERS * lines_each * 100
    assert all(len(line) == 99 for line in lines)
    for w in range(WORKERS):  # each writer's lines are all there, in its own order
        own = [line[:7].decode() for line in lines if line.startswith(f"{w}-".encode())]
        assert own == [f"{w}-{n:05d}" for n in range(lines_each)]
    assert stored_bytes(mount.store, "/data/shared.log") == content


# Writes its own 1 KiB region of a shared file with pwrite, without truncating it.
REGION_WRITER = """
import os, sys
path, worker = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_WRONLY)
for block in range(worker, 64, 4):
    os.pwrite(fd, bytes([65 + worker]) * 1024, block * 1024)
os.close(fd)
"""

# Tries to create each name exclusively, all workers starting at one moment; prints
# the names it won.
EXCLUSIVE_CREATOR = """
import os, sys
folder, tag, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
for n in range(count):
    try:
        fd = os.open(os.path.join(folder, f"race{n:03d}"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        continue
    os.write(fd, tag.encode())
    os.close(fd)
    print(n)
"""


def test_parallel_writers_of_disjoint_regions_of_one_file_all_land(mount: Mounted, folder: Path) -> None:
    path = folder / "shared.bin"
    path.write_bytes(bytes(64 * 1024))
    run_all(REGION_WRITER, [[str(path), str(w)] for w in range(WORKERS)])

    expected = b"".join(bytes([65 + block % 4]) * 1024 for block in range(64))
    assert path.read_bytes() == expected
    assert stored_bytes(mount.store, "/data/shared.bin") == expected


def test_exclusive_creates_of_one_name_on_two_mounts_have_one_winner(store: Path, mount_factory) -> None:
    first, second = mount_factory(store, "first"), mount_factory(store, "second")
    (first.path / "data").mkdir()
    names = 200
    argvs = [[str(mounted.path / "data"), f"{mounted.path.name}-{k}", str(names)]
             for mounted in (first, second) for k in range(2)]
    outputs = run_all(EXCLUSIVE_CREATOR, argvs)

    won = [sorted(int(n) for n in out.split()) for out in outputs]
    assert sorted(n for numbers in won for n in numbers) == list(range(names))  # each name once
    for n in range(names):
        winner = next(argvs[i][1] for i, numbers in enumerate(won) if n in numbers)
        assert stored_bytes(store, f"/data/race{n:03d}") == winner.encode()


def test_more_files_open_at_once_than_a_default_descriptor_limit(store: Path, tmp_path: Path) -> None:
    """Every file open through the mount holds a descriptor in the daemon: started with
    a low soft limit, it raises it, and 600 files open at once all read."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert hard >= 1024, f"this machine's hard limit on open files is {hard}"
    mounted = start_mount(store, tmp_path / "mnt-low-limit",
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard)))
    try:
        folder = mounted.path / "many"
        folder.mkdir()
        for n in range(600):
            (folder / f"f{n:03d}").write_bytes(b"%d" % n)
        descriptors = [os.open(folder / f"f{n:03d}", os.O_RDONLY) for n in range(600)]
        try:
            assert [os.pread(fd, 10, 0) for fd in descriptors] == [b"%d" % n for n in range(600)]
        finally:
            for fd in descriptors:
                os.close(fd)
    finally:
        stop_mount(mounted)
