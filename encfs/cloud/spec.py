"""Encord's JSON import spec ("Import from private cloud"), taken unchanged.

A spec that is not a JSON object, or has a top-level key Encord does not define, is
refused whole. Each entry is checked on its own (an `Entry`, or an `EntryError`
naming where it is: `videos[3]`), so that `--ignore-errors` can import the others.
Metadata given in the spec (`videoMetadata`, `imageMetadata`, `audioMetadata`) is
trusted: with it, the object is not read at import.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from encfs.errors import InvalidInput
from encfs.metadata import check_client_metadata
from encfs.model import Kind, Media

SINGLE_KINDS = {"videos": Kind.VIDEO, "images": Kind.IMAGE, "audio": Kind.AUDIO, "text": Kind.TEXT,
                "pdf": Kind.PDF, "nifti": Kind.NIFTI}
GROUP_SECTIONS = {"image_groups", "dicom_series"}
FLAGS = {"skip_duplicate_urls", "upsert_metadata"}
SECTION_ORDER = ("videos", "images", "image_groups", "dicom_series", "audio", "text", "pdf", "nifti")
TOP_LEVEL = set(SINGLE_KINDS) | GROUP_SECTIONS | FLAGS
METADATA_KEY = {"videos": "videoMetadata", "images": "imageMetadata", "audio": "audioMetadata"}
COMMON_KEYS = {"title", "clientMetadata", "client_metadata"}
FRAME_KEY = re.compile(r"^objectUrl_(\d+)$")
URL_MAX = 16 * 1024
SPEC_URLS_MAX = 1_000_000


class EntryError(InvalidInput):
    """One entry of the spec is wrong; `where` says which (videos[3])."""

    def __init__(self, where: str, reason: str, url: str = "") -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.url = url


@dataclass
class Entry:
    section: str
    index: int
    kind: Kind | None  # what each object must be (the frames' kind for groups); None: any
    urls: list[str]
    title: str | None = None
    client_metadata: dict[str, Any] = field(default_factory=dict)
    trusted: Media | None = None  # given in the spec: nothing is read
    size: int | None = None  # given in the spec
    create_video: bool = False
    folders: list[str] = field(default_factory=list)  # below the target (a prefix's folders)
    etag: str | None = None  # known from a listing

    @property
    def where(self) -> str:
        return f"{self.section}[{self.index}]"

    @property
    def is_group(self) -> bool:
        return self.section in GROUP_SECTIONS


@dataclass
class Spec:
    entries: list[Entry]
    errors: list[EntryError]
    skip_duplicate_urls: bool = False
    upsert_metadata: bool = False


def load_spec(path: Path) -> Spec:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidInput(f"no such spec file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"the spec {path} cannot be read: {exc}") from None
    return parse_spec_text(text, f"the spec {path}")


def parse_spec_text(text: str, name: str) -> Spec:
    """A spec from its text (`name` says where it came from, in messages)."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidInput(f"{name} is not JSON: {exc}") from None
    return parse_spec(document, name.removeprefix("the spec "))


def parse_spec(document: Any, name: str = "the spec") -> Spec:
    if not isinstance(document, dict):
        raise InvalidInput(f"{name} must be a JSON object with keys such as videos, images, image_groups")
    unknown = sorted(set(document) - TOP_LEVEL)
    if unknown:
        raise InvalidInput(f"{name}: unknown key {unknown[0]!r} (Encord's spec has "
                           f"{', '.join(sorted(TOP_LEVEL))})")
    spec = Spec([], [], _flag(document, "skip_duplicate_urls", name),
                _flag(document, "upsert_metadata", name))
    for section in [s for s in SECTION_ORDER if s in document]:
        entries = document[section]
        if not isinstance(entries, list):
            raise InvalidInput(f"{name}: {section} must be a list")
        for index, raw in enumerate(entries):
            try:
                spec.entries.append(_entry(section, index, raw))
            except EntryError as exc:
                spec.errors.append(exc)
    urls = sum(len(e.urls) for e in spec.entries)
    if urls > SPEC_URLS_MAX:
        raise InvalidInput(f"{name} has {urls} URLs; Encord takes at most {SPEC_URLS_MAX} a spec")
    return spec


def _flag(document: dict[str, Any], key: str, name: str) -> bool:
    value = document.get(key, False)
    if not isinstance(value, bool):
        raise InvalidInput(f"{name}: {key} must be true or false")
    return value


def _entry(section: str, index: int, raw: Any) -> Entry:
    where = f"{section}[{index}]"
    if not isinstance(raw, dict):
        raise EntryError(where, "each entry must be a JSON object")
    entry = Entry(section, index, SINGLE_KINDS.get(section, Kind.IMAGE), [])
    if section == "dicom_series":
        entry.kind = Kind.DICOM_FILE
    allowed = COMMON_KEYS | ({"objectUrl", METADATA_KEY.get(section, "")} if not entry.is_group
                             else {"createVideo"} if section == "image_groups" else set())
    for key in raw:
        if key not in allowed and not (entry.is_group and FRAME_KEY.match(key)):
            raise EntryError(where, f"unknown key {key!r}")
    title = raw.get("title")
    if title is not None and (not isinstance(title, str) or not title.strip()):
        raise EntryError(where, "title must be non-empty text")
    entry.title = title
    metadata = raw.get("clientMetadata", raw.get("client_metadata", {}))
    try:
        check_client_metadata(metadata)
    except InvalidInput as exc:
        raise EntryError(where, f"clientMetadata: {exc.reason}") from None
    entry.client_metadata = metadata
    if entry.is_group:
        _group_urls(entry, raw, where)
    else:
        entry.urls = [_url(raw.get("objectUrl"), where)]
        given = raw.get(METADATA_KEY.get(section, ""))
        if given is not None:
            entry.trusted, entry.size = _trusted(entry.kind, given, where)
    return entry


def _group_urls(entry: Entry, raw: dict[str, Any], where: str) -> None:
    frames = sorted((int(m.group(1)), key) for key in raw if (m := FRAME_KEY.match(key)))
    if not frames:
        raise EntryError(where, "a group needs objectUrl_0, objectUrl_1, …")
    if entry.title is None:
        raise EntryError(where, "a group needs a title")
    entry.urls = [_url(raw[key], f"{where}.{key}") for _, key in frames]
    create_video = raw.get("createVideo", False)
    if not isinstance(create_video, bool):
        raise EntryError(where, "createVideo must be true or false")
    entry.create_video = create_video


URL_SCHEMES = ("s3://", "https://", "http://")  # an https URL is resolved by the integration


def _url(value: Any, where: str) -> str:
    if value is None:
        raise EntryError(where, "objectUrl is missing")
    if not isinstance(value, str) or not value.startswith(URL_SCHEMES) or len(value) > URL_MAX:
        raise EntryError(where, "objectUrl must be an s3://BUCKET/KEY or https:// URL of an object, "
                         f"of at most {URL_MAX} bytes", str(value)[:200])
    if value.endswith("/") or (value.startswith("s3://") and "/" not in value[5:]):
        raise EntryError(where, "objectUrl names a bucket or folder, not an object", value)
    return value


def _pick(given: dict[str, Any], *names: str) -> Any:
    for name in names:
        if name in given:
            return given[name]
    return None


def _trusted(kind: Kind, given: Any, where: str) -> tuple[Media, int | None]:
    """Media from the spec's metadata, snake or camel case; checked for type only."""
    if not isinstance(given, dict):
        raise EntryError(where, "the media metadata must be a JSON object")
    values = {
        "width": _pick(given, "width"), "height": _pick(given, "height"), "fps": _pick(given, "fps"),
        "duration": _pick(given, "duration"), "size": _pick(given, "file_size", "fileSize"),
        "mime": _pick(given, "mime_type", "mimeType"),
    }
    for name, value in values.items():
        wanted = str if name == "mime" else (int, float)
        if value is not None and (isinstance(value, bool) or not isinstance(value, wanted)):
            raise EntryError(where, f"metadata {name} has the wrong type")
        if name != "mime" and value is not None and value < 0:
            raise EntryError(where, f"metadata {name} cannot be negative")
    media = Media(kind=kind, mime=values["mime"] or _default_mime(kind))
    media.width = int(values["width"]) if values["width"] is not None else None
    media.height = int(values["height"]) if values["height"] is not None else None
    media.fps = float(values["fps"]) if values["fps"] is not None else None
    media.duration = float(values["duration"]) if values["duration"] is not None else None
    if media.fps and media.duration:
        media.frames = round(media.fps * media.duration)
    media.note = "metadata given at import (not read from the object)"
    size = int(values["size"]) if values["size"] is not None else None
    return media, size


def _default_mime(kind: Kind) -> str:
    return {Kind.VIDEO: "video/mp4", Kind.IMAGE: "image/jpeg", Kind.AUDIO: "audio/mpeg"}.get(
        kind, "application/octet-stream")
