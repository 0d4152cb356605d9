"""Items made of other items: image groups, image sequences and DICOM series.

These are rules of the Files service (the `FilesService` class mixes this in), kept in
their own module so that each part of the service stays readable:

- An image group (`NAME.imagegroup`, a JSON manifest) or image sequence
  (`NAME.imagesequence.mp4`, a video of the frames) is made from a folder of images,
  `NAME/`, next to it. The folder is not synced: images added later do not join.
  While a group uses them, its frames cannot be removed, renamed, moved or rewritten,
  and its folder cannot be renamed or moved (EBUSY); removing the group frees them.
- A DICOM file is validated when it is committed; the files of one SeriesInstanceUID
  in one folder form a series item `TITLE.dcmseries` (a JSON manifest), which follows
  its slices as they are added, renamed, moved and removed.
"""

from __future__ import annotations

import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from encfs.access.roles import Role
from encfs.actions import action
from encfs.cloud.sync import refuse_batch_in
from encfs.errors import Busy, InvalidInput, NotPermitted
from encfs.media import dicom_series
from encfs.meta.store import ReadTxn, WriteTxn
from encfs.model import ROOT_ID, Actor, Folder, Item, Kind, Media, Node
from encfs.names import fit_name

if TYPE_CHECKING:
    from encfs.service import BlobChanges, FilesService

GROUP_SUFFIX = {Kind.IMAGE_GROUP: ".imagegroup", Kind.IMAGE_SEQUENCE: ".imagesequence.mp4"}
SERIES_SUFFIX = ".dcmseries"
MANIFEST_MIME = "application/json"


@dataclass
class BatchResult:
    items: list[Item] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    note: str = ""


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, sort_keys=False) + "\n").encode()


class Grouping:
    """Mixed into FilesService: uses its store, resolution and transactions."""

    # ------------------------------------------------------------------ shared

    def _group_item(self: FilesService, w: ReadTxn, group_id: int) -> Item | None:
        group = w.node(group_id)
        return group if isinstance(group, Item) else None

    def _holding_groups(self: FilesService, w: ReadTxn, item_id: int) -> list[Item]:
        """The image groups and sequences (not series) that hold the item as a frame."""
        groups = [self._group_item(w, g) for g in w.groups_of(item_id)]
        return [g for g in groups if g is not None and g.media.kind in GROUP_SUFFIX]

    def _busy_frame(self: FilesService, w: ReadTxn, item: Item, path: str, doing: str) -> None:
        holders = self._holding_groups(w, item.id)
        if holders:
            names = ", ".join(self._path(w, g.id, {}) for g in holders)
            raise Busy(f"cannot {doing}: it is a frame of {names}; delete the group first", path)

    def _busy_source_folder(self: FilesService, w: ReadTxn, folder: Folder, path: str) -> None:
        groups = [self._group_item(w, g) for g in w.groups_sourced_from(folder.id)]
        names = ", ".join(self._path(w, g.id, {}) for g in groups if g is not None)
        if names:
            raise Busy(f"the folder holds the frames of {names}; delete the group first", path)

    def _store_content(
        self: FilesService,
        w: WriteTxn,
        item: Item,
        content: bytes,
        media: Media,
        changes: BlobChanges,
    ) -> None:
        """Give a generated item new content inside the transaction."""
        sha = self._store_generated(w, changes, content)
        if item.blob and w.drop_blob_ref(item.blob) == 0:
            changes.obsolete.append(item.blob)
        now = time.time_ns()
        item.blob, item.size, item.media = sha, len(content), media
        item.mtime_ns = item.ctime_ns = now

    def _new_generated_item(
        self: FilesService,
        w: WriteTxn,
        actor: Actor,
        folder: Folder,
        name: str,
        path: str,
    ) -> Item:
        if folder.id == ROOT_ID:
            raise NotPermitted(
                f"{name} would be a file at the root, which holds folders only; batch a folder that is "
                "inside another folder",
                path,
            )
        self._check_free(w, folder, name, path)
        item = Item(**self._new_node_fields(w, actor, folder, name, 0o100444))
        return item

    # ------------------------------------------------------------------ hooks from the core rules

    def _before_drop(self: FilesService, w: WriteTxn, item: Item, changes: BlobChanges) -> None:
        """Called in the transaction that removes an item."""
        self._busy_frame(w, item, self._path(w, item.id, {}), "remove it")
        for group_id in w.groups_of(item.id):  # a DICOM series it is a slice of
            series = w.node(group_id)
            if isinstance(series, Item) and series.media.kind == Kind.DICOM_SERIES:
                self._series_without(w, series, item, changes)
        if item.media.kind in GROUP_SUFFIX:
            w.set_members(item.id, item.members, [])
            if item.source_folder is not None:
                w.set_source(item.source_folder, item.id, False)
        elif item.media.kind == Kind.DICOM_SERIES and item.dicom:  # its slices stay, detached
            w.set_members(item.id, w.members_of(item.id), [])
            w.set_series(item.parent, item.dicom["series_uid"], None)

    def _before_move(
        self: FilesService,
        w: WriteTxn,
        node: Node,
        dst: Folder,
        name: str,
        path: str,
    ) -> None:
        if isinstance(node, Folder):
            self._busy_source_folder(w, node, path)
            return
        assert isinstance(node, Item)
        self._busy_frame(w, node, path, "move or rename it")
        if node.is_generated and node.parent != dst.id:
            raise NotPermitted(
                "a group, sequence or series stays in the folder of its frames or slices; rename it there",
                path,
            )

    def _after_move(
        self: FilesService, w: WriteTxn, node: Node, old_parent: int, changes: BlobChanges
    ) -> None:
        """A DICOM slice that moved leaves its old series and joins one in its new folder."""
        if not isinstance(node, Item) or node.media.kind != Kind.DICOM_FILE or not node.dicom:
            return
        for group_id in w.groups_of(node.id):
            series = w.node(group_id)
            if isinstance(series, Item) and series.media.kind == Kind.DICOM_SERIES:
                if series.parent == node.parent:
                    self._series_changed(w, series.id)  # renamed: the manifest names it
                else:
                    self._series_without(w, series, node, changes)
        if old_parent != node.parent:
            self._join_series(w, node, changes)

    def _leave_series(self: FilesService, w: WriteTxn, item: Item, changes: BlobChanges) -> None:
        for group_id in w.groups_of(item.id):
            series = w.node(group_id)
            if isinstance(series, Item) and series.media.kind == Kind.DICOM_SERIES:
                self._series_without(w, series, item, changes)

    def _check_writable(self: FilesService, w: ReadTxn, item: Item, path: str) -> None:
        if item.is_generated:
            raise NotPermitted("this file is generated by encfs and cannot be written", path)
        self._busy_frame(w, item, path, "change it")

    # ------------------------------------------------------------------ image groups and sequences

    @action("batch", where=lambda a: [f"{a['folder'].rstrip('/')}/{a['name']}"])
    def batch_local_images(
        self: FilesService,
        actor: Actor,
        folder: str,
        name: str,
        kind: Kind,
        images: list[Path],
    ) -> BatchResult:
        """Upload local images into FOLDER/NAME/, then batch that folder. A refusal
        leaves nothing behind."""
        target = "/" + "/".join([*folder.strip("/").split("/"), name]).strip("/")
        self.lookup(actor, folder)
        if kind == Kind.IMAGE_SEQUENCE:
            _refuse_tiff(images)
        self.create_folder(actor, target)
        try:
            for image in images:
                self.upload(actor, target, image)
            return self.batch_folder(actor, target, kind, name)
        except BaseException:
            self.remove_folder(actor, target, recursive=True)
            raise

    @action("batch")
    def batch_folder(
        self: FilesService,
        actor: Actor,
        source: str,
        kind: Kind,
        name: str | None = None,
    ) -> BatchResult:
        """Make an image group or sequence from the images in the folder SOURCE, next to it."""
        with self.meta.read() as r:
            refuse_batch_in(self, r, self._resolve_id(r, [p for p in source.split("/") if p]), source)
        frames, folder = self._frames_of(actor, source)
        name = name or folder.name
        parent_path = source.rstrip("/").rsplit("/", 1)[0] or "/"
        if kind == Kind.IMAGE_GROUP:
            media = Media(kind=Kind.IMAGE_GROUP, mime=MANIFEST_MIME)
            file_name = fit_name(name, GROUP_SUFFIX[Kind.IMAGE_GROUP])
            planned = [(file_name, frames, self._group_manifest(name, folder, frames), media)]
        else:
            planned = self._encode_sequences(name, frames)
        result = BatchResult()
        with self._changing() as (w, changes):
            parent = w.node(folder.parent)
            assert isinstance(parent, Folder)
            for file_name, members, content, media in planned:
                path = f"{parent_path.rstrip('/')}/{file_name}"
                self._check_frames_unchanged(w, members, path)
                item = self._new_generated_item(w, actor, parent, file_name, path)
                self._store_content(w, item, content, media, changes)
                item.media.frames = len(members)
                item.members, item.source_folder = [m.id for m in members], folder.id
                self._insert_item(w, parent, item)
                w.set_members(item.id, [], item.members)
                w.set_source(folder.id, item.id, True)
                result.items.append(item)
                result.paths.append(path)
        if len(planned) > 1:
            result.note = (
                f"the images have {len(planned)} different sizes, so {len(planned)} sequences were "
                "made, one per size"
            )
        return result

    def _frames_of(self: FilesService, actor: Actor, source: str) -> tuple[list[Item], Folder]:
        with self.meta.read() as r:
            folder = self._resolve(r, [p for p in source.split("/") if p])
            self.access.check_sees(r, actor, folder.id, source)
            if not isinstance(folder, Folder):
                raise InvalidInput("batching needs a folder of images", source)
            self.access.require_in(r, actor, folder.parent, Role.EDITOR, "batching images", source)
            items = [r.node(child) for _, child, is_folder in r.children(folder.id) if not is_folder]
        frames = [i for i in items if isinstance(i, Item)]
        others = [i.name for i in frames if i.media.kind != Kind.IMAGE]
        if others:
            raise InvalidInput("only images can be batched; not images: " + ", ".join(others[:10]), source)
        if not frames:
            raise InvalidInput("the folder holds no images to batch", source)
        return frames, folder

    def _check_frames_unchanged(self: FilesService, w: ReadTxn, members: list[Item], path: str) -> None:
        for member in members:
            now = w.node(member.id)
            if not isinstance(now, Item) or now.blob != member.blob or now.parent != member.parent:
                raise Busy(f"{member.name} changed while the batch was made; try again", path)

    def _group_manifest(self: FilesService, name: str, folder: Folder, frames: list[Item]) -> bytes:
        return _manifest_bytes(
            {
                "kind": Kind.IMAGE_GROUP.value,
                "title": name,
                "folder": folder.name,
                "frame_count": len(frames),
                "frames": [
                    {
                        "index": n,
                        "path": f"{folder.name}/{f.name}",
                        "name": f.name,
                        "size": f.size,
                        "width": f.media.width,
                        "height": f.media.height,
                        "mime": f.media.mime,
                    }
                    for n, f in enumerate(frames)
                ],
            }
        )

    def _encode_sequences(
        self: FilesService, name: str, frames: list[Item]
    ) -> list[tuple[str, list[Item], bytes, Media]]:
        if any(f.media.mime == "image/tiff" for f in frames):
            raise InvalidInput(
                "TIFF images cannot be batched as an image sequence (as in Encord); "
                "make an image group instead"
            )
        from encfs.media import sequence  # PyAV and its FFmpeg load only when a sequence is made

        by_size = sequence.group_by_size(
            [(str(f.id), f.media.width or 0, f.media.height or 0) for f in frames]
        )
        by_id = {str(f.id): f for f in frames}
        planned = []
        for (width, height), ids in by_size.items():
            members = [by_id[i] for i in ids]
            size = "" if len(by_size) == 1 else f"-{width}x{height}"
            file_name = fit_name(name, f"{size}{GROUP_SUFFIX[Kind.IMAGE_SEQUENCE]}")
            out = io.BytesIO()
            try:
                info = sequence.encode_sequence([self._content_of(m) for m in members], out)
            except sequence.SequenceRefused as exc:
                raise InvalidInput(str(exc)) from exc
            media = Media(
                kind=Kind.IMAGE_SEQUENCE,
                mime=info.mime,
                width=info.width,
                height=info.height,
                duration=round(info.duration, 6),
                fps=info.fps,
                frames=info.frames,
            )
            planned.append((file_name, members, out.getvalue(), media))
        return planned

    def _content_of(self: FilesService, item: Item) -> bytes:
        reader = self.open_reader(Actor.local(), item)  # a blob, or a bucket object
        if reader is None:
            return b""
        try:
            return reader.pread(item.size, 0)
        finally:
            reader.close()

    # ------------------------------------------------------------------ DICOM

    def _dicom_header(
        self: FilesService, source: Path | bytes, name: str, head: bytes, path: str
    ) -> dict | None:
        """The header of a file being committed, if it is DICOM; refuses an unusable one."""
        looks_dicom = head[128:132] == b"DICM" or name.lower().endswith(".dcm")
        if not looks_dicom:
            return None
        try:
            header = dicom_series.read_header(source)
        except dicom_series.NotDicom as exc:
            if head[128:132] == b"DICM":
                raise InvalidInput(f"not a readable DICOM file: {exc}", path) from exc
            return None
        except dicom_series.DicomRefused as exc:
            raise InvalidInput(f"DICOM file refused: {exc}", path) from exc
        return asdict(header)

    def _dicom_media(self: FilesService, header: dict) -> Media:
        attributes = dicom_series.DicomHeader(**_as_header_args(header)).attributes()
        return Media(
            kind=Kind.DICOM_FILE,
            mime="application/dicom",
            width=header["columns"],
            height=header["rows"],
            frames=header["frames"],
            extra=attributes,
        )

    def _check_duplicate_slice(self: FilesService, w: ReadTxn, item: Item, header: dict, path: str) -> None:
        owner = w.slice_with(item.parent, header["series_uid"], header["sop_uid"])
        if owner is not None and owner != item.id:
            raise InvalidInput(
                f"a slice with SOPInstanceUID {header['sop_uid']} is already in this series "
                f"({self._path(w, owner, {})})",
                path,
            )

    def _join_series(self: FilesService, w: WriteTxn, item: Item, changes: BlobChanges) -> None:
        assert item.dicom is not None
        uid = item.dicom["series_uid"]
        series_id = w.series_in(item.parent, uid)
        series = w.node(series_id) if series_id is not None else None
        if not isinstance(series, Item):
            series = self._new_series(w, item)
        w.set_members(series.id, [], [item.id])  # the record's ordered list waits for settling
        w.set_slice(item.parent, uid, item.dicom["sop_uid"], item.id)
        self._series_changed(w, series.id)

    def _new_series(self: FilesService, w: WriteTxn, first: Item) -> Item:
        assert first.dicom is not None
        folder = w.node(first.parent)
        assert isinstance(folder, Folder)
        title = dicom_series.series_title([dicom_series.DicomHeader(**_as_header_args(first.dicom))])
        name = self._unique_name(w, folder, title, SERIES_SUFFIX)
        owner = Actor(name=first.owner, uid=first.uid, gid=first.gid)
        series = self._new_generated_item(w, owner, folder, name, "")
        series.media = Media(kind=Kind.DICOM_SERIES, mime=MANIFEST_MIME)
        series.dicom = {"series_uid": first.dicom["series_uid"], "title": title}
        self._insert_item(w, folder, series)
        w.set_series(folder.id, first.dicom["series_uid"], series.id)
        return series

    def _unique_name(self: FilesService, w: ReadTxn, folder: Folder, stem: str, suffix: str) -> str:
        name, n = fit_name(stem, suffix), 2
        while w.child_id(folder.id, name) is not None:
            name, n = fit_name(stem, f" ({n}){suffix}"), n + 1
        return name

    def _series_without(
        self: FilesService, w: WriteTxn, series: Item, item: Item, changes: BlobChanges
    ) -> None:
        assert series.dicom is not None
        w.set_members(series.id, [item.id], [])
        if item.dicom:
            w.set_slice(series.parent, series.dicom["series_uid"], item.dicom["sop_uid"], None)
        if w.members_of(series.id):
            self._series_changed(w, series.id)
            return
        w.set_series(series.parent, series.dicom["series_uid"], None)
        self._delete_item_record(w, series, changes)

    def _series_changed(self: FilesService, w: WriteTxn, series_id: int) -> None:
        """Rewriting a manifest reads every slice, so it is done once a burst of changes
        (copying a study slice by slice) has settled, not after each slice. The mark is
        in the store, so whichever process looks next (or the mount's upkeep) settles it."""
        w.mark_unsettled(series_id, True)

    def settle_series(self: FilesService, only: int | None = None, quiet_for: float = 0.0) -> None:
        """Bring the manifests of changed series up to date: all, just `only`, or those
        unchanged for `quiet_for` seconds (the mount's upkeep waits for a copy to end)."""
        with self.meta.read() as r:
            pending = r.unsettled(time.time_ns() - int(quiet_for * 1e9) if quiet_for else None)
        if only is not None:
            pending = [only] if only in pending else []
        for series_id in pending:
            with self._changing() as (w, changes):
                w.mark_unsettled(series_id, False)
                series = w.node(series_id)
                if isinstance(series, Item) and series.media.kind == Kind.DICOM_SERIES:
                    self._refresh_series(w, series, changes)

    def _refresh_series(self: FilesService, w: WriteTxn, series: Item, changes: BlobChanges) -> None:
        """Rewrite the series manifest from its slices' headers, in spatial order."""
        assert series.dicom is not None
        slices = [w.node(m) for m in w.members_of(series.id)]
        present = [s for s in slices if isinstance(s, Item) and s.dicom]
        if not present:
            return
        headers = [dicom_series.DicomHeader(**_as_header_args(s.dicom)) for s in present]  # type: ignore[arg-type]
        order = dicom_series.order_slices(headers)
        manifest = dicom_series.series_manifest(
            series.dicom["title"], [(s.name, h) for s, h in zip(present, headers, strict=True)]
        )
        series.members = [present[i].id for i in order]
        render, missing = dicom_series.can_render_3d(headers)
        extra = {
            "series_uid": series.dicom["series_uid"],
            "render_3d": str(render).lower(),
            "missing_for_3d": ",".join(missing),
        }
        media = Media(
            kind=Kind.DICOM_SERIES,
            mime=MANIFEST_MIME,
            width=headers[0].columns,
            height=headers[0].rows,
            frames=len(present),
            extra=extra,
        )
        self._store_content(w, series, _manifest_bytes(manifest), media, changes)
        w.put_node(series)

    # ------------------------------------------------------------------ details

    def group_details(self: FilesService, r: ReadTxn, item: Item) -> dict[str, Any]:
        details: dict[str, Any] = {}
        holders = [self._group_item(r, g) for g in r.groups_of(item.id)]
        if holders:
            details["groups"] = [self._path(r, g.id, {}) for g in holders if g is not None]
        if item.members:
            paths: dict[int, str] = {}
            details["members"] = [self._path(r, m, paths) for m in item.members]
        return details


def _refuse_tiff(images: list[Path]) -> None:
    from PIL import Image, UnidentifiedImageError

    for image in images:
        try:
            with Image.open(image) as opened:
                tiff = opened.format == "TIFF"
        except (OSError, UnidentifiedImageError):
            raise InvalidInput(f"{image.name} is not an image that can be batched") from None
        if tiff:
            raise InvalidInput(
                f"{image.name} is a TIFF image; TIFF cannot be batched as an image sequence "
                "(as in Encord); make an image group instead"
            )


def _as_header_args(summary: dict) -> dict:
    """A stored header dict back into DicomHeader's arguments (JSON turned tuples into lists)."""
    args = dict(summary)
    for key in ("position", "orientation", "pixel_spacing", "missing_3d"):
        if isinstance(args.get(key), list):
            args[key] = tuple(args[key])
    return args
