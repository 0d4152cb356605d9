"""Search by what files are (--where expressions), typed metadata keys, and the index
following every change; results compared with a brute-force scan of random stores."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from encfs.errors import AlreadyExists, InvalidInput, NotFound
from encfs.model import Actor
from encfs.service import FilesService
from encfs.store import init_store, open_store

from media import image_bytes
from store_state import service_of

ME = Actor.local()
METADATA = "user.encord.client_metadata"


def put(service: FilesService, path: str, content: bytes, metadata: dict[str, Any] | None = None) -> None:
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts)):
        folder = "/" + "/".join(parts[:depth])
        try:
            service.lookup(ME, folder)
        except NotFound:
            service.create_folder(ME, folder)
    item = service.create_item(ME, path)
    draft = service.start_draft(ME, item, keep_content=False)
    draft.write(content, 0)
    service.commit(ME, path, item.id, draft, durable=False)
    if metadata is not None:
        service.set_attribute(ME, path, METADATA, json.dumps(metadata).encode())


def found(service: FilesService, query: str) -> list[str]:
    return [hit.path for hit in service.search(ME, query)]


@pytest.fixture
def service(store: Path):
    opened = open_store(store)
    try:
        yield FilesService(opened)
    finally:
        opened.close()


@pytest.fixture
def farm(service: FilesService) -> FilesService:
    put(service, "/Farm/notes.txt", b"a few words", {"site": "north", "score": 0.9, "tags": ["car", "Bus"]})
    put(service, "/Farm/big.txt", b"x" * 6_000_000, {"site": "south", "score": 0.2})
    put(service, "/Farm/Birds/wide.png", image_bytes("PNG", (1100, 8)), {"site": "north", "score": 0.5})
    put(service, "/Shots/small.png", image_bytes("PNG", (64, 48)), {"site": "east"})
    put(service, "/Shots/tall.jpg", image_bytes("JPEG", (16, 900)))
    service.create_dataset(ME, "Train", add=["/Farm/Birds/wide.png", "/Shots/small.png"])
    return service


WHERE = [
    ("kind=image", ["/Farm/Birds/wide.png", "/Shots/small.png", "/Shots/tall.jpg"]),
    ("kind=image,width>=1024", ["/Farm/Birds/wide.png"]),
    ("kind!=image", ["/Farm/big.txt", "/Farm/notes.txt"]),
    ("height>800", ["/Shots/tall.jpg"]),
    ("size>5MB", ["/Farm/big.txt"]),
    ("size<20B", ["/Farm/notes.txt"]),
    ("created>2020-01-01,kind=text", ["/Farm/big.txt", "/Farm/notes.txt"]),
    ("created<2020-01-01", []),
    ("in:Train", ["/Farm/Birds/wide.png", "/Shots/small.png"]),
    ("not-in:Train,kind=image", ["/Shots/tall.jpg"]),
    ("under:/Farm", ["/Farm/Birds/wide.png", "/Farm/big.txt", "/Farm/notes.txt"]),
    ("under:/Farm/Birds", ["/Farm/Birds/wide.png"]),
    ("meta.site=north", ["/Farm/Birds/wide.png", "/Farm/notes.txt"]),
    ("meta.site!=north", ["/Farm/big.txt", "/Shots/small.png"]),
    ("meta.score>0.4", ["/Farm/Birds/wide.png", "/Farm/notes.txt"]),
    ("meta.tags~BU", ["/Farm/notes.txt"]),
    ("meta.tags=car", ["/Farm/notes.txt"]),
    ("meta.site=north,under:/Farm/Birds,in:Train", ["/Farm/Birds/wide.png"]),
    ("png,meta.site=east", ["/Shots/small.png"]),
    ("name~.TXT,size>1MB", ["/Farm/big.txt"]),
]


@pytest.mark.parametrize(("query", "paths"), WHERE)
def test_where_expressions(farm: FilesService, query: str, paths: list[str]) -> None:
    assert found(farm, query) == paths


def test_bad_queries_are_refused_with_a_sentence(farm: FilesService) -> None:
    for query, says in (("in:Nope", "no Dataset is named Nope"), ("under:/Nowhere", "no such folder"),
                        ("widht>3", "unknown field")):
        with pytest.raises((InvalidInput, NotFound)) as refused:
            farm.search(ME, query)
        assert says in str(refused.value)
        assert says in farm.refusals(ME)[-1]


def test_search_follows_rename_move_delete_and_metadata(farm: FilesService) -> None:
    farm.move(ME, "/Farm/notes.txt", "/Shots/renamed.txt")
    assert found(farm, "notes") == []
    assert found(farm, "meta.site=north") == ["/Farm/Birds/wide.png", "/Shots/renamed.txt"]
    assert found(farm, "under:/Shots,kind=text") == ["/Shots/renamed.txt"]
    farm.move(ME, "/Farm/Birds", "/Shots/Birds")
    assert found(farm, "width>=1024") == ["/Shots/Birds/wide.png"]
    assert found(farm, "under:/Farm") == ["/Farm/big.txt"]
    farm.set_attribute(ME, "/Shots/Birds/wide.png", METADATA, b'{"site": "west"}')
    assert found(farm, "meta.site=north") == ["/Shots/renamed.txt"]
    assert found(farm, "meta.site=west") == ["/Shots/Birds/wide.png"]
    assert found(farm, "meta.score>0.4") == ["/Shots/renamed.txt"]
    farm.remove_attribute(ME, "/Shots/renamed.txt", METADATA)
    assert found(farm, "meta.site=north") == []
    farm.remove_item(ME, "/Shots/Birds/wide.png")
    assert found(farm, "kind=image,width>=1024") == []
    assert found(farm, "in:Train") == ["/Shots/small.png"]
    put(farm, "/Shots/again.txt", b"1234")
    assert found(farm, "size=4") == ["/Shots/again.txt"]


def test_metadata_schema_types_checks_and_indexes(farm: FilesService) -> None:
    schema = farm.metadata_schema
    schema.add(ME, "score", "number", [])
    schema.add(ME, "site", "enum", ["north", "south", "east", "west"])
    with pytest.raises(AlreadyExists):
        schema.add(ME, "site", "text", [])
    assert [(k.key, k.type) for k in schema.declared()] == [("score", "number"), ("site", "enum")]
    assert found(farm, "meta.score>=0.5") == ["/Farm/Birds/wide.png", "/Farm/notes.txt"]
    assert found(farm, "meta.score<0.5") == ["/Farm/big.txt"]
    with pytest.raises(InvalidInput) as refused:
        farm.set_attribute(ME, "/Shots/tall.jpg", METADATA, b'{"score": "high"}')
    assert "'score' is declared number" in str(refused.value)
    assert "'score' is declared number" in farm.refusals(ME)[-1]
    with pytest.raises(InvalidInput):
        farm.set_attribute(ME, "/Shots/tall.jpg", METADATA, b'{"site": "up"}')
    with pytest.raises(InvalidInput):
        farm.search(ME, "meta.score>high")
    with pytest.raises(InvalidInput):
        farm.search(ME, "meta.site=up")
    with pytest.raises(InvalidInput) as refused:
        schema.add(ME, "tags", "number", [])  # notes.txt holds a list
    assert "cannot declare 'tags' number" in str(refused.value)
    farm.set_attribute(ME, "/Shots/tall.jpg", METADATA, b'{"score": 3, "when": "2026-03-01"}')
    schema.add(ME, "when", "datetime", [])
    assert found(farm, "meta.when>2026-01-01") == ["/Shots/tall.jpg"]
    assert found(farm, "meta.score>1") == ["/Shots/tall.jpg"]
    schema.remove(ME, "score")
    assert found(farm, "meta.score=3") == ["/Shots/tall.jpg"]  # free-form again: compared as text
    with pytest.raises(NotFound):
        schema.remove(ME, "score")
    for key, kind, values in (("bad key!", "text", []), ("k", "colour", []), ("k", "enum", []),
                              ("k", "text", ["a"])):
        with pytest.raises(InvalidInput):
            schema.add(ME, key, kind, values)


def test_limit_and_streaming(service: FilesService) -> None:
    service.create_folder(ME, "/bulk")
    for i in range(300):
        service.create_item(ME, f"/bulk/frame_{i:05d}.jpg")
    streamed = service.find(ME, "frame_00", [], None, 10)
    first = next(streamed)
    assert first.path.startswith("/bulk/frame_00")
    assert len([first, *streamed]) == 10
    assert len(found(service, "frame_001")) == 100
    assert len(service.search(ME, "frame", limit=7)) == 7


# ---------------------------------------------------------------- against a brute-force scan

NAMES = st.text(alphabet="abAB_1.", min_size=1, max_size=14)
SITES = ["north", "south", None]


@dataclass
class Made:
    path: str
    name: str
    kind: str
    size: int
    width: int | None
    metadata: dict[str, Any]
    folder: str
    datasets: set[str] = field(default_factory=set)


def brute(made: list[Made], text: str | None, where: list[tuple[str, str, Any]]) -> list[str]:
    def holds(m: Made, field_: str, op: str, value: Any) -> bool:
        if field_ == "kind":
            return (m.kind == value) == (op == "=")
        if field_ == "size":
            return m.size > value if op == ">" else m.size <= value
        if field_ == "width":
            return m.width is not None and m.width >= value
        if field_ == "under":
            return m.folder == value or m.folder.startswith(value + "/")
        if field_ == "in":
            return value in m.datasets
        if field_ == "not-in":
            return value not in m.datasets
        if field_ == "meta.site":
            return m.metadata.get("site") == value
        return "score" in m.metadata and m.metadata["score"] > value

    return sorted(m.path for m in made
                  if (text is None or text.casefold() in m.name.casefold())
                  and all(holds(m, *c) for c in where))


def expression(field_: str, op: str, value: Any) -> str:
    return f"{field_}:{value}" if field_ in ("under", "in", "not-in") else f"{field_}{op}{value}"


CONDITIONS = st.one_of(
    st.tuples(st.just("kind"), st.sampled_from(["=", "!="]), st.sampled_from(["image", "text"])),
    st.tuples(st.just("size"), st.sampled_from([">", "<="]), st.integers(0, 300)),
    st.tuples(st.just("width"), st.just(">="), st.sampled_from([8, 16, 40])),
    st.tuples(st.just("under"), st.just(":"), st.sampled_from(["/f0", "/f1", "/f0/s"])),
    st.tuples(st.sampled_from(["in", "not-in"]), st.just(":"), st.just("D")),
    st.tuples(st.just("meta.site"), st.just("="), st.sampled_from(["north", "south"])),
    st.tuples(st.just("meta.score"), st.just(">"), st.sampled_from([0.25, 0.5])),
)
FOLDERS = st.sampled_from(["/f0", "/f1", "/f0/s"])
SCORES = st.sampled_from([None, 0.1, 0.4, 0.9])
ITEMS = st.lists(st.tuples(NAMES, FOLDERS, st.sampled_from(["text", "image"]), st.integers(1, 300),
                           st.sampled_from(SITES), SCORES, st.booleans()),
                 min_size=1, max_size=12)
# a query's text: none, a short random one, or (item, start, length, upper) to cut from an
# item's name: long enough to be read through whole grams
TEXTS = st.one_of(st.none(), st.text(alphabet="abAB_1.", min_size=1, max_size=3),
                  st.tuples(st.integers(0, 11), st.integers(0, 8), st.integers(8, 14), st.booleans()))
QUERIES = st.lists(st.tuples(TEXTS, st.lists(CONDITIONS, max_size=3)), min_size=1, max_size=6)


def text_of(spec: str | tuple | None, made: list[Made]) -> str | None:
    if not isinstance(spec, tuple):
        return spec
    index, start, length, upper = spec
    name = made[index % len(made)].name
    cut = name[start : start + length] or name
    return cut.upper() if upper else cut


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(items=ITEMS, queries=QUERIES, declared=st.booleans())
def test_search_matches_a_brute_force_scan(items: list[tuple], queries: list[tuple], declared: bool) -> None:
    base = Path(tempfile.mkdtemp(prefix="search-hyp-", dir="/tmp"))
    try:
        store = init_store(base / "store")
        with service_of(store) as service:
            for folder in ("/f0", "/f1", "/f0/s"):
                service.create_folder(ME, folder)
            if declared:
                service.metadata_schema.add(ME, "score", "number", [])
            made: list[Made] = []
            for i, (name, folder, kind, size, site, score, in_d) in enumerate(items):
                name = f"{name}{i}"
                width = 8 + size % 40 if kind == "image" else None
                content = image_bytes("PNG", (width, 4)) if width else b"t" * size
                metadata = {k: v for k, v in (("site", site), ("score", score)) if v is not None}
                put(service, f"{folder}/{name}", content, metadata or None)
                size = service.lookup(ME, f"{folder}/{name}").size
                made.append(Made(f"{folder}/{name}", name, kind, size, width, metadata, folder,
                                 {"D"} if in_d else set()))
            service.create_dataset(ME, "D", add=[m.path for m in made if m.datasets])
            for spec, where in queries:
                text = text_of(spec, made)
                if text is None and not where:
                    continue
                hits = service.find(ME, text, [expression(*c) for c in where], None, None)
                assert sorted(hit.path for hit in hits) == brute(made, text, where), (text, where)
    finally:
        shutil.rmtree(base, ignore_errors=True)
