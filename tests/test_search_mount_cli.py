"""Search by attributes where people use it: `/.search/EXPR,EXPR/` on a mount, setfattr
checked against declared keys, and `encfs search --where` / `encfs metadata-schema`."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import Mounted
from media import image_bytes

METADATA = "user.encord.client_metadata"


def encfs(store: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "encfs", *args, "--store", str(store)],
                          capture_output=True, text=True, timeout=120)


def errors(mount: Mounted) -> str:
    return (mount.path / ".encfs" / "errors").read_text()


def fill(root: Path) -> None:
    for folder in ("Farm", "Farm/Birds", "Shots"):
        (root / folder).mkdir()
    (root / "Farm" / "notes.txt").write_bytes(b"a few words")
    (root / "Farm" / "Birds" / "wide.png").write_bytes(image_bytes("PNG", (1100, 8)))
    (root / "Shots" / "small.png").write_bytes(image_bytes("PNG", (64, 48)))
    os.setxattr(root / "Farm" / "notes.txt", METADATA, b'{"site": "north", "score": 0.9}')
    os.setxattr(root / "Farm" / "Birds" / "wide.png", METADATA, b'{"site": "north", "score": 0.4}')
    os.setxattr(root / "Shots" / "small.png", METADATA, b'{"site": "south"}')


def links(mount: Mounted, segment: str) -> list[str]:
    folder = mount.path / ".search" / segment
    return sorted(os.readlink(folder / name) for name in os.listdir(folder))


def test_search_path_form_on_the_mount(mount: Mounted) -> None:
    fill(mount.path)
    assert links(mount, "kind=image,width>=1024") == ["../../Farm/Birds/wide.png"]
    assert links(mount, "kind=image,meta.site=north") == ["../../Farm/Birds/wide.png"]
    assert links(mount, "meta.site=north") == ["../../Farm/Birds/wide.png", "../../Farm/notes.txt"]
    assert links(mount, "png,under:Shots") == ["../../Shots/small.png"]
    assert links(mount, "under:Farm%2FBirds") == ["../../Farm/Birds/wide.png"]
    assert (mount.path / ".search" / "meta.score>0.5" / "notes.txt").read_bytes() == b"a few words"
    assert links(mount, "small") == ["../../Shots/small.png"]  # plain text as before
    os.rename(mount.path / "Shots" / "small.png", mount.path / "Farm" / "small.png")
    assert links(mount, "kind=image,under:Farm") == ["../../Farm/Birds/wide.png", "../../Farm/small.png"]
    with pytest.raises(OSError) as refused:
        os.listdir(mount.path / ".search" / "widht>=1024")
    assert refused.value.errno == errno.EINVAL
    assert "unknown field 'widht'" in errors(mount)
    with pytest.raises(OSError) as refused:
        os.listdir(mount.path / ".search" / "in:Nope")
    assert refused.value.errno == errno.EINVAL
    assert "no Dataset is named Nope" in errors(mount)


def test_declared_keys_are_checked_at_setfattr(mount: Mounted) -> None:
    fill(mount.path)
    done = encfs(mount.store, "metadata-schema", "add", "score", "number")
    assert done.returncode == 0, done.stderr
    target = mount.path / "Shots" / "small.png"
    with pytest.raises(OSError) as refused:
        os.setxattr(target, METADATA, b'{"score": "high"}')
    assert refused.value.errno == errno.EINVAL
    assert "'score' is declared number" in errors(mount)
    assert json.loads(os.getxattr(target, METADATA)) == {"site": "south"}  # nothing changed
    os.setxattr(target, METADATA, b'{"score": 2}')
    assert links(mount, "meta.score>1") == ["../../Shots/small.png"]


def test_cli_search_where_limit_and_refusals(mount: Mounted) -> None:
    fill(mount.path)
    store = mount.store
    done = encfs(store, "search", "--where", "kind=image", "--where", "meta.site=north")
    assert (done.returncode, done.stdout) == (0, "/Farm/Birds/wide.png\n")
    done = encfs(store, "search", "--kind", "image")
    assert done.stdout.split() == ["/Farm/Birds/wide.png", "/Shots/small.png"]
    done = encfs(store, "search", "N", "--where", "size<20B", "--json")
    assert [json.loads(line)["path"] for line in done.stdout.splitlines()] == ["/Farm/notes.txt"]
    done = encfs(store, "search", "png", "--limit", "1")
    assert done.returncode == 0 and len(done.stdout.split()) == 1
    for bad, says in (("widht>3", "unknown field 'widht'"), ("in:Nope", "no Dataset is named Nope"),
                      ("size>5XB", "a size is a number")):
        done = encfs(store, "search", "--where", bad)
        assert done.returncode != 0 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    done = encfs(store, "search")
    assert done.returncode == 1 and "give some text to search for" in done.stderr


def test_cli_metadata_schema(mount: Mounted) -> None:
    fill(mount.path)
    store = mount.store
    done = encfs(store, "metadata-schema", "add", "site", "enum", "--values", "north,south,east")
    assert done.returncode == 0
    assert encfs(store, "metadata-schema", "add", "when", "datetime").returncode == 0
    assert encfs(store, "metadata-schema", "ls").stdout == "site\tenum\tnorth,south,east\nwhen\tdatetime\n"
    for bad, says in ((("add", "x", "colour"), "'colour' is not a type"),
                      (("add", "site", "text"), "already declared"),
                      (("add", "score", "boolean"), "cannot declare 'score' boolean"),
                      (("add", "k", "enum"), "needs its values"), (("rm", "nope"), "no metadata key")):
        done = encfs(store, "metadata-schema", *bad)
        assert done.returncode != 0 and says in done.stderr and "Traceback" not in done.stderr, done.stderr
    done = encfs(store, "search", "--where", "meta.site=west")
    assert done.returncode != 0 and "site is one of north, south, east" in done.stderr
    assert encfs(store, "metadata-schema", "rm", "site").returncode == 0
    assert encfs(store, "search", "--where", "meta.site=north").stdout.split() == [
        "/Farm/Birds/wide.png", "/Farm/notes.txt"]
