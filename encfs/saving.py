"""Atomic saves: a file renamed over another keeps the replaced file's place.

"Write a temporary file, then rename it over the original" is how editors, `sed -i`,
Python's `tempfile` + `os.replace`, rsync and many libraries save. On a disk the
name then refers to the new inode; in Files that would take the file out of every
Dataset it was in. So when a file replaces a file, what Encord attaches to the *name*
is handed from the replaced item to the one that takes its place, in the rename's
transaction:

- follows the name (handed over): Dataset links (under the view names the replaced
  file had, so its Projects see it too), client metadata, the Encord identity
  (`user.encord.id`), the creation time and the creator;
- stays with the inode (as on any disk): the bytes, size, kind, mode, owner uid and
  gid, times other than creation, `user.*` attributes, and the inode number.

Nothing is dropped: a Dataset that holds both keeps the new file under its own view
name. Groups, sequences, series and DICOM slices are not handed over (their place is
computed from their folder); replacing one of them, or with one, behaves as a delete
of the target, as before.
"""

from __future__ import annotations

import time

from encfs.meta.store import WriteTxn
from encfs.model import Item, Node


def keeps_place(source: Node, target: Node | None) -> bool:
    """Whether renaming `source` over `target` hands the target's place over."""
    return (isinstance(source, Item) and isinstance(target, Item) and source.id != target.id
            and not source.is_generated and not target.is_generated
            and source.dicom is None and target.dicom is None)


def hand_over(w: WriteTxn, source: Item, target: Item) -> list[int]:
    """Move the target's Dataset links and Encord attributes to the source; returns
    the Datasets handed over. The caller then removes the target (now unlinked)."""
    handed = []
    for dataset_id in w.datasets_of(target.id):
        found = w.link_in(dataset_id, target.id)
        if found is None:
            continue
        by_sync, view_name = found
        w.delete_link(dataset_id, target.id)
        if w.link_in(dataset_id, source.id) is None:
            w.put_link(dataset_id, source.id, by_sync, view_name)
            source.datasets += 1
            handed.append(dataset_id)
    target.datasets = 0
    source.client_metadata = target.client_metadata
    source.identity = target.identity if target.identity is not None else target.id
    source.created_ns, source.owner = target.created_ns, target.owner
    source.ctime_ns = time.time_ns()
    w.put_node(source)
    return handed
