"""Real command-line tools on the mount: cp, mv, rm, rsync, find, getfattr, setfattr."""

from __future__ import annotations

import filecmp
import os
import subprocess
from pathlib import Path

import pytest

from conftest import Mounted, errors_of


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True)


def make_tree(root: Path) -> None:
    (root / "photos" / "2024").mkdir(parents=True)
    (root / "photos" / "2024" / "a.bin").write_bytes(os.urandom(70_000))
    (root / "photos" / "b.txt").write_text("bee\n")
    (root / "photos" / "empty").write_bytes(b"")
    (root / "photos" / "deep" / "er" / "est").mkdir(parents=True)
    (root / "photos" / "deep" / "er" / "est" / "z.bin").write_bytes(os.urandom(3000))
    os.utime(root / "photos" / "b.txt", ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))


def same_tree(left: Path, right: Path) -> bool:
    cmp = filecmp.dircmp(left, right)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(left, right, cmp.common_files, shallow=False)
    if mismatch or errors:
        return False
    return all(same_tree(left / d, right / d) for d in cmp.common_dirs)


def test_cp_r_into_mount_and_back(tmp_path: Path, mount: Mounted) -> None:
    make_tree(tmp_path / "src")
    assert run("cp", "-r", str(tmp_path / "src" / "photos"), str(mount.path)).returncode == 0
    assert same_tree(tmp_path / "src" / "photos", mount.path / "photos")
    assert run("cp", "-r", str(mount.path / "photos"), str(tmp_path / "back")).returncode == 0
    assert same_tree(tmp_path / "src" / "photos", tmp_path / "back")


def test_cp_p_keeps_times_and_mode(tmp_path: Path, mount: Mounted) -> None:
    make_tree(tmp_path / "src")
    os.chmod(tmp_path / "src" / "photos" / "b.txt", 0o640)
    assert run("cp", "-rp", str(tmp_path / "src" / "photos"), str(mount.path)).returncode == 0
    st = (mount.path / "photos" / "b.txt").stat()
    assert st.st_mtime_ns == 1_600_000_000_000_000_000
    assert st.st_mode & 0o777 == 0o640


def test_rsync_a_into_mount_twice(tmp_path: Path, mount: Mounted) -> None:
    make_tree(tmp_path / "src")
    source = str(tmp_path / "src" / "photos") + "/"
    target = str(mount.path / "photos")
    first = run("rsync", "-a", source, target)
    assert first.returncode == 0, first.stderr
    assert same_tree(tmp_path / "src" / "photos", mount.path / "photos")
    assert (mount.path / "photos" / "b.txt").stat().st_mtime_ns == 1_600_000_000_000_000_000
    second = run("rsync", "-a", "--itemize-changes", source, target)
    assert second.returncode == 0
    assert second.stdout.strip() == ""  # nothing to do: sizes and times match
    (tmp_path / "src" / "photos" / "b.txt").write_text("changed\n")
    third = run("rsync", "-a", source, target)
    assert third.returncode == 0
    assert (mount.path / "photos" / "b.txt").read_text() == "changed\n"
    assert [p for p in mount.path.rglob(".b.txt*")] == []  # rsync's temp file was renamed away


def test_rsync_with_xattrs_round_trips_through_a_backup(tmp_path: Path, mount: Mounted) -> None:
    """rsync -aX copies every user.* attribute. Out of the mount that includes the
    computed user.encord.* ones; into it they are refused (EPERM: encfs computes them),
    which rsync reports as exit 23, so the documented filter leaves them out and the
    user's own attributes travel."""
    (mount.path / "data").mkdir()
    (mount.path / "data" / "a.txt").write_text("alpha\n")
    os.setxattr(mount.path / "data" / "a.txt", "user.note", b"reviewed")
    backup = tmp_path / "backup"
    out = run("rsync", "-aX", f"{mount.path / 'data'}/", str(backup))
    assert out.returncode == 0, out.stderr
    assert os.getxattr(backup / "a.txt", "user.encord.kind") == b"text"
    assert os.getxattr(backup / "a.txt", "user.note") == b"reviewed"
    refused = run("rsync", "-aX", f"{backup}/", str(mount.path / "plain-x"))
    assert refused.returncode == 23 and "user.encord.id" in refused.stderr
    restored = run("rsync", "-aX", "--filter=-x user.encord.*", f"{backup}/", str(mount.path / "restored"))
    assert restored.returncode == 0, restored.stderr
    assert (mount.path / "restored" / "a.txt").read_text() == "alpha\n"
    assert os.getxattr(mount.path / "restored" / "a.txt", "user.note") == b"reviewed"


def test_rsync_a_into_root_is_refused_for_files(tmp_path: Path, mount: Mounted) -> None:
    (tmp_path / "loose.txt").write_text("x")
    done = run("rsync", "-a", str(tmp_path / "loose.txt"), str(mount.path) + "/")
    assert done.returncode != 0
    assert os.listdir(mount.path) == []
    assert "files cannot be stored at the root" in errors_of(mount)


def test_mv_within_mount(mount: Mounted, tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    run("cp", "-r", str(tmp_path / "src" / "photos"), str(mount.path))
    (mount.path / "archive").mkdir()
    assert run("mv", str(mount.path / "photos"), str(mount.path / "archive")).returncode == 0
    assert same_tree(tmp_path / "src" / "photos", mount.path / "archive" / "photos")
    assert run("mv", str(mount.path / "archive" / "photos" / "b.txt"),
               str(mount.path / "archive" / "photos" / "2024")).returncode == 0
    assert (mount.path / "archive" / "photos" / "2024" / "b.txt").read_text() == "bee\n"


def test_mv_out_of_mount_and_in(mount: Mounted, tmp_path: Path) -> None:
    (mount.path / "f").mkdir()
    (tmp_path / "local.bin").write_bytes(b"L" * 5000)
    assert run("mv", str(tmp_path / "local.bin"), str(mount.path / "f")).returncode == 0
    assert (mount.path / "f" / "local.bin").read_bytes() == b"L" * 5000
    assert run("mv", str(mount.path / "f" / "local.bin"), str(tmp_path / "out.bin")).returncode == 0
    assert (tmp_path / "out.bin").read_bytes() == b"L" * 5000
    assert os.listdir(mount.path / "f") == []


def test_rm_r(mount: Mounted, tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    run("cp", "-r", str(tmp_path / "src" / "photos"), str(mount.path))
    assert run("rm", "-r", str(mount.path / "photos")).returncode == 0
    assert os.listdir(mount.path) == []
    assert [p for p in (mount.store / "blobs").rglob("*") if p.is_file()] == []


def test_find_lists_everything_and_no_control_entries(mount: Mounted, tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    run("cp", "-r", str(tmp_path / "src" / "photos"), str(mount.path))
    found = run("find", str(mount.path)).stdout.split()
    expected = run("find", str(tmp_path / "src")).stdout.split()
    rel = sorted(os.path.relpath(p, mount.path) for p in found)
    assert rel == sorted(os.path.relpath(p, tmp_path / "src") for p in expected)
    assert not any(".encfs" in p or ".search" in p for p in found)
    by_size = run("find", str(mount.path), "-type", "f", "-size", "+10k").stdout.split()
    assert [os.path.basename(p) for p in by_size] == ["a.bin"]


def test_ls_l_and_du(mount: Mounted, tmp_path: Path) -> None:
    make_tree(tmp_path / "src")
    run("cp", "-r", str(tmp_path / "src" / "photos"), str(mount.path))
    listing = run("ls", "-l", str(mount.path / "photos")).stdout
    assert "b.txt" in listing and " 4 " in listing
    du = run("du", "-sb", str(mount.path / "photos")).stdout.split()[0]
    assert int(du) >= 70_000 + 4 + 3000


def test_getfattr_shows_encord_attributes(mount: Mounted) -> None:
    (mount.path / "d").mkdir()
    (mount.path / "d" / "notes.txt").write_text("plain text\n")
    out = run("getfattr", "-d", "-m", "-", str(mount.path / "d" / "notes.txt")).stdout
    assert 'user.encord.kind="text"' in out
    assert 'user.encord.mime="text/plain"' in out
    assert 'user.encord.client_metadata="{}"' in out


def test_setfattr_user_attributes_round_trip(mount: Mounted) -> None:
    (mount.path / "d").mkdir()
    target = mount.path / "d" / "f"
    target.write_text("x")
    assert run("setfattr", "-n", "user.team", "-v", "vision", str(target)).returncode == 0
    assert run("getfattr", "--only-values", "-n", "user.team", str(target)).stdout == "vision"
    assert run("setfattr", "-x", "user.team", str(target)).returncode == 0
    missing = run("getfattr", "-n", "user.team", str(target))
    assert missing.returncode != 0 and "No such attribute" in missing.stderr


def test_setfattr_client_metadata_and_description(mount: Mounted) -> None:
    folder = mount.path / "d"
    folder.mkdir()
    item = folder / "f"
    item.write_text("x")
    meta = '{"site": "north", "n": 3}'
    assert run("setfattr", "-n", "user.encord.client_metadata", "-v", meta, str(item)).returncode == 0
    got = run("getfattr", "--only-values", "-n", "user.encord.client_metadata", str(item)).stdout
    assert got == '{"n": 3, "site": "north"}'
    assert run("setfattr", "-n", "user.encord.description", "-v", "Chickens", str(folder)).returncode == 0
    assert run("getfattr", "--only-values", "-n", "user.encord.description", str(folder)).stdout == "Chickens"


@pytest.mark.parametrize("bad", ["not json", "[1, 2]", '"text"', "{unclosed"])
def test_setfattr_invalid_client_metadata_is_einval(mount: Mounted, bad: str) -> None:
    (mount.path / "d").mkdir()
    item = mount.path / "d" / "f"
    item.write_text("x")
    os.setxattr(item, "user.encord.client_metadata", b'{"keep": true}')
    with pytest.raises(OSError) as exc:
        os.setxattr(item, "user.encord.client_metadata", bad.encode())
    assert exc.value.errno == 22  # EINVAL
    assert os.getxattr(item, "user.encord.client_metadata") == b'{"keep": true}'
    assert "client metadata must be a JSON object" in errors_of(mount)


def test_computed_attributes_cannot_be_set(mount: Mounted) -> None:
    (mount.path / "d").mkdir()
    item = mount.path / "d" / "f"
    item.write_text("x")
    with pytest.raises(OSError) as exc:
        os.setxattr(item, "user.encord.kind", b"image")
    assert exc.value.errno == 1  # EPERM
    assert os.getxattr(item, "user.encord.kind") == b"text"


def test_binary_user_attribute_round_trip(mount: Mounted) -> None:
    (mount.path / "d").mkdir()
    item = mount.path / "d" / "f"
    item.write_text("x")
    value = bytes(range(256))
    os.setxattr(item, "user.blob", value)
    assert os.getxattr(item, "user.blob") == value
    assert "user.blob" in os.listxattr(item)


def test_other_attribute_namespaces_are_not_supported(mount: Mounted) -> None:
    """ACLs, capabilities and labels are not kept: ENOTSUP, which cp -p and rsync -X
    read as "not supported here", and the file is written as usual."""
    (mount.path / "d").mkdir()
    item = mount.path / "d" / "f"
    item.write_text("x")
    for name in ("security.capability", "system.posix_acl_access", "trusted.note"):
        with pytest.raises(OSError) as exc:
            os.getxattr(item, name)
        assert exc.value.errno == 95, name  # EOPNOTSUPP
    with pytest.raises(OSError) as exc:
        os.setxattr(item, "trusted.note", b"v")
    assert exc.value.errno == 95
    with open(item, "a") as f:  # a write, which asks for security.capability first
        f.write("y")
    assert item.read_text() == "xy"
    assert "trusted.note" not in os.listxattr(item)
