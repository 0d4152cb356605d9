"""Integrations and import by reference, against the suite's real SeaweedFS: through
the CLI and a real mount. Objects stay in the bucket; reads stream them by range."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cloud_helpers import Cloud, aws_env, cli, explain

from media import image_bytes, pdf_bytes, slice_bytes, video_file, wav_bytes
from seaweed import READER, WRITE_ONLY, SeaweedS3
from store_state import poll


def readable(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except OSError:
        return None


def xattr(path: Path, name: str) -> str:
    return os.getxattr(path, name).decode()


# ---------------------------------------------------------------- integrations


def test_integration_add_ls_check_rm(cloud: Cloud) -> None:
    listed = cloud.ok("integration", "ls").stdout
    assert f"data  s3://{cloud.bucket}/" in listed
    assert "can be listed" in cloud.ok("integration", "check", "data").stdout
    cloud.ok("integration", "add", "sub", f"s3://{cloud.bucket}/some/prefix")
    assert f"s3://{cloud.bucket}/some/prefix/" in cloud.ok("integration", "ls").stdout
    cloud.ok("integration", "rm", "sub")
    assert "sub" not in cloud.ok("integration", "ls").stdout


def test_integration_is_checked_when_added_and_credentials_never_stored(
        seaweed: SeaweedS3, bucket: str, store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    aws_env(monkeypatch, seaweed, ("nobody", "not-a-secret-xyz"))
    wrong = cli("integration", "add", "data", f"s3://{bucket}", store=store)
    assert wrong.exit_code != 0 and "credentials were refused" in wrong.stderr, explain(wrong)
    assert "Traceback" not in wrong.output
    aws_env(monkeypatch, seaweed, WRITE_ONLY)
    denied = cli("integration", "add", "data", f"s3://{bucket}", store=store)
    assert denied.exit_code != 0 and "permission denied" in denied.stderr, explain(denied)
    aws_env(monkeypatch, seaweed, READER)
    missing = cli("integration", "add", "data", "s3://no-such-bucket-here", store=store)
    assert missing.exit_code != 0 and "does not exist" in missing.stderr, explain(missing)
    assert cli("integration", "ls", store=store).stdout == ""  # nothing recorded
    bad = cli("integration", "add", "data", "http://x/y", store=store)
    assert bad.exit_code != 0 and "s3://" in bad.stderr
    added = cli("integration", "add", "data", f"s3://{bucket}", store=store)  # read-only identity is enough
    assert added.exit_code == 0, explain(added)
    data = b"".join(p.read_bytes() for p in (store / "meta.lmdb").iterdir())
    assert READER[1].encode() not in data and READER[0].encode() not in data


# ---------------------------------------------------------------- import and read through the mount


def test_import_spec_by_reference_reads_through_the_mount(
        cloud: Cloud, tmp_path: Path, mount_factory) -> None:
    jpeg = image_bytes("JPEG", (80, 60))
    video = video_file(tmp_path / "clip.mp4", frames=24, size=(96, 64), fps=24).read_bytes()
    objects = {
        "img/a.jpg": jpeg, "clips/clip.mp4": video, "sound/beep.wav": wav_bytes(),
        "docs/paper.pdf": pdf_bytes(), "notes/readme.txt": b"hello from the bucket\n",
    }
    urls = {key: cloud.put(key, data) for key, data in objects.items()}
    spec = cloud.spec(tmp_path, {
        "images": [{"objectUrl": urls["img/a.jpg"], "clientMetadata": {"site": "north"}}],
        "videos": [{"objectUrl": urls["clips/clip.mp4"], "title": "chicken.mp4"}],
        "audio": [{"objectUrl": urls["sound/beep.wav"]}],
        "pdf": [{"objectUrl": urls["docs/paper.pdf"]}],
        "text": [{"objectUrl": urls["notes/readme.txt"]}],
    })
    result = cloud.ok("import", "/Imported", spec, "--integration", "data")
    assert "imported 5 into /Imported, 0 skipped, 0 failed" in result.stdout
    assert sorted(cloud.names("/Imported")) == ["a.jpg", "beep.wav", "chicken.mp4", "paper.pdf", "readme.txt"]
    mounted = mount_factory(cloud.store, "mnt")
    folder = mounted.path / "Imported"
    assert (folder / "a.jpg").read_bytes() == jpeg
    assert (folder / "chicken.mp4").read_bytes() == video
    assert (folder / "readme.txt").read_text() == "hello from the bucket\n"
    assert xattr(folder / "a.jpg", "user.encord.width") == "80"
    assert xattr(folder / "a.jpg", "user.encord.kind") == "image"
    assert xattr(folder / "chicken.mp4", "user.encord.kind") == "video"
    assert xattr(folder / "chicken.mp4", "user.encord.frames") == "24"
    assert xattr(folder / "beep.wav", "user.encord.kind") == "audio"
    assert xattr(folder / "paper.pdf", "user.encord.kind") == "pdf"
    assert xattr(folder / "a.jpg", "user.encord.storage") == "bucket"
    assert xattr(folder / "a.jpg", "user.encord.url") == urls["img/a.jpg"]
    assert json.loads(xattr(folder / "a.jpg", "user.encord.client_metadata")) == {"site": "north"}
    assert os.stat(folder / "chicken.mp4").st_size == len(video)
    info = json.loads(cloud.ok("info", "/Imported/chicken.mp4", "--json").stdout)
    assert info["storage"] == "bucket" and info["url"] == urls["clips/clip.mp4"] and info["sha256"] is None
    assert all(p.is_dir() for p in (cloud.store / "blobs").rglob("*"))  # nothing was copied


def test_https_urls_of_objects_in_the_integrations_bucket_are_imported(
        cloud: Cloud, tmp_path: Path, mount_factory) -> None:
    """Encord specs give objects as https URLs: path-style on the integration's own
    endpoint (here SeaweedFS's), and AWS's virtual-hosted and path-style forms, which
    name the same bucket and are read through the integration."""
    contents = {"web/a.txt": b"path style on the endpoint\n", "web/b c.txt": b"virtual-hosted\n",
                "web/c.txt": b"aws path style\n"}
    for key, data in contents.items():
        cloud.put(key, data)
    spec = cloud.spec(tmp_path, {"text": [
        {"objectUrl": f"{cloud.server.endpoint}/{cloud.bucket}/web/a.txt"},
        {"objectUrl": f"https://{cloud.bucket}.s3.us-east-1.amazonaws.com/web/b%20c.txt"},
        {"objectUrl": f"https://s3.us-east-1.amazonaws.com/{cloud.bucket}/web/c.txt"},
    ], "skip_duplicate_urls": True})
    result = cloud.ok("import", "/Imported", spec, "--integration", "data")
    assert "imported 3 into /Imported, 0 skipped, 0 failed" in result.stdout
    assert sorted(cloud.names("/Imported")) == ["a.txt", "b c.txt", "c.txt"]
    again = cloud.spec(tmp_path, {"text": [{"objectUrl": f"s3://{cloud.bucket}/web/a.txt"}],
                                  "skip_duplicate_urls": True}, "again.json")
    assert "imported 0 into /Imported, 1 skipped" in cloud.ok("import", "/Imported", again, "--integration",
                                                               "data").stdout  # the same object
    mounted = mount_factory(cloud.store, "mnt")
    folder = mounted.path / "Imported"
    for key, data in contents.items():
        assert (folder / key.removeprefix("web/")).read_bytes() == data
    assert xattr(folder / "b c.txt", "user.encord.url") == f"s3://{cloud.bucket}/web/b c.txt"


def test_writing_an_imported_file_stores_the_new_content_and_leaves_the_object(
        cloud: Cloud, tmp_path: Path, mount_factory) -> None:
    url = cloud.put("notes/readme.txt", b"first line\n")
    spec = cloud.spec(tmp_path, {"text": [{"objectUrl": url}]})
    cloud.ok("import", "/Imported", spec, "--integration", "data")
    mounted = mount_factory(cloud.store, "mnt")
    path = mounted.path / "Imported" / "readme.txt"
    with open(path, "a") as f:
        f.write("second line\n")
    assert path.read_text() == "first line\nsecond line\n"
    assert cloud.s3.get_object(Bucket=cloud.bucket, Key="notes/readme.txt")["Body"].read() == b"first line\n"
    info = json.loads(cloud.ok("info", "/Imported/readme.txt", "--json").stdout)
    assert info["storage"] == "store" and info["imported_from"] == url and info["sha256"]
    assert "bucket object was not changed" in info["storage_note"]
    assert xattr(path, "user.encord.storage") == "store"


def test_an_object_changed_behind_the_items_back_is_eio_never_other_bytes(
        cloud: Cloud, tmp_path: Path, mount_factory) -> None:
    url = cloud.put("notes/a.txt", b"version one\n")
    spec = cloud.spec(tmp_path, {"text": [{"objectUrl": url}]})
    cloud.ok("import", "/Imported", spec, "--integration", "data")
    cloud.put("notes/a.txt", b"version two\n")  # same length, other bytes
    mounted = mount_factory(cloud.store, "mnt")
    with pytest.raises(OSError) as caught:
        (mounted.path / "Imported" / "a.txt").read_bytes()
    assert caught.value.errno == errno.EIO
    log = (cloud.store / "log" / "encfs.log").read_text()
    assert url in log and "changed in the bucket" in log


def test_reads_fail_while_the_server_is_away_and_work_when_it_returns(
        cloud: Cloud, tmp_path: Path, mount_factory) -> None:
    data = os.urandom(3 << 20) + b"\n"
    url = cloud.put("big/blob.bin", data)
    cloud.ok("import", "/Imported", f"s3://{cloud.bucket}/big", "--integration", "data")
    mounted = mount_factory(cloud.store, "mnt")
    path = mounted.path / "Imported" / "blob.bin"
    with cloud.server.down():
        started = time.monotonic()
        with pytest.raises(OSError) as caught:
            path.read_bytes()
        assert caught.value.errno == errno.EIO
        assert time.monotonic() - started < 10  # boto3's bounded retries, then no waiting
    assert poll(lambda: readable(path) == data, timeout=10)
    log = (cloud.store / "log" / "encfs.log").read_text()
    assert url in log and "cannot be reached" in log


def test_a_second_read_comes_from_the_block_cache_even_with_the_server_away(
        cloud: Cloud, mount_factory) -> None:
    data = os.urandom(5 << 20)
    cloud.put("epoch/img.bin", data)
    cloud.ok("import", "/Imported", f"s3://{cloud.bucket}/epoch", "--integration", "data")
    mounted = mount_factory(cloud.store, "mnt")
    path = mounted.path / "Imported" / "img.bin"
    assert path.read_bytes() == data  # fetched once, into STORE/cache
    with cloud.server.down():
        Path("/proc/sys/vm/drop_caches").write_text("1\n")  # not the kernel's pages: the cache's
        assert path.read_bytes() == data
    assert any((cloud.store / "cache").glob("??/*.data"))

# ---------------------------------------------------------------- groups, sequences, series, prefixes


def test_image_groups_sequences_and_dicom_series_by_reference(cloud: Cloud, tmp_path: Path) -> None:
    front, side = image_bytes("PNG", (32, 24)), image_bytes("JPEG", (32, 24))
    urls = [cloud.put("g/front.png", front), cloud.put("g/side.jpg", side)]
    slices = [cloud.put(f"ct/{n}.dcm", slice_bytes("1.2.826.0.1.3680043.99.1", float(z), n + 1))
              for n, z in enumerate((2, 0, 1))]
    spec = cloud.spec(tmp_path, {
        "image_groups": [
            {"title": "views", "createVideo": False, "objectUrl_1": urls[0], "objectUrl_0": urls[1],
             "clientMetadata": {"rig": 3}},
            {"title": "clip", "createVideo": True, "objectUrl_0": urls[0], "objectUrl_1": urls[1]},
        ],
        "dicom_series": [{"title": "CT-123", **{f"objectUrl_{n}": url for n, url in enumerate(slices)}}],
    })
    result = cloud.ok("import", "/Imported", spec, "--integration", "data")
    assert "imported 3" in result.stdout
    names = cloud.names("/Imported")
    assert {"views.imagegroup", "views/", "clip.imagesequence.mp4", "clip/", "CT-123/"} <= set(names), names
    group = json.loads(cloud.ok("info", "/Imported/views.imagegroup", "--json").stdout)
    assert group["kind"] == "image_group" and group["frames"] == 2 and group["client_metadata"] == {"rig": 3}
    assert cloud.names("/Imported/views") == ["0_side.jpg", "1_front.png"]  # spec order
    sequence = json.loads(cloud.ok("info", "/Imported/clip.imagesequence.mp4", "--json").stdout)
    assert sequence["kind"] == "image_sequence" and sequence["frames"] == 2 and sequence["storage"] == "store"
    series = [n for n in cloud.names("/Imported/CT-123") if n.endswith(".dcmseries")]
    assert len(series) == 1, cloud.names("/Imported/CT-123")
    details = json.loads(cloud.ok("info", f"/Imported/CT-123/{series[0]}", "--json").stdout)
    assert details["kind"] == "dicom_series" and details["frames"] == 3
    slice_info = json.loads(cloud.ok("info", "/Imported/CT-123/0.dcm", "--json").stdout)
    assert slice_info["storage"] == "bucket"
    assert slice_info["dicom"]["series_uid"] == "1.2.826.0.1.3680043.99.1"


def test_import_of_a_prefix_keeps_its_folders_and_sidecars(cloud: Cloud) -> None:
    cloud.put("batch/one.txt", b"one\n")
    cloud.put("batch/deeper/two.jpg", image_bytes("JPEG"))
    cloud.put("batch/deeper/two.jpg.metadata.json", b'{"label": "cat"}')
    cloud.put("elsewhere/three.txt", b"three\n")
    result = cloud.ok("import", "/Imported", f"s3://{cloud.bucket}/batch", "--integration", "data")
    assert "imported 2" in result.stdout
    assert sorted(cloud.names("/Imported")) == ["deeper/", "one.txt"]
    assert cloud.names("/Imported/deeper") == ["two.jpg"]
    info = json.loads(cloud.ok("info", "/Imported/deeper/two.jpg", "--json").stdout)
    assert info["client_metadata"] == {"label": "cat"} and info["kind"] == "image"
    again = cloud.ok("import", "/Imported", f"s3://{cloud.bucket}/batch", "--integration", "data")
    assert "imported 0 into /Imported, 2 skipped" in again.stdout  # a re-run completes, never duplicates
    outside = cloud.run("import", "/Imported", "s3://other-bucket/batch", "--integration", "data")
    assert outside.exit_code != 0 and "outside integration data" in outside.stderr


def test_an_interrupted_import_keeps_what_finished(cloud: Cloud, tmp_path: Path) -> None:
    count = 3000
    spec = cloud.spec(tmp_path, {"images": [
        {"objectUrl": f"s3://{cloud.bucket}/f/{n:05d}.jpg", "imageMetadata": {"fileSize": 10, "width": 4,
                                                                           "height": 4}}
        for n in range(count)], "skip_duplicate_urls": True})
    argv = [sys.executable, "-m", "encfs", "import", "/Imported", str(spec), "--integration", "data",
            "--ignore-errors", "--store", str(cloud.store)]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert poll(lambda: count_items(cloud) > 0, timeout=30)
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    kept = count_items(cloud)
    if process.returncode == 130:
        assert "interrupted" in err and 0 < kept < count, (out, err, kept)
    else:  # it finished before the signal arrived
        assert process.returncode == 0 and kept == count, (out, err, kept)
    result = cloud.ok("import", "/Imported", spec, "--integration", "data")
    assert f"imported {count - kept} into /Imported, {kept} skipped" in result.stdout
    assert count_items(cloud) == count


def count_items(cloud: Cloud) -> int:
    from encfs.model import Actor

    from store_state import service_of

    with service_of(cloud.store) as service:
        return len(service.list_folder(Actor.local(), "/Imported"))


def test_probing_reads_the_headers_only(cloud: Cloud) -> None:
    """A big image and a big video: a few ranged reads of their headers, not the objects."""
    from encfs.cloud.integrations import parse_url
    from encfs.cloud.probing import examine

    from store_state import service_of

    noise = os.urandom(6 << 20)
    picture = image_bytes("PNG", (1600, 1200)) + noise  # Pillow reads the header; the rest is never asked
    url = cloud.put("big/picture.png", picture)
    with service_of(cloud.store) as service:
        found = examine(service.cloud.integration("data"), parse_url(url))
    assert found.media.kind.value == "image" and found.media.width == 1600
    assert found.version.size == len(picture) and found.fetched <= 256 << 10, found.fetched


def test_folder_info_says_where_the_bytes_are(cloud: Cloud, tmp_path: Path) -> None:
    url = cloud.put("notes/a.txt", b"in the bucket\n")
    cloud.ok("import", "/Imported", cloud.spec(tmp_path, {"text": [{"objectUrl": url}]}),
             "--integration", "data")
    local = tmp_path / "local.txt"
    local.write_text("in the store\n")
    cloud.ok("upload", "/Imported", local)
    summary = json.loads(cloud.ok("folder", "info", "/Imported", "--json").stdout)
    assert summary["files"] == 2 and summary["files_in_bucket"] == 1 and summary["tombstones"] == 0
    assert "in a bucket: 1 of the files" in cloud.ok("folder", "info", "/Imported").stdout


def test_an_item_imported_with_metadata_given_is_pinned_at_its_first_read(
        cloud: Cloud, tmp_path: Path) -> None:
    from store_state import stored_bytes

    url = cloud.put("notes/a.txt", b"version one\n")
    spec = cloud.spec(tmp_path, {"text": [{"objectUrl": url}], "images": [
        {"objectUrl": cloud.put("i.jpg", image_bytes("JPEG")), "imageMetadata": {"fileSize": 3}}]})
    given = json.loads(spec.read_text())
    given["text"] = []
    given["videos"] = [{"objectUrl": url, "title": "a.txt", "videoMetadata": {"file_size": 12, "fps": 25}}]
    spec.write_text(json.dumps(given))
    cloud.ok("import", "/Imported", spec, "--integration", "data")  # nothing read: the kinds are trusted
    assert stored_bytes(cloud.store, "/Imported/a.txt") == b"version one\n"
    cloud.put("notes/a.txt", b"version two\n")  # the same size
    with pytest.raises(Exception, match="changed in the bucket"):
        stored_bytes(cloud.store, "/Imported/a.txt")
    with pytest.raises(Exception, match="changed in the bucket"):
        stored_bytes(cloud.store, "/Imported/i.jpg")  # 3 bytes were given, the object has more


# ---------------------------------------------------------------- imports in the background


def stop_if_running(pid: int) -> None:
    """Teardown: the detached import stops here if the test failed while it ran."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    stat = Path(f"/proc/{pid}/stat")
    poll(lambda: not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z", timeout=10)


def test_an_import_runs_in_the_background_and_status_follows_it(cloud: Cloud, tmp_path: Path) -> None:
    urls = [cloud.put(f"bg/{n:03d}.txt", f"text {n}\n".encode()) for n in range(60)]
    spec = cloud.spec(tmp_path, {"text": [{"objectUrl": url} for url in urls]})
    started = cloud.ok("import", "/Imported", spec, "--integration", "data", "--background")
    assert "runs in the background" in started.stdout
    job_id = started.stdout.split()[1]
    pid = int(started.stdout.split("(process ")[1].split(")")[0])
    try:
        listed = cloud.ok("import", "status").stdout
        assert job_id in listed and "/Imported" in listed
        final = poll(lambda: (line := cloud.ok("import", "status", job_id).stdout)
                     and f"{job_id}  done" in line and line, timeout=120)
        assert final and "60 done, 0 skipped, 0 failed of 60" in final, cloud.ok("import", "status").stdout
    finally:
        stop_if_running(pid)
    assert len(cloud.names("/Imported")) == 60
    assert (cloud.store / "log" / f"import-{job_id}.out").exists()


def test_a_background_import_refuses_bad_input_at_once(cloud: Cloud, tmp_path: Path) -> None:
    url = cloud.put("bg/a.txt", b"text\n")
    good = cloud.spec(tmp_path, {"text": [{"objectUrl": url}]})
    unknown = cloud.run("import", "/Imported", good, "--integration", "nope", "--background")
    assert unknown.exit_code == 2 and "no integration named nope" in unknown.stderr, explain(unknown)
    broken = cloud.spec(tmp_path, "{not json", "broken.json")
    refused = cloud.run("import", "/Imported", broken, "--integration", "data", "--background")
    assert refused.exit_code != 0 and "JSON" in refused.stderr and "Traceback" not in refused.output
    nowhere = cloud.run("import", "/Missing", good, "--integration", "data", "--background")
    assert nowhere.exit_code == 2 and "/Missing" in nowhere.stderr, explain(nowhere)
    assert cloud.ok("import", "status").stdout == "no background imports\n"
    missing = cloud.run("import", "status", "20990101-000000-abcdef")
    assert missing.exit_code != 0 and "no background import" in missing.stderr


def test_a_background_import_whose_process_is_gone_shows_as_stopped(cloud: Cloud, tmp_path: Path) -> None:
    urls = [cloud.put(f"gone/{n:03d}.txt", b"text\n") for n in range(20)]
    spec = cloud.spec(tmp_path, {"text": [{"objectUrl": url} for url in urls], "skip_duplicate_urls": True})
    started = cloud.ok("import", "/Imported", spec, "--integration", "data", "--background")
    job_id = started.stdout.split()[1]
    pid = int(started.stdout.split("(process ")[1].split(")")[0])
    try:
        os.kill(pid, signal.SIGKILL)  # long before its interpreter has started the import
        shown = poll(lambda: "stopped" in (line := cloud.ok("import", "status", job_id).stdout) and line,
                     timeout=10)
        assert shown and "run the import again" in shown, cloud.ok("import", "status").stdout
    finally:
        stop_if_running(pid)
    completed = cloud.ok("import", "/Imported", spec, "--integration", "data")  # the re-run completes it
    assert "imported 20 into /Imported" in completed.stdout

