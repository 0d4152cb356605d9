"""Image groups and image sequences, from the mount (setfattr) and the command line."""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from encfs.cli import main

from conftest import Mounted, errors_of
from media import image_bytes


def level_image(level: int, size: tuple[int, int] = (64, 48), fmt: str = "PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (level, level, level)).save(out, format=fmt)
    return out.getvalue()


def fill(folder: Path, count: int, size: tuple[int, int] = (64, 48)) -> list[str]:
    folder.mkdir(parents=True)
    names = [f"frame_{i:03d}.png" for i in range(count)]
    for i, name in enumerate(names):
        (folder / name).write_bytes(level_image(20 + i * 40 % 230, size))
    return names


def batch(path: Path, kind: str) -> None:
    done = subprocess.run(
        ["setfattr", "-n", "user.encord.batch", "-v", kind, str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


def decode(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_image_group_from_mount(mount: Mounted) -> None:
    names = fill(mount.path / "cams" / "views", 3)
    (mount.path / "cams" / "views" / "big.png").write_bytes(image_bytes("PNG", (200, 100)))
    batch(mount.path / "cams" / "views", "image_group")
    group = mount.path / "cams" / "views.imagegroup"
    assert os.getxattr(group, "user.encord.kind") == b"image_group"
    manifest = json.loads(group.read_text())
    assert [f["name"] for f in manifest["frames"]] == ["big.png", *names]
    assert manifest["frames"][0]["path"] == "views/big.png"
    assert (manifest["frames"][0]["width"], manifest["frames"][0]["height"]) == (200, 100)
    assert os.getxattr(group, "user.encord.frames") == b"4"


def test_image_sequence_from_mount_is_a_real_video(mount: Mounted) -> None:
    fill(mount.path / "clips" / "walk", 6)
    batch(mount.path / "clips" / "walk", "image_sequence")
    video = mount.path / "clips" / "walk.imagesequence.mp4"
    assert os.getxattr(video, "user.encord.kind") == b"image_sequence"
    assert os.getxattr(video, "user.encord.frames") == b"6"
    assert (os.getxattr(video, "user.encord.width"), os.getxattr(video, "user.encord.height")) == (
        b"64",
        b"48",
    )
    assert float(os.getxattr(video, "user.encord.fps")) > 0
    frames = decode(video)
    assert len(frames) == 6
    levels = [int(f.mean()) for f in frames]
    assert levels == sorted(levels)  # name order kept
    assert abs(levels[0] - 20) < 8


def test_sequence_of_several_sizes_makes_one_per_size(mount: Mounted, tmp_path: Path) -> None:
    images = []
    for i, size in enumerate([(64, 48), (32, 32), (64, 48)]):
        images.append(tmp_path / f"i{i}.png")
        images[-1].write_bytes(level_image(100, size))
    (mount.path / "f").mkdir()
    result = CliRunner().invoke(
        main,
        ["batch", "image-sequence", "--store", str(mount.store), "/f", "--name", "mix", *map(str, images)],
    )
    assert result.exit_code == 0, result.output
    assert "2 different sizes" in result.output
    listing = sorted(os.listdir(mount.path / "f"))
    assert listing == ["mix", "mix-32x32.imagesequence.mp4", "mix-64x48.imagesequence.mp4"]
    assert len(decode(mount.path / "f" / "mix-64x48.imagesequence.mp4")) == 2


def test_tiff_is_refused_for_sequences(mount: Mounted, tmp_path: Path) -> None:
    (tmp_path / "a.tif").write_bytes(image_bytes("TIFF"))
    (mount.path / "f").mkdir()
    result = CliRunner().invoke(
        main,
        [
            "batch",
            "image-sequence",
            "--store",
            str(mount.store),
            "/f",
            "--name",
            "t",
            str(tmp_path / "a.tif"),
        ],
    )
    assert result.exit_code != 0
    assert "TIFF" in result.stderr
    assert os.listdir(mount.path / "f") == []
    (mount.path / "f" / "t").mkdir()
    (mount.path / "f" / "t" / "a.tif").write_bytes(image_bytes("TIFF"))
    with pytest.raises(OSError) as exc:
        os.setxattr(mount.path / "f" / "t", "user.encord.batch", b"image_sequence")
    assert exc.value.errno == errno.EINVAL
    assert "TIFF" in errors_of(mount)


def test_image_group_from_local_files_with_cli(store: Path, tmp_path: Path) -> None:
    files = []
    for i in range(5):
        files.append(tmp_path / f"v{i}.jpg")
        files[-1].write_bytes(image_bytes("JPEG", (40 + i, 30)))
    runner = CliRunner()
    assert runner.invoke(main, ["folder", "create", "--store", str(store), "cams"]).exit_code == 0
    result = runner.invoke(
        main, ["batch", "image-group", "--store", str(store), "cams", "--name", "rig", *map(str, files)]
    )
    assert result.exit_code == 0, result.output
    assert "created /cams/rig.imagegroup" in result.output
    assert "uploading 5 images" in result.stderr
    info = json.loads(
        runner.invoke(main, ["info", "--json", "--store", str(store), "cams/rig.imagegroup"]).output
    )
    assert info["kind"] == "image_group" and info["frames"] == 5
    assert info["members"] == [f"/cams/rig/v{i}.jpg" for i in range(5)]
    frame = json.loads(
        runner.invoke(main, ["info", "--json", "--store", str(store), "cams/rig/v2.jpg"]).output
    )
    assert frame["groups"] == ["/cams/rig.imagegroup"]


def test_group_from_folder_with_cli(mount: Mounted) -> None:
    fill(mount.path / "a" / "shots", 2)
    result = CliRunner().invoke(
        main, ["batch", "image-group", "--store", str(mount.store), "--from-folder", "a/shots"]
    )
    assert result.exit_code == 0, result.output
    assert (mount.path / "a" / "shots.imagegroup").exists()


def test_constituents_are_busy_while_grouped(mount: Mounted) -> None:
    fill(mount.path / "g" / "set", 2)
    batch(mount.path / "g" / "set", "image_group")
    frame = mount.path / "g" / "set" / "frame_000.png"
    (mount.path / "elsewhere").mkdir()
    for action in (
        frame.unlink,
        lambda: frame.rename(mount.path / "elsewhere" / "x.png"),
        lambda: (mount.path / "g" / "set").rename(mount.path / "g" / "renamed"),
    ):
        with pytest.raises(OSError) as exc:
            action()
        assert exc.value.errno == errno.EBUSY
    with pytest.raises(OSError) as exc:
        frame.write_bytes(level_image(7))
    assert exc.value.errno == errno.EBUSY
    assert frame.read_bytes() == level_image(20)
    assert "frame of /g/set.imagegroup" in errors_of(mount)
    result = CliRunner().invoke(main, ["rm", "--store", str(mount.store), "g/set/frame_000.png"])
    assert result.exit_code != 0 and "delete the group first" in result.stderr


def test_deleting_the_group_frees_constituents(mount: Mounted) -> None:
    fill(mount.path / "g" / "set", 2)
    batch(mount.path / "g" / "set", "image_sequence")
    (mount.path / "g" / "set.imagesequence.mp4").unlink()
    frame = mount.path / "g" / "set" / "frame_000.png"
    assert os.getxattr(frame, "user.encord.kind") == b"image"
    frame.unlink()
    assert os.listdir(mount.path / "g" / "set") == ["frame_001.png"]


def test_folder_is_not_synced(mount: Mounted) -> None:
    fill(mount.path / "g" / "set", 2)
    batch(mount.path / "g" / "set", "image_group")
    (mount.path / "g" / "set" / "late.png").write_bytes(level_image(9))
    manifest = json.loads((mount.path / "g" / "set.imagegroup").read_text())
    assert len(manifest["frames"]) == 2
    (mount.path / "g" / "set" / "late.png").unlink()  # not a frame: free to go


def test_rm_r_of_folder_with_group_and_frames(mount: Mounted) -> None:
    fill(mount.path / "g" / "set", 2)
    batch(mount.path / "g" / "set", "image_group")
    assert subprocess.run(["rm", "-r", str(mount.path / "g" / "set")], capture_output=True).returncode != 0
    assert CliRunner().invoke(main, ["rm", "-r", "--store", str(mount.store), "g"]).exit_code == 0
    assert os.listdir(mount.path) == []
    assert [p for p in (mount.store / "blobs").rglob("*") if p.is_file()] == []


def test_group_files_cannot_be_written(mount: Mounted) -> None:
    fill(mount.path / "g" / "set", 1)
    batch(mount.path / "g" / "set", "image_group")
    group = mount.path / "g" / "set.imagegroup"
    before = group.read_bytes()
    with pytest.raises(OSError) as exc, open(group, "r+b") as f:
        f.write(b"{}")
    assert exc.value.errno == errno.EPERM
    assert group.read_bytes() == before
    group.rename(mount.path / "g" / "renamed.imagegroup")  # renaming in place is fine
    assert (
        json.loads((mount.path / "g" / "renamed.imagegroup").read_text())["frames"][0]["path"]
        == "set/frame_000.png"
    )


def test_batching_a_folder_with_non_images_is_refused(mount: Mounted) -> None:
    fill(mount.path / "g" / "set", 1)
    (mount.path / "g" / "set" / "notes.txt").write_text("x")
    with pytest.raises(OSError) as exc:
        os.setxattr(mount.path / "g" / "set", "user.encord.batch", b"image_group")
    assert exc.value.errno == errno.EINVAL
    assert "notes.txt" in errors_of(mount)
    assert sorted(os.listdir(mount.path / "g")) == ["set"]


def test_folder_info_counts_kinds(mount: Mounted) -> None:
    fill(mount.path / "g" / "set", 3)
    (mount.path / "g" / "doc.txt").write_text("hello")
    batch(mount.path / "g" / "set", "image_group")
    result = CliRunner().invoke(main, ["folder", "info", "--json", "--store", str(mount.store), "g"])
    summary = json.loads(result.output)
    assert summary["kinds"] == {"image": 3, "image_group": 1, "text": 1}
    assert summary["files"] == 5 and summary["folders"] == 1
    assert summary["size"] == sum(p.stat().st_size for p in (mount.path / "g").rglob("*") if p.is_file())


def test_sequence_frames_are_close_to_their_images(mount: Mounted) -> None:
    folder = mount.path / "v" / "grad"
    folder.mkdir(parents=True)
    sources = []
    for i in range(5):
        pixels = np.zeros((48, 64, 3), dtype=np.uint8)
        pixels[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
        pixels[..., 1] = (i * 50) % 256
        pixels[..., 2] = np.linspace(255, 0, 48, dtype=np.uint8)[:, None]
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, format="PNG")
        (folder / f"f{i}.png").write_bytes(out.getvalue())
        sources.append(pixels.astype(np.int16))
    batch(folder, "image_sequence")
    frames = decode(mount.path / "v" / "grad.imagesequence.mp4")
    assert len(frames) == len(sources)
    for decoded, source in zip(frames, sources, strict=True):
        assert decoded.shape == source.shape
        assert np.abs(decoded.astype(np.int16) - source).mean() < 6


def test_batching_a_top_level_folder_is_refused(mount: Mounted) -> None:
    fill(mount.path / "top", 1)
    with pytest.raises(OSError) as exc:
        os.setxattr(mount.path / "top", "user.encord.batch", b"image_group")
    assert exc.value.errno == errno.EPERM
    assert os.listdir(mount.path) == ["top"]
    assert "root" in errors_of(mount)
