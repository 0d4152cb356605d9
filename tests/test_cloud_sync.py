"""Cloud-synced folders against the suite's real SeaweedFS: a sync adds new objects,
tombstones deleted ones (restored when they return), follows changed ones, takes
sidecars as client metadata, and refuses what Encord does not sync there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from cloud_helpers import Cloud, explain

from conftest import Mounted, stop_mount
from media import image_bytes, slice_bytes
from store_state import poll


def synced(cloud: Cloud) -> Cloud:
    cloud.ok("folder", "create", "/Synced", "--cloud-sync", f"s3://{cloud.bucket}/live",
             "--integration", "data")
    return cloud


def test_a_sync_adds_tombstones_restores_and_updates(cloud: Cloud, tmp_path: Path) -> None:
    synced(cloud)
    cloud.put("live/a.txt", b"alpha\n")
    cloud.put("live/b.jpg", image_bytes("JPEG", (40, 30)))
    cloud.put("live/sub/c.txt", b"gamma\n")
    cloud.put("live/b.jpg.metadata.json", json.dumps({"camera": "left"}).encode())
    result = cloud.ok("sync", "/Synced")
    assert "3 added" in result.stdout, result.stdout
    assert sorted(cloud.names("/Synced")) == ["a.txt", "b.jpg", "sub/"]  # the sidecar is no item
    assert cloud.names("/Synced/sub") == ["c.txt"]
    info = json.loads(cloud.ok("info", "/Synced/b.jpg", "--json").stdout)
    assert info["client_metadata"] == {"camera": "left"}
    assert info["width"] == 40 and info["storage"] == "bucket"
    cloud.ok("dataset", "create", "Training", "--add", "/Synced/a.txt")
    assert "a.txt" in cloud.ok("dataset", "ls", "Training").stdout

    cloud.s3.delete_object(Bucket=cloud.bucket, Key="live/a.txt")
    assert "1 tombstoned" in cloud.ok("sync", "/Synced").stdout
    assert "a.txt" not in cloud.names("/Synced")
    assert "a.txt" not in cloud.ok("dataset", "ls", "Training").stdout
    assert cloud.ok("search", "a.txt").stdout == ""
    assert "a.txt  (tombstone:" in cloud.ok("ls", "/Synced", "--tombstones").stdout
    summary = json.loads(cloud.ok("folder", "info", "/Synced", "--json").stdout)
    assert summary["tombstones"] == 1 and summary["files"] == 2
    assert summary["cloud_sync"] == {"url": f"s3://{cloud.bucket}/live/", "integration": "data"}
    assert "tombstones: 1" in cloud.ok("folder", "info", "/Synced").stdout

    cloud.put("live/a.txt", b"alpha\n")  # the same bytes again: the same item comes back
    assert "1 restored" in cloud.ok("sync", "/Synced").stdout
    assert "a.txt" in cloud.names("/Synced")
    assert "a.txt" in cloud.ok("dataset", "ls", "Training").stdout
    assert cloud.ok("ls", "/Synced", "--tombstones").stdout == ""

    cloud.put("live/sub/c.txt", b"gamma, longer now\n")
    cloud.put("live/b.jpg.metadata.json", json.dumps({"camera": "right"}).encode())
    result = cloud.ok("sync", "/Synced")
    assert "2 updated" in result.stdout, result.stdout
    assert json.loads(cloud.ok("info", "/Synced/sub/c.txt", "--json").stdout)["size"] == 18
    info = json.loads(cloud.ok("info", "/Synced/b.jpg", "--json").stdout)
    assert info["client_metadata"] == {"camera": "right"}
    assert "0 added, 0 updated, 0 tombstoned, 0 restored, 3 unchanged" in cloud.ok("sync", "/Synced").stdout
    cloud.ok("fsck")  # tombstones are no unnamed nodes, and need no search postings
    cloud.s3.delete_object(Bucket=cloud.bucket, Key="live/a.txt")
    cloud.ok("sync", "/Synced")
    cloud.ok("fsck")


def test_what_encord_does_not_sync_is_refused_clearly(cloud: Cloud) -> None:
    synced(cloud)
    cloud.put("live/ok.txt", b"fine\n")
    cloud.put("live/ct.dcm", slice_bytes("1.2.3.4", 0.0, 1))
    result = cloud.run("sync", "/Synced")
    assert result.exit_code == 1, explain(result)
    assert "1 added" in result.stdout and "1 failed" in result.stdout
    assert "ct.dcm: DICOM files are not synced into a cloud-synced folder" in result.stderr
    assert cloud.names("/Synced") == ["ok.txt"]
    cloud.ok("folder", "create", "/Synced/views")
    refused = cloud.run("batch", "image-group", "--from-folder", "/Synced/views")
    assert refused.exit_code != 0 and "cloud-synced folder" in refused.stderr, explain(refused)


def test_a_cloud_synced_folder_is_fixed_at_creation_and_checked(cloud: Cloud) -> None:
    wrong = cloud.run("folder", "create", "/Elsewhere", "--cloud-sync", "s3://another-bucket/x",
                      "--integration", "data")
    assert wrong.exit_code != 0 and "outside integration data" in wrong.stderr
    no_integration = cloud.run("folder", "create", "/Elsewhere", "--cloud-sync", f"s3://{cloud.bucket}/x")
    assert no_integration.exit_code != 0 and "--integration" in no_integration.stderr
    unknown = cloud.run("folder", "create", "/Elsewhere", "--cloud-sync", f"s3://{cloud.bucket}/x",
                        "--integration", "nope")
    assert unknown.exit_code != 0 and "no integration named nope" in unknown.stderr
    assert "Elsewhere" not in cloud.ok("folder", "list").stdout
    plain = cloud.run("sync", "/Imported")
    assert plain.exit_code != 0 and "not a cloud-synced folder" in plain.stderr
    removed = cloud.run("integration", "rm", "data")
    assert removed.exit_code == 0  # nothing uses it yet
    cloud.ok("integration", "add", "data", f"s3://{cloud.bucket}")
    synced(cloud)
    in_use = cloud.run("integration", "rm", "data")
    assert in_use.exit_code != 0 and "cloud-synced" in in_use.stderr


def test_the_mount_syncs_every_interval_and_reads_stream_from_the_bucket(
        cloud: Cloud, tmp_path: Path) -> None:
    synced(cloud)
    mountpoint = tmp_path / "mnt"
    mountpoint.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "encfs", "mount", "--foreground", "--sync-every", "1s",
                                "--store", str(cloud.store), str(mountpoint)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mounted = Mounted(cloud.store, mountpoint, process, tmp_path / "mnt.out")
    try:
        assert poll(lambda: os.path.ismount(mountpoint), timeout=20)
        cloud.put("live/new.txt", b"arrived\n")
        path = mountpoint / "Synced" / "new.txt"
        assert poll(lambda: path.exists(), timeout=15)
        assert path.read_bytes() == b"arrived\n"
        assert os.getxattr(path, "user.encord.url").decode() == f"s3://{cloud.bucket}/live/new.txt"
        cloud.s3.delete_object(Bucket=cloud.bucket, Key="live/new.txt")
        assert poll(lambda: not path.exists(), timeout=15)
    finally:
        stop_mount(mounted)
