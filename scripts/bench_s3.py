"""The bucket figures of scripts/bench (`--s3`, or `--only-s3`): a store whose blobs are
in a bucket of a SeaweedFS server the bench starts and stops itself (tests/seaweed.py's
class), with JuiceFS (SQLite metadata, the same bucket) as a second column in notes.

 S1. write of one big file (1 MiB writes) and close, through the     MB/s  >= 0.6 x boto3
     mount: close returns once the content is in the bucket;
     against boto3 `upload_file` (multipart, its default threads)
     of the same bytes from a local file
 S2. cold sequential read of it through the mount (the store's      MB/s  >= 0.8 x boto3
     cache emptied, the mount restarted, page cache dropped), 1 MiB
     reads; against boto3 `get_object` of the same object streamed
     to /dev/null (median of 2, the sides taking turns)
 S3. the same read warm: its bytes in the store's local cache,       MB/s  >= 0.7 x disk
     page cache dropped; against the same bytes in a file on the
     local disk, page cache dropped (median of 2, taking turns)

 S4. `encfs import` (a subprocess) of a spec of 10,000 objects      seconds  < 20 s
     with their metadata given (nothing is read)
 S5. the same of 10,000 small JPEGs in the bucket, probed by ranged   seconds  < 120 s
     reads of their headers
 S6. `ls -l` of a folder of 100,000 imported files, cold, through   entries/s  >= 0.3 x disk
     the mount, against 100,000 empty files in a plain directory on
     the disk (an imported file's metadata is local: listing never
     asks the bucket)

JuiceFS: `juicefs format --storage minio` on the same bucket (its own prefix), SQLite
metadata, mounted in the foreground with a local cache big enough for the file; the
same write + close, cold read (its cache emptied and the mount restarted) and warm read.

Each encfs mount gets SETTLE_SECONDS after it is up before it is measured: a mount
imports boto3 and makes its client in the background as it starts (a second of CPU),
which is start-up, not reading. S4-S6 use a store of their own (local blobs) with an
integration to the same bucket. --quick: 2,000 / 2,000 / 20,000 entries.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

MiB = 1 << 20
MB = 1_000_000
BUCKET = "bench"
READS = 2
SETTLE_SECONDS = 3.0


def rate(size: int, seconds: float) -> float:
    return size / MB / seconds


def write_through(source: Path, target: Path) -> tuple[float, float]:
    """Seconds to copy `source` into `target` in 1 MiB writes, close included, and
    seconds of the close alone."""
    started = time.perf_counter()
    with open(source, "rb", buffering=0) as src:
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            while chunk := src.read(MiB):
                os.write(fd, chunk)
        finally:
            closing = time.perf_counter()
            os.close(fd)
    ended = time.perf_counter()
    return ended - started, ended - closing


def read_all(path: Path) -> float:
    started = time.perf_counter()
    with open(path, "rb", buffering=0) as src:
        while src.read(MiB):
            pass
    return time.perf_counter() - started


def boto3_get(client, key: str) -> float:
    started = time.perf_counter()
    body = client.get_object(Bucket=BUCKET, Key=key)["Body"]
    with open(os.devnull, "wb") as null:
        while chunk := body.read(MiB):
            null.write(chunk)
    return time.perf_counter() - started


def boto3_put(client, source: Path, key: str) -> float:
    started = time.perf_counter()
    client.upload_file(str(source), BUCKET, key)
    return time.perf_counter() - started


class JuiceFS:
    """A JuiceFS volume on the same bucket, mounted in the foreground by its own pid."""

    def __init__(self, base: Path, server) -> None:
        self.base, self.server = base, server
        self.meta = f"sqlite3://{base / 'jfs.db'}"
        self.mnt, self.cache = base / "jfs-mnt", base / "jfs-cache"
        self.process: subprocess.Popen | None = None

    def format(self) -> None:
        env = self.server.env()
        subprocess.run(["juicefs", "format", "--storage", "minio",
                        "--bucket", f"{self.server.endpoint}/{BUCKET}",
                        "--access-key", env["AWS_ACCESS_KEY_ID"],
                        "--secret-key", env["AWS_SECRET_ACCESS_KEY"],
                        "--trash-days", "0", "--no-update", self.meta, "jfs"],
                       check=True, capture_output=True)

    def mount(self, size: int) -> Path:
        self.mnt.mkdir(exist_ok=True)
        log = open(self.base / "jfs-mount.out", "ab")  # noqa: SIM115 - the daemon holds it
        self.process = subprocess.Popen(
            ["juicefs", "mount", self.meta, str(self.mnt), "--cache-dir", str(self.cache),
             "--cache-size", str(2 * size // MiB + 1024), "--no-usage-report", "--no-bgjob"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 30
        while not os.path.ismount(self.mnt):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.unmount()
                output = (self.base / "jfs-mount.out").read_text()[-2000:]
                raise RuntimeError(f"juicefs did not mount: {output}")
            time.sleep(0.05)
        return self.mnt

    def unmount(self) -> None:
        if os.path.ismount(self.mnt):
            done = subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True)
            if done.returncode != 0:
                subprocess.run(["fusermount3", "-uz", str(self.mnt)], capture_output=True)
        process, self.process = self.process, None
        if process is not None:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


def run_s3(run, b: ModuleType) -> None:
    """Measure S1-S3 into `run` (the bench's Run), with the bench module's helpers `b`."""
    sys.path.insert(0, str(b.REPO / "tests"))
    from encfs.blobs.s3 import BucketPlace
    from encfs.store import BucketBlobs, init_store

    from seaweed import SeaweedS3

    size = run.sizes.big_file
    base = run.base / "s3"
    base.mkdir()
    server = SeaweedS3(base / "seaweed")
    server.start()
    saved_env = {name: os.environ.get(name) for name in server.env()}
    os.environ.update(server.env())  # the mount (a subprocess) and boto3 take the standard chain
    juicefs = JuiceFS(base, server)
    try:
        server.make_bucket(BUCKET)
        client = server.client()
        source = base / "source.bin"
        with open(source, "wb") as out:
            for _ in range(size // MiB):
                out.write(os.urandom(MiB))
        store = base / "store"
        cache = 2 * size + (256 << 20)
        init_store(store, bucket=BucketBlobs(BucketPlace.parse(f"s3://{BUCKET}/encfs"), cache))
        print(f"\nbucket figures: SeaweedFS {server.endpoint}, bucket {BUCKET}; {size // MiB} MiB file",
              flush=True)
        measure(run, b, store, base, source, client, juicefs, size)
        measure_imports(run, b, server, base, client)
    finally:
        juicefs.unmount()
        server.stop()
        for name, value in saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def measure(run, b: ModuleType, store: Path, base: Path, source: Path, client, juicefs: JuiceFS,
            size: int) -> None:
    mnt = base / "mnt"
    mount = b.start_mount(store, mnt)
    time.sleep(SETTLE_SECONDS)
    try:
        (mnt / "bench").mkdir()
        b.drop_caches()
        encfs_write, encfs_close = write_through(source, mnt / "bench" / "big.bin")
    finally:
        b.stop_mount(mount)
    b.drop_caches()
    boto_write = boto3_put(client, source, "plain/big.bin")
    [key] = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="encfs/")["Contents"]
             if o["Size"] == size]

    juicefs.format()
    jmnt = juicefs.mount(size)
    b.drop_caches()
    jfs_write, jfs_close = write_through(source, jmnt / "big.bin")

    cold: dict[str, list[float]] = {"encfs": [], "boto3": [], "juicefs": []}
    warm: dict[str, list[float]] = {"encfs": [], "disk": [], "juicefs": []}
    for _ in range(READS):
        juicefs.unmount()
        shutil.rmtree(juicefs.cache, ignore_errors=True)
        shutil.rmtree(store / "cache", ignore_errors=True)
        mnt.rmdir()
        mount = b.start_mount(store, mnt)
        time.sleep(SETTLE_SECONDS)
        try:
            b.drop_caches()
            cold["encfs"].append(read_all(mnt / "bench" / "big.bin"))
            time.sleep(1)  # the cache's writes behind the reader settle
            b.drop_caches()
            warm["encfs"].append(read_all(mnt / "bench" / "big.bin"))
        finally:
            b.stop_mount(mount)
        b.drop_caches()
        cold["boto3"].append(boto3_get(client, key))
        b.drop_caches()
        warm["disk"].append(read_all(source))
        jmnt = juicefs.mount(size)
        b.drop_caches()
        cold["juicefs"].append(read_all(jmnt / "big.bin"))
        time.sleep(1)
        b.drop_caches()
        warm["juicefs"].append(read_all(jmnt / "big.bin"))
    juicefs.unmount()

    def rates(runs: dict[str, list[float]]) -> dict[str, list[float]]:
        return {side: [rate(size, t) for t in times] for side, times in runs.items()}

    def median_rate(times: list[float]) -> float:
        return rate(size, statistics.median(times))

    def jfs_note(value: float, baseline: float, name: str) -> str:
        return f"JuiceFS (SQLite metadata, same bucket): {value:,.0f} MB/s ({value / baseline:.2f} x {name})"

    write = b.Figure("S3 write + close (bucket store)", "MB/s", rate(size, encfs_write),
                     rate(size, boto_write), b.Target(min_ratio=0.6, baseline="boto3"),
                     note=jfs_note(rate(size, jfs_write), rate(size, boto_write), "boto3")
                     + f"; the disk column is boto3 upload_file; the close alone took {encfs_close:.2f} s "
                     f"(JuiceFS {jfs_close:.2f} s)")
    cold_figure = b.Figure("S3 cold sequential read", "MB/s", median_rate(cold["encfs"]),
                           median_rate(cold["boto3"]), b.Target(min_ratio=0.8, baseline="boto3"),
                           note=jfs_note(median_rate(cold["juicefs"]), median_rate(cold["boto3"]), "boto3")
                           + f"; the disk column is boto3 get_object; {b.runs_note(rates(cold))}")
    warm_figure = b.Figure("S3 warm read (local cache)", "MB/s", median_rate(warm["encfs"]),
                           median_rate(warm["disk"]), b.Target(min_ratio=0.7),
                           note=jfs_note(median_rate(warm["juicefs"]), median_rate(warm["disk"]), "disk")
                           + f"; page cache dropped before each; {b.runs_note(rates(warm))}")
    for figure in (write, cold_figure, warm_figure):
        run.add(figure)


# ----------------------------------------------------------------- S4-S6: import by reference


def encfs_command(b: ModuleType, store: Path, *args: str) -> float:
    """Seconds an encfs command (a subprocess, this checkout's code) took; it must succeed."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "encfs", *args, "--store", str(store)], cwd=b.REPO,
                          capture_output=True, text=True)
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"encfs {' '.join(args)} failed: {done.stderr[-2000:]}")
    return took


def small_jpeg() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 30, 200)).save(out, format="JPEG")
    return out.getvalue()


def measure_imports(run, b: ModuleType, server, base: Path, client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    given_count = probed_count = run.sizes.small_files
    listed_count = 10 * run.sizes.small_files
    store = base / "import-store"
    encfs_command(b, store, "init")
    encfs_command(b, store, "integration", "add", "bench", f"s3://{BUCKET}")
    for folder in ("/given", "/probed", "/listed"):
        encfs_command(b, store, "folder", "create", folder)

    given = [{"objectUrl": f"s3://{BUCKET}/given/{n:06d}.jpg", "imageMetadata": {
        "mimeType": "image/jpeg", "fileSize": 1000 + n, "width": 640, "height": 480}}
        for n in range(given_count)]
    (base / "given.json").write_text(json.dumps({"images": given}))
    took = encfs_command(b, store, "import", "/given", str(base / "given.json"), "--integration", "bench")
    run.add(b.Figure(f"import {given_count:,}, metadata given", "s", took, None,
                     b.Target(max_value=20), higher_is_better=False))

    body = small_jpeg()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: client.put_object(Bucket=BUCKET, Key=f"probed/{n:06d}.jpg", Body=body),
                      range(probed_count)))
    probed = [{"objectUrl": f"s3://{BUCKET}/probed/{n:06d}.jpg"} for n in range(probed_count)]
    (base / "probed.json").write_text(json.dumps({"images": probed}))
    load = os.getloadavg()[0]
    took = encfs_command(b, store, "import", "/probed", str(base / "probed.json"), "--integration", "bench")
    run.add(b.Figure(f"import {probed_count:,}, probed", "s", took, None, b.Target(max_value=120),
                     higher_is_better=False,
                     note=f"one ranged GET of each object's first 64 KiB, 16 in parallel; load {load:.1f} "
                     "before"))

    many = [{"objectUrl": f"s3://{BUCKET}/many/{n:07d}.jpg", "imageMetadata": {"fileSize": 1000}}
            for n in range(listed_count)]
    (base / "many.json").write_text(json.dumps({"images": many}))
    took = encfs_command(b, store, "import", "/listed", str(base / "many.json"), "--integration", "bench")
    plain = base / "plain-listed"
    plain.mkdir()
    for n in range(listed_count):
        (plain / f"{n:07d}.jpg").touch()
    mnt = base / "import-mnt"
    mount = b.start_mount(store, mnt)
    try:
        time.sleep(SETTLE_SECONDS)
        on_disk, _ = b.timed_command(["ls", "-l", str(plain)], cold=True)
        on_mount, listing = b.timed_command(["ls", "-l", str(mnt / "listed")], cold=True)
    finally:
        b.stop_mount(mount)
    lines = listing.count(b"\n") - 1  # the "total" line
    if lines != listed_count:
        raise RuntimeError(f"ls -l of the imported folder listed {lines} entries, expected {listed_count}")
    run.add(b.Figure(f"ls -l of {listed_count:,} imported files", "entries/s", listed_count / on_mount,
                     listed_count / on_disk, b.Target(min_ratio=0.3),
                     note=f"cold (page cache dropped); the {listed_count:,} entries were imported with "
                     f"metadata given in {took:.1f} s"))
