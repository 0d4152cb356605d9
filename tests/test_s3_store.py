"""A store whose blobs live in a bucket (encfs init --blobs s3://…), through the mount
and the CLI, against the real SeaweedFS of the session: uploads, dedup, reads through
the local cache, deletes and gc, and the faults (server away during a read and a
close, an object changed behind the store's back, the cache's disk full)."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conftest import Mounted, stop_mount
from seaweed import READER, SeaweedS3

MiB = 1 << 20


def objects(seaweed: SeaweedS3, bucket: str) -> dict[str, int]:
    listed = seaweed.client().list_objects_v2(Bucket=bucket).get("Contents", [])
    return {item["Key"]: item["Size"] for item in listed}


def open_uploads(seaweed: SeaweedS3, bucket: str) -> list[str]:
    return [u["Key"] for u in seaweed.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])]


def written_and_read_after_remount(store: Path, mount_factory: Callable, name: str,
                                   content: bytes) -> Mounted:
    """Write /data/f.bin through a mount, mount the store again, and read it back
    there; returns the second mount."""
    mounted = mount_factory(store, name)
    (mounted / "data").mkdir()
    (mounted / "data" / "f.bin").write_bytes(content)
    stop_mount(mounted)
    mounted = mount_factory(store, name + "2")
    assert (mounted / "data" / "f.bin").read_bytes() == content
    return mounted


def wait_until(check: Callable[[], bool], timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.1)
    return check()


def encfs(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "encfs", *args], capture_output=True, text=True, timeout=120)


def readable(path: Path) -> bool:
    try:
        path.read_bytes()
        return True
    except OSError:
        return False


def store_log(store: Path) -> str:
    return (store / "log" / "encfs.log").read_text(errors="replace")


def payload(size: int, seed: int) -> bytes:
    block = os.urandom(MiB) if seed < 0 else bytes((seed + i) % 251 for i in range(MiB))
    return (block * (size // MiB + 1))[:size]


@pytest.fixture
def s3_mount(s3_store: Path, mount_factory: Callable[[Path, str], Mounted]) -> Mounted:
    return mount_factory(s3_store, "mnt")


@pytest.fixture
def remount(s3_store: Path, mount_factory: Callable[[Path, str], Mounted]) -> Iterator[Callable]:
    """Stop a mount and start the store again, its cache emptied unless `keep_cache`."""
    count = [0]

    def again(mounted: Mounted, keep_cache: bool = False) -> Mounted:
        stop_mount(mounted)
        if not keep_cache:
            shutil.rmtree(s3_store / "cache", ignore_errors=True)
        count[0] += 1
        return mount_factory(s3_store, f"mnt{count[0]}")

    yield again


# ----------------------------------------------------------------- init


def test_init_records_the_bucket_but_never_a_credential(seaweed: SeaweedS3, bucket: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    store = tmp_path / "s"
    done = encfs("init", "--store", str(store), "--blobs", f"s3://{bucket}/team/a", "--cache-size", "1GiB")
    assert done.returncode == 0, done.stderr
    recorded = json.loads((store / "encfs-store.json").read_text())["blobs"]
    assert recorded["url"] == f"s3://{bucket}/team/a" and recorded["cache_size"] == 1 << 30
    for path in store.rglob("*"):
        if path.is_file():
            assert seaweed.env()["AWS_SECRET_ACCESS_KEY"].encode() not in path.read_bytes(), path
    assert objects(seaweed, bucket) == {}  # the write check cleaned up after itself


@pytest.mark.parametrize("case", ["missing bucket", "wrong secret", "read-only identity", "not a URL"])
def test_init_refuses_a_bucket_it_cannot_use(case: str, seaweed: SeaweedS3, bucket: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    env = seaweed.env(READER if case == "read-only identity" else seaweed_writer())
    if case == "wrong secret":
        env["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    url = {"missing bucket": "s3://no-such-bucket-here/x", "not a URL": f"{bucket}/x"}.get(case, f"s3://{bucket}/x")
    store = tmp_path / "s"
    done = encfs("init", "--store", str(store), "--blobs", url)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    expected = {"missing bucket": "does not exist", "wrong secret": "wrong credentials",
                "read-only identity": "lack permission", "not a URL": "not a bucket URL"}[case]
    assert expected in done.stderr, done.stderr
    assert not store.exists() or not any(store.iterdir())


def seaweed_writer() -> tuple[str, str]:
    from seaweed import WRITER

    return WRITER


# ----------------------------------------------------------------- writing and reading


def test_files_go_to_the_bucket_deduplicated_and_read_back(
        s3_store: Path, s3_mount: Mounted, seaweed: SeaweedS3, bucket: str, remount: Callable) -> None:
    folder = s3_mount / "data"
    folder.mkdir()
    big, small = payload(20 * MiB, 1), b"a small file\n"
    (folder / "big.bin").write_bytes(big)
    (folder / "small.txt").write_bytes(small)
    stored = objects(seaweed, bucket)
    assert sorted(stored.values()) == [len(small), len(big)]  # in the bucket when close returned
    shutil.copyfile(folder / "big.bin", folder / "copy.bin")
    (folder / "again.bin").write_bytes(big)
    assert objects(seaweed, bucket) == stored  # the same content is stored once
    assert wait_until(lambda: not open_uploads(seaweed, bucket))  # the duplicate's upload was aborted
    assert not [p for p in s3_store.rglob("*") if p.is_file() and p.parts[-2] in ("spool", "blobs", "trash")]
    mounted = remount(s3_mount)
    for name in ("big.bin", "copy.bin", "again.bin"):
        assert (mounted / "data" / name).read_bytes() == big
    assert (mounted / "data" / "small.txt").read_bytes() == small


def test_a_big_file_goes_up_while_it_is_written(s3_mount: Mounted, seaweed: SeaweedS3, bucket: str) -> None:
    (s3_mount / "data").mkdir()
    content = payload(40 * MiB, 2)
    with open(s3_mount / "data" / "video.bin", "wb") as out:
        for start in range(0, len(content), MiB):
            out.write(content[start:start + MiB])
        out.flush()
        assert wait_until(lambda: bool(open_uploads(seaweed, bucket)), 10)  # parts went up before close
    assert list(objects(seaweed, bucket).values()) == [len(content)]
    assert (s3_mount / "data" / "video.bin").read_bytes() == content


def test_rewritten_and_appended_files_keep_the_right_content(s3_mount: Mounted, remount: Callable) -> None:
    (s3_mount / "data").mkdir()
    path = s3_mount / "data" / "f.bin"
    content = bytearray(payload(36 * MiB, 3))
    path.write_bytes(content)
    with open(path, "r+b") as out:  # a write behind parts already sent
        out.seek(MiB)
        out.write(b"X" * 100)
        out.seek(0, os.SEEK_END)
        out.write(b"tail")
    content[MiB:MiB + 100] = b"X" * 100
    content += b"tail"
    assert path.read_bytes() == content
    mounted = remount(s3_mount)
    assert (mounted / "data" / "f.bin").read_bytes() == content


def test_removing_a_file_deletes_its_object_and_gc_respects_the_grace_period(
        s3_store: Path, s3_mount: Mounted, seaweed: SeaweedS3, bucket: str) -> None:
    (s3_mount / "data").mkdir()
    (s3_mount / "data" / "keep.bin").write_bytes(payload(3 * MiB, 4))
    (s3_mount / "data" / "gone.bin").write_bytes(payload(3 * MiB, 5))
    assert len(objects(seaweed, bucket)) == 2
    os.unlink(s3_mount / "data" / "gone.bin")
    assert wait_until(lambda: len(objects(seaweed, bucket)) == 1)
    stray = "store/uploads/written-by-another-mount-not-yet-committed"
    seaweed.client().put_object(Bucket=bucket, Key=stray, Body=b"x" * 1000)
    done = encfs("gc", "--store", str(s3_store))
    assert done.returncode == 0, done.stderr
    assert stray in objects(seaweed, bucket)  # younger than the grace period: kept
    assert "1 objects younger than 1h left alone" in done.stdout
    time.sleep(1.1)
    done = encfs("gc", "--store", str(s3_store), "--grace", "1s")
    assert done.returncode == 0, done.stderr
    assert "deleted 1 unused objects" in done.stdout
    assert stray not in objects(seaweed, bucket) and len(objects(seaweed, bucket)) == 1
    assert (s3_mount / "data" / "keep.bin").read_bytes() == payload(3 * MiB, 4)
    bad = encfs("gc", "--store", str(s3_store), "--grace", "soon")
    assert bad.returncode != 0 and "not a duration" in bad.stderr


# ----------------------------------------------------------------- the cache


def test_the_cache_stays_bounded(s3_store: Path, s3_mount: Mounted, remount: Callable) -> None:
    (s3_mount / "data").mkdir()
    files = {f"f{n}.bin": payload(16 * MiB, 10 + n) for n in range(3)}
    for name, content in files.items():
        (s3_mount / "data" / name).write_bytes(content)
    mounted = remount(s3_mount)
    for name, content in files.items():  # 48 MiB through a 32 MiB cache
        assert (mounted / "data" / name).read_bytes() == content
    mounted = remount(mounted, keep_cache=True)  # the cache's writes behind the readers are done
    cached = sum(p.stat().st_blocks * 512 for p in (s3_store / "cache").rglob("*.data"))
    assert 16 * MiB <= cached <= 32 * MiB + 16 * MiB  # the limit, and the last reads' chunks pinned a moment
    assert (mounted / "data" / "f2.bin").read_bytes() == files["f2.bin"]


def test_a_damaged_cache_chunk_is_fetched_again(s3_store: Path, s3_mount: Mounted, remount: Callable) -> None:
    (s3_mount / "data").mkdir()
    content = payload(20 * MiB, 20)
    (s3_mount / "data" / "f.bin").write_bytes(content)
    mounted = remount(s3_mount)
    assert (mounted / "data" / "f.bin").read_bytes() == content
    mounted = remount(mounted, keep_cache=True)
    [data_file] = (s3_store / "cache").rglob("*.data")
    with open(data_file, "r+b") as damaged:
        damaged.seek(5 * MiB)
        damaged.write(b"rot" * 100)
    assert (mounted / "data" / "f.bin").read_bytes() == content


def test_reads_go_on_uncached_when_the_cache_disk_is_full(s3_store: Path, bucket: str, tmp_path: Path,
                                                          mount_factory: Callable) -> None:
    small_disk = tmp_path / "small-disk"
    small_disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(small_disk)], check=True)
    try:
        store = tmp_path / "small-cache-store"
        done = encfs("init", "--store", str(store), "--blobs", f"s3://{bucket}/other",
                     "--cache-dir", str(small_disk / "cache"), "--cache-size", "1GiB")
        assert done.returncode == 0, done.stderr
        mounted = written_and_read_after_remount(store, mount_factory, "small", payload(24 * MiB, 30))
        assert "cannot write to the blob cache" in store_log(store)
        assert "disk is full" in store_log(store)
        stop_mount(mounted)
    finally:
        subprocess.run(["umount", "-l", str(small_disk)], check=False)


def test_a_store_without_a_cache_reads_from_the_bucket(bucket: str, seaweed: SeaweedS3, tmp_path: Path,
                                                       mount_factory: Callable,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in seaweed.env().items():
        monkeypatch.setenv(name, value)
    store = tmp_path / "uncached"
    done = encfs("init", "--store", str(store), "--blobs", f"s3://{bucket}/u", "--cache-size", "0")
    assert done.returncode == 0, done.stderr
    written_and_read_after_remount(store, mount_factory, "u", payload(12 * MiB, 80))
    assert not list((store / "cache").rglob("*.data"))


# ----------------------------------------------------------------- faults


def test_while_the_server_is_away_reads_and_closes_fail_and_nothing_is_lost(
        s3_store: Path, s3_mount: Mounted, seaweed: SeaweedS3, bucket: str, remount: Callable) -> None:
    """One stop of the server: an uncached read is EIO, a cached one works (the cache
    survived the restart), a close is EIO and the file keeps its previous version;
    once the server is back, reads work and nothing is left in the bucket."""
    (s3_mount / "data").mkdir()
    cached, uncached = payload(16 * MiB, 40), payload(16 * MiB, 41)
    (s3_mount / "data" / "cached.bin").write_bytes(cached)
    (s3_mount / "data" / "uncached.bin").write_bytes(uncached)
    previous = payload(2 * MiB, 42)
    (s3_mount / "data" / "written.bin").write_bytes(previous)
    mounted = remount(s3_mount)
    assert (mounted / "data" / "cached.bin").read_bytes() == cached
    mounted = remount(mounted, keep_cache=True)
    stored = objects(seaweed, bucket)
    out = os.open(mounted / "data" / "written.bin", os.O_WRONLY | os.O_TRUNC)
    try:
        content = payload(36 * MiB, 43)
        for start in range(0, len(content), MiB):
            os.write(out, content[start:start + MiB])
    finally:
        with seaweed.down():
            with pytest.raises(OSError) as failed_close:
                os.close(out)
            started = time.monotonic()
            with pytest.raises(OSError) as failed_read:
                (mounted / "data" / "uncached.bin").read_bytes()
            assert time.monotonic() - started < 10  # after botocore's retries, then at once
            assert (mounted / "data" / "cached.bin").read_bytes() == cached
    assert failed_close.value.errno == errno.EIO and failed_read.value.errno == errno.EIO
    log = store_log(s3_store)
    assert "cannot read object" in log and "EIO until the bucket answers" in log
    assert "cannot store object" in log
    assert wait_until(lambda: readable(mounted / "data" / "uncached.bin"), 3)  # reads fail at once for 0.5 s
    assert (mounted / "data" / "uncached.bin").read_bytes() == uncached
    assert (mounted / "data" / "written.bin").read_bytes() == previous
    assert wait_until(lambda: not open_uploads(seaweed, bucket), 20)  # nothing orphaned
    assert objects(seaweed, bucket) == stored


def test_an_object_changed_behind_the_stores_back_is_eio_never_wrong_bytes(
        s3_store: Path, s3_mount: Mounted, seaweed: SeaweedS3, bucket: str, remount: Callable) -> None:
    (s3_mount / "data").mkdir()
    (s3_mount / "data" / "same-size.bin").write_bytes(payload(20 * MiB, 60))
    (s3_mount / "data" / "shorter.bin").write_bytes(payload(3 * MiB, 61))
    client = seaweed.client()
    for key, size in objects(seaweed, bucket).items():
        client.put_object(Bucket=bucket, Key=key, Body=payload(size if size > 4 * MiB else size - 10, 62))
    mounted = remount(s3_mount)
    for name in ("same-size.bin", "shorter.bin"):
        with pytest.raises(OSError) as failed:
            (mounted / "data" / name).read_bytes()
        assert failed.value.errno == errno.EIO
    log = store_log(s3_store)
    assert "changed in the bucket behind the store's back" in log
    assert f"s3://{bucket}/store/" in log
    checked = encfs("fsck", "--store", str(s3_store))
    assert checked.returncode != 0 and "Traceback" not in checked.stderr
    assert checked.stdout.count("damaged content") == 2, checked.stdout
    assert "/data/same-size.bin" in checked.stdout and "/data/shorter.bin" in checked.stdout


@pytest.mark.parametrize(("damage", "size"), [("changed", 3 * MiB), ("removed", 20 * MiB)])
def test_identical_content_written_again_repairs_a_damaged_object_and_never_shares_it(
        s3_store: Path, s3_mount: Mounted, seaweed: SeaweedS3, bucket: str, remount: Callable,
        damage: str, size: int) -> None:
    content = payload(size, 63)
    (s3_mount / "data").mkdir()
    (s3_mount / "data" / "first.bin").write_bytes(content)
    client = seaweed.client()
    [key] = objects(seaweed, bucket)
    if damage == "changed":
        client.put_object(Bucket=bucket, Key=key, Body=payload(size, 64))
    else:
        client.delete_object(Bucket=bucket, Key=key)
    mounted = remount(s3_mount)
    with pytest.raises(OSError) as failed:
        (mounted / "data" / "first.bin").read_bytes()
    assert failed.value.errno == errno.EIO
    (mounted / "data" / "again.bin").write_bytes(content)  # the same bytes: shared, so stored again
    assert (mounted / "data" / "again.bin").read_bytes() == content
    assert (mounted / "data" / "first.bin").read_bytes() == content  # repaired for both
    assert "the content just written replaces it" in store_log(s3_store)
    mounted = remount(mounted)  # its cache emptied: read from the new object
    assert (mounted / "data" / "first.bin").read_bytes() == content


def test_fsck_repair_sets_a_damaged_object_aside_in_the_bucket_and_deletes_nothing(
        s3_store: Path, s3_mount: Mounted, seaweed: SeaweedS3, bucket: str) -> None:
    (s3_mount / "data").mkdir()
    (s3_mount / "data" / "hurt.bin").write_bytes(payload(3 * MiB, 80))
    (s3_mount / "data" / "fine.bin").write_bytes(payload(2 * MiB, 81))
    stop_mount(s3_mount)
    client = seaweed.client()
    [hurt_key] = [key for key, size in objects(seaweed, bucket).items() if size == 3 * MiB]
    damaged = payload(3 * MiB, 82)  # same size, other bytes, written behind the store's back
    client.put_object(Bucket=bucket, Key=hurt_key, Body=damaged)
    before = objects(seaweed, bucket)

    repaired = encfs("fsck", "--repair", "--store", str(s3_store))
    assert repaired.returncode == 1 and "Traceback" not in repaired.stderr, repaired.stdout + repaired.stderr
    assert "quarantined: s3://" in repaired.stdout and "/data/hurt.bin" in repaired.stdout
    assert "/data/fine.bin" not in repaired.stdout
    after = objects(seaweed, bucket)
    assert set(before) <= set(after)  # nothing deleted
    aside = [key for key in after if key.startswith("store/quarantine/")]
    [copy] = [key for key in aside if not key.endswith(".txt")]
    [note] = [key for key in aside if key.endswith(".txt")]
    assert client.get_object(Bucket=bucket, Key=copy)["Body"].read() == damaged
    assert client.get_object(Bucket=bucket, Key=hurt_key)["Body"].read() == damaged  # left in place
    assert hurt_key in client.get_object(Bucket=bucket, Key=note)["Body"].read().decode()
    time.sleep(1.5)
    assert encfs("gc", "--store", str(s3_store), "--grace", "1s").returncode == 0
    assert set(aside) <= set(objects(seaweed, bucket))  # the collector leaves quarantine alone


def test_fsck_finds_a_whole_bucket_store_sound(s3_store: Path, s3_mount: Mounted) -> None:
    (s3_mount / "data").mkdir()
    (s3_mount / "data" / "a.bin").write_bytes(payload(20 * MiB, 70))
    (s3_mount / "data" / "b.txt").write_bytes(b"small")
    checked = encfs("fsck", "--store", str(s3_store))
    assert checked.returncode == 0, checked.stdout + checked.stderr
