"""Blob files live exactly as long as a record counts them, even when writers race."""

from __future__ import annotations

from pathlib import Path

from encfs.model import Actor
from encfs.service import FilesService
from encfs.store import open_store

from store_state import sha


class SecondWriterInTheGap(FilesService):
    """Runs `then` once, in the gap between a commit that freed blobs and their
    deletion: where another thread or process may count the same content again."""

    then = None

    def _delete_uncounted_blobs(self, shas: list[str]) -> None:
        if shas and self.then is not None:
            then, self.then = self.then, None
            then()
        super()._delete_uncounted_blobs(shas)


def test_content_counted_again_before_the_clean_up_keeps_its_blob(store: Path, tmp_path: Path) -> None:
    content = b"same pixels " * 1000
    local = tmp_path / "a.png"
    local.write_bytes(content)
    opened = open_store(store)
    try:
        service = SecondWriterInTheGap(opened)
        actor = Actor.local()
        service.create_folder(actor, "/data")
        service.upload(actor, "/data", local)
        blob_file = Path(service.blobs.path(sha(content)))
        service.then = lambda: service.upload(actor, "/data", local, name="b.png")

        service.remove_item(actor, "/data/a.png")

        assert blob_file.read_bytes() == content
        item = service.lookup(actor, "/data/b.png")
        reader = service.open_reader(actor, item)
        assert reader is not None and reader.pread(len(content) + 1, 0) == content
        reader.close()
        service.remove_item(actor, "/data/b.png")
        assert not blob_file.exists()  # and once nothing counts it, it goes
    finally:
        opened.close()
