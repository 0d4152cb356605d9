"""Who may see and do what: the rules of folder access, asked by the service once per
action. Reads go through the caller's transaction; what they compute is cached per
process until the access generation changes (meta/access.py bumps it with every
change to users, groups, grants, and with folder moves and removals), so a check
costs one LMDB read once warm.

- A store without users has no roles: every call is allowed here (POSIX modes only).
- Root and org admins are admin of every folder, Dataset and Project.
- A uid no user maps is nobody: it sees the root only, and can change nothing.
- A user's role on a folder is the highest grant to them or their groups on the
  folder or any folder above it: a grant below raises a role, never lowers it.
- A user sees a folder they have a role on, and the folders on the way down to one
  (only those: their files and other subfolders stay hidden).
- A Dataset's or Project's roles are its own grants (owner: admin; collaborators).
"""

from __future__ import annotations

import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from encfs.access.roles import EVERYONE, Person, Role, group_subject, user_subject
from encfs.errors import AccessDenied, NotFound, NotPermitted
from encfs.meta import access as records
from encfs.meta.store import MetaStore, ReadTxn, WriteTxn
from encfs.model import ROOT_ID, Actor, Attributes, Folder, Item, Node

NOBODY_EMAIL = None
ORGANISED_FOLDER_BITS = 0o777
ORGANISED_FILE_BITS = 0o666
ATTRIBUTES_NEED_VIEWER = ("reading the description and metadata of a folder seen only on the way down needs "
                          "viewer on it")


@dataclass
class _Cache:
    generation: int
    org: bool
    people: dict[int, Person] = field(default_factory=dict)
    roles: dict[tuple[int, int], Role] = field(default_factory=dict)  # (uid, folder) -> role
    on_path: dict[int, frozenset[int]] = field(default_factory=dict)  # uid -> folders on the way down


class AccessPolicy:
    def __init__(self) -> None:
        self._cache = _Cache(generation=-1, org=False)
        self._lock = threading.Lock()

    # ------------------------------------------------------------ who

    def _current(self, r: ReadTxn) -> _Cache:
        """The cache for the state `r` sees. A write transaction that changed access
        gets a cache of its own, never kept: it may yet be aborted."""
        generation = records.generation(r)
        cache = self._cache
        if cache.generation != generation:
            cache = _Cache(generation=generation, org=records.has_users(r))
            if not isinstance(r, WriteTxn):
                with self._lock:
                    self._cache = cache
        return cache

    def organised(self, r: ReadTxn) -> bool:
        """Whether the store has users (and so roles)."""
        return self._current(r).org

    def person(self, r: ReadTxn, actor: Actor) -> Person:
        cache = self._current(r)
        if not cache.org:
            return EVERYONE
        found = cache.people.get(actor.uid)
        if found is None:
            found = self._person(r, actor.uid)
            cache.people[actor.uid] = found
        return found

    def _person(self, r: ReadTxn, uid: int) -> Person:
        if uid == 0:
            return Person(uid=0, email=None, subjects=frozenset(), admin=True)
        email = records.email_of_uid(r, uid)
        record = records.user(r, email) if email else None
        if record is None:
            return Person(uid=uid, email=NOBODY_EMAIL, subjects=frozenset(), admin=False)
        key = record["email"].lower()
        subjects = {user_subject(key), *(group_subject(g) for g in records.groups_of_user(r, key))}
        return Person(uid=uid, email=key, subjects=frozenset(subjects), admin=bool(record.get("org_admin")))

    # ------------------------------------------------------------ roles on folders

    def folder_role(self, r: ReadTxn, person: Person, folder_id: int) -> Role:
        if person.admin:
            return Role.ADMIN
        if not person.subjects:
            return Role.NONE
        cache = self._current(r)
        chain: list[int] = []
        current = folder_id
        inherited = Role.NONE
        while True:
            known = cache.roles.get((person.uid, current))
            if known is not None:
                inherited = known
                break
            chain.append(current)
            if current == ROOT_ID:
                break
            node = r.node(current)
            if not isinstance(node, Folder):
                break
            current = node.parent
        for folder in reversed(chain):
            inherited = max(inherited, self._own_role(r, person, folder))
            cache.roles[(person.uid, folder)] = inherited
        return inherited

    def _own_role(self, r: ReadTxn, person: Person, target: int) -> Role:
        roles = [Role(role) for subject, role in records.grants_on(r, target) if subject in person.subjects]
        return max(roles, default=Role.NONE)

    def _on_path(self, r: ReadTxn, person: Person) -> frozenset[int]:
        """The folders above those the person has a grant on (they see the way down)."""
        cache = self._current(r)
        found = cache.on_path.get(person.uid)
        if found is not None:
            return found
        above: set[int] = set()
        for subject in person.subjects:
            for target, _ in records.grants_by(r, subject):
                node = r.node(target)
                while isinstance(node, Folder) and node.id != ROOT_ID and node.parent not in above:
                    above.add(node.parent)
                    node = r.node(node.parent)
        found = frozenset(above | {ROOT_ID})
        cache.on_path[person.uid] = found
        return found

    def sees_folder(self, r: ReadTxn, person: Person, folder_id: int) -> bool:
        return (person.admin or folder_id in self._on_path(r, person)
                or self.folder_role(r, person, folder_id) >= Role.VIEWER)

    def sees_in(self, r: ReadTxn, person: Person, parent_id: int, node_id: int, is_folder: bool) -> bool:
        """Whether an entry of a folder is visible: a subfolder on its own terms, a
        file when its folder is."""
        if person.admin:
            return True
        if is_folder:
            return self.sees_folder(r, person, node_id)
        return self.folder_role(r, person, parent_id) >= Role.VIEWER

    # ------------------------------------------------------------ checks

    def require(self, r: ReadTxn, actor: Actor, folder_id: int, needed: Role, doing: str, path: str) -> None:
        """Refuse unless the caller has `needed` on the folder: NotFound when they
        cannot see it at all (a name they may not know), AccessDenied otherwise."""
        person = self.person(r, actor)
        if person.admin:
            return
        role = self.folder_role(r, person, folder_id)
        if role >= needed:
            return
        if not person.member:
            raise AccessDenied(f"uid {actor.uid} is not a user of this organisation: ask an admin to add you "
                               "(encfs user add EMAIL --uid N)", path)
        if not self.sees_folder(r, person, folder_id):
            raise NotFound("no such file or folder", path)
        have = "no role" if role == Role.NONE else role.word
        raise AccessDenied(f"{doing} needs {needed.word} on the folder; {person.email} has {have} there",
                           path)

    def require_member(self, r: ReadTxn, actor: Actor, doing: str, path: str) -> Person:
        person = self.person(r, actor)
        if not person.member:
            raise AccessDenied(f"uid {actor.uid} is not a user of this organisation, so cannot {doing}", path)
        return person

    def collection_role(self, r: ReadTxn, person: Person, collection_id: int) -> Role:
        if person.admin:
            return Role.ADMIN
        return self._own_role(r, person, collection_id)

    def require_collection(self, r: ReadTxn, actor: Actor, collection_id: int, needed: Role, label: str,
                           doing: str, path: str) -> None:
        """`needed` on a Dataset or Project: NotFound if the caller has no role on it."""
        if not self.organised(r):
            return
        person = self.person(r, actor)
        role = self.collection_role(r, person, collection_id)
        if role >= needed:
            return
        if role == Role.NONE:
            raise NotFound(f"no {label} by this name", path)
        raise AccessDenied(f"{doing} needs admin on the {label}; {person.email} is {role.word} there", path)

    # ------------------------------------------------------------ changes the service reports

    def folder_created(self, w: WriteTxn, actor: Actor, folder: Folder) -> None:
        """The creator of a top-level folder becomes its admin."""
        if folder.parent != ROOT_ID:
            return
        person = self.person(w, actor)
        if person.email is not None:
            records.set_grant(w, folder.id, user_subject(person.email), Role.ADMIN)

    def collection_created(self, w: WriteTxn, actor: Actor, collection_id: int) -> None:
        """The creator of a Dataset or Project is its owner (admin)."""
        person = self.person(w, actor)
        if person.email is not None:
            records.set_grant(w, collection_id, user_subject(person.email), Role.ADMIN)

    def folder_moved(self, w: WriteTxn) -> None:
        """What is inherited and who sees the way down may have changed; the moved
        folder keeps its own grants (they are keyed by its id)."""
        if self.organised(w):
            records.bump_generation(w)

    def removed(self, w: WriteTxn, target: int) -> None:
        """A folder, Dataset or Project removed takes its grants with it."""
        records.drop_grants_on(w, target)

    # ------------------------------------------------------------ what the service asks per call

    def check_sees(self, r: ReadTxn, actor: Actor, node_id: int, path: str) -> None:
        """NotFound unless the caller may see the folder or file: what they cannot
        see does not exist for them (ENOENT, never EACCES, which would tell the name)."""
        if not self.organised(r):
            return
        person = self.person(r, actor)
        if person.admin or node_id == ROOT_ID:
            return
        node = r.node(node_id)
        if node is None:
            return
        seen = (self.sees_folder(r, person, node.id) if isinstance(node, Folder)
                else self.folder_role(r, person, node.parent) >= Role.VIEWER)
        if not seen:
            raise NotFound("no such file or folder", path)

    def check_sees_in(self, r: ReadTxn, actor: Actor, parent_id: int, node_id: int, path: str) -> None:
        """`check_sees` for an entry whose folder the path walk just found (no record
        is decoded: the mount's hot path)."""
        cache = self._current(r)  # the mount's hot path: one generation read, then the caches
        person = cache.people.get(actor.uid) or self.person(r, actor)
        if person.admin:
            return
        role = cache.roles.get((person.uid, parent_id))
        if (role if role is not None else self.folder_role(r, person, parent_id)) >= Role.VIEWER:
            return  # a viewer of the folder sees its files and its subfolders (they inherit the role)
        attributes = r.attributes(node_id)
        is_folder = attributes is not None and stat.S_ISDIR(attributes.mode)
        if not self.sees_in(r, person, parent_id, node_id, is_folder):
            raise NotFound("no such file or folder", path)

    def entry_filter(self, r: ReadTxn, actor: Actor, folder_id: int) -> Callable[[int, bool], bool] | None:
        """Which entries of a folder the caller sees, as a test of (id, is folder);
        None when they see all of them (no users, an admin, a viewer of the folder)."""
        if not self.organised(r):
            return None
        person = self.person(r, actor)
        if person.admin:
            return None
        files_shown = self.folder_role(r, person, folder_id) >= Role.VIEWER
        if files_shown:
            return None
        return lambda node_id, is_folder: is_folder and self.sees_folder(r, person, node_id)

    def require_on(self, r: ReadTxn, actor: Actor, node: Folder | Item, needed: Role, doing: str,
                   path: str) -> None:
        """`needed` on a folder itself, or on a file's folder."""
        if not self.organised(r):
            return
        self.require(r, actor, node.id if isinstance(node, Folder) else node.parent, needed, doing, path)

    def attributes_readable(self, r: ReadTxn, actor: Actor, node: Folder | Item) -> bool:
        """Whether the caller may read a folder's or file's description, metadata and
        attributes: viewer on it (a folder seen only on the way down shows its name only)."""
        if not self.organised(r):
            return True
        person = self.person(r, actor)
        return person.admin or self.folder_role(
            r, person, node.id if isinstance(node, Folder) else node.parent) >= Role.VIEWER

    def require_in(self, r: ReadTxn, actor: Actor, folder_id: int, needed: Role, doing: str,
                   path: str) -> None:
        """`needed` on the folder an entry is made in, removed from or moved across;
        in the root any user may make a folder (and becomes its admin)."""
        if not self.organised(r):
            return
        if folder_id == ROOT_ID and needed <= Role.EDITOR:
            self.require_member(r, actor, doing, path)
            return
        self.require(r, actor, folder_id, needed, doing, path)

    def require_removable(self, r: ReadTxn, actor: Actor, folder: Folder, emptied: bool, path: str) -> None:
        """Deleting a folder is an admin's; an editor may remove an empty folder that
        has no grants of its own (a temporary folder, say)."""
        if not self.organised(r):
            return
        plain = emptied and folder.parent != ROOT_ID and not records.grants_on(r, folder.id)
        self.require(r, actor, folder.id, Role.EDITOR if plain else Role.ADMIN, "deleting this folder", path)

    def require_sticky(self, r: ReadTxn, actor: Actor, folder_id: int, node: Node, path: str) -> None:
        """In an organisation encfs applies a folder's sticky bit itself (the kernel
        sees none, `shown`), so that a refusal has its sentence: a name in a sticky
        folder is removed or moved away only by the owner of the file or of the folder,
        an admin of the folder, or root."""
        if not self.organised(r):
            return
        folder = r.node(folder_id)
        if not isinstance(folder, Folder) or not folder.mode & stat.S_ISVTX or actor.uid in (0, node.uid,
                                                                                           folder.uid):
            return
        person = self.person(r, actor)
        if person.admin or self.folder_role(r, person, folder.id) >= Role.ADMIN:
            return
        raise NotPermitted("the folder is sticky: only the owner of the file or of the folder, or an admin "
                           "of the folder, may remove or move away its names", path)

    def require_move(self, r: ReadTxn, actor: Actor, node: Folder | Item, source_folder: int,
                     target_folder: int, path: str) -> None:
        """Moves need editor on both sides; a folder moved into, out of or within the
        root needs admin on itself (top-level folders are their admins')."""
        if not self.organised(r):
            return
        for side in (source_folder, target_folder):
            if side != ROOT_ID:
                self.require(r, actor, side, Role.EDITOR, "moving in or out of this folder", path)
        if ROOT_ID in (source_folder, target_folder):
            self.require(r, actor, node.id, Role.ADMIN, "moving a folder in or out of the root", path)

    def visible_collections(self, r: ReadTxn, actor: Actor, ids: list[int]) -> list[int]:
        if not self.organised(r):
            return ids
        person = self.person(r, actor)
        return [i for i in ids if self.collection_role(r, person, i) >= Role.VIEWER]

    def sees_file(self, r: ReadTxn, actor: Actor, item: Item) -> bool:
        if not self.organised(r):
            return True
        person = self.person(r, actor)
        return person.admin or self.folder_role(r, person, item.parent) >= Role.VIEWER

    def sees_collection(self, r: ReadTxn, actor: Actor, collection_id: int) -> bool:
        if not self.organised(r):
            return True
        return self.collection_role(r, self.person(r, actor), collection_id) >= Role.VIEWER

    def shown(self, r: ReadTxn, attributes: Attributes) -> Attributes:
        """What `stat` shows once the store has users: permission bits that let the
        kernel pass every call to encfs, which checks the caller's role and records
        each refusal with its reason (the stored modes are kept, and shown again if
        the last user goes). The setgid bit still applies; the sticky bit is kept but
        not shown: encfs applies it (`require_sticky`), so its refusals say why."""
        return self.shown_by(r)(attributes)

    def shown_by(self, r: ReadTxn) -> Callable[[Attributes], Attributes]:
        """`shown` for many entries (a listing): the store is asked once."""
        return _opened if self.organised(r) else _as_stored

    def generation_now(self, meta: MetaStore) -> int:
        """Changes whenever who may see what may have changed (for caches of results)."""
        with meta.read() as r:
            return records.generation(r)

    def organised_now(self, meta: MetaStore) -> bool:
        with meta.read() as r:
            return self.organised(r)


def _opened(attributes: Attributes) -> Attributes:
    opened = ORGANISED_FOLDER_BITS if stat.S_ISDIR(attributes.mode) else ORGANISED_FILE_BITS
    return attributes._replace(mode=(attributes.mode & ~stat.S_ISVTX) | opened)


def _as_stored(attributes: Attributes) -> Attributes:
    return attributes
