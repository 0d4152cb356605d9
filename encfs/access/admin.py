"""Managing users, groups and grants: the actions behind `encfs user|group|access`
and `FOLDER/.access`. Each is one write transaction, validated whole before anything
is written; refusals are recorded like every other action's."""

from __future__ import annotations

import pwd
import re
from typing import TYPE_CHECKING, Any

from encfs.access import text
from encfs.access.roles import (
    COLLECTION_ROLE_WORDS,
    ROLE_WORDS,
    Role,
    User,
    group_subject,
    shown_subject,
    user_subject,
)
from encfs.actions import action
from encfs.datasets import DATASET, PROJECT
from encfs.errors import AccessDenied, AlreadyExists, EncfsError, InvalidInput, NotFound, NotPermitted
from encfs.meta import access as records
from encfs.meta.store import ReadTxn, WriteTxn
from encfs.model import ROOT_ID, Actor, Folder
from encfs.names import is_text, printable, split_path

if TYPE_CHECKING:
    from encfs.service import FilesService

MANAGE = "managing users and groups"


def group_path(name: str) -> str:
    return f"@{name}"


class AccessAdmin:
    """The organisation's users and groups, and who has which role where."""

    def __init__(self, service: FilesService) -> None:
        self.service = service
        self.meta = service.meta
        self.policy = service.access

    def record_refusal(self, actor: Actor, operation: str, exc: EncfsError) -> None:
        self.service.record_refusal(actor, operation, exc)

    # ------------------------------------------------------------ users

    def _require_org_admin(self, r: ReadTxn, actor: Actor, path: str) -> None:
        person = self.policy.person(r, actor)
        if actor.uid != 0 and not (person.admin and person.email is not None):
            raise AccessDenied(f"{MANAGE} is for org admins and root", path)

    @action("user add", where=lambda a: [])
    def add_user(self, actor: Actor, email: str, name: str = "", uid: int | None = None,
                 linux_user: str | None = None, org_admin: bool = False) -> User:
        _check_email(email)
        uid = _uid_of(uid, linux_user, email)
        with self.meta.write() as w:
            self._require_org_admin(w, actor, email)
            if records.user(w, email) is not None:
                raise AlreadyExists(f"user {email} exists (change it with encfs user set)", email)
            self._check_uid_free(w, uid, email)
            user = User(email, name, uid, org_admin)
            records.put_user(w, user.record())
        return user

    def _check_uid_free(self, r: ReadTxn, uid: int | None, email: str) -> None:
        if uid is None:
            return
        if uid == 0:
            raise InvalidInput("uid 0 is root, the store's administrator; it is no user's", email)
        holder = records.email_of_uid(r, uid)
        if holder is not None and holder != email.lower():
            raise AlreadyExists(f"uid {uid} is already user {holder}'s", email)

    @action("user set", where=lambda a: [])
    def set_user(self, actor: Actor, email: str, name: str | None = None, uid: int | None = None,
                 linux_user: str | None = None, org_admin: bool | None = None) -> User:
        new_uid = _uid_of(uid, linux_user, email) if uid is not None or linux_user else None
        with self.meta.write() as w:
            self._require_org_admin(w, actor, email)
            old = self._user(w, email)
            if org_admin is not None and org_admin != old.org_admin and old.org_admin and actor.uid != 0:
                raise NotPermitted(f"{email} is an org admin: their role cannot be changed (root can)",
                                   email)
            self._check_uid_free(w, new_uid, email)
            user = User(old.email, old.name if name is None else name,
                        old.uid if new_uid is None else new_uid,
                        old.org_admin if org_admin is None else org_admin)
            records.put_user(w, user.record(), old_uid=old.uid)
        return user

    @action("user rm", where=lambda a: [])
    def remove_user(self, actor: Actor, email: str) -> None:
        with self.meta.write(reserve=True) as w:
            self._require_org_admin(w, actor, email)
            user = self._user(w, email)
            if user.org_admin and actor.uid != 0:
                raise NotPermitted(f"{email} is an org admin and cannot be removed (root can)", email)
            records.delete_user(w, email)

    def users(self, actor: Actor) -> list[User]:
        with self.meta.read() as r:
            return sorted((User.of(u) for u in records.users(r)), key=lambda u: u.email)

    def user(self, email: str) -> User:
        """The user with this email (NotFound if there is none)."""
        with self.meta.read() as r:
            return self._user(r, email)

    def _user(self, r: ReadTxn, email: str) -> User:
        found = records.user(r, email)
        if found is None:
            raise NotFound(f"no user {email} (see encfs user ls)", email)
        return User.of(found)

    # ------------------------------------------------------------ groups

    @action("group add", where=lambda a: [])
    def add_group(self, actor: Actor, name: str) -> None:
        _check_group_name(name)
        with self.meta.write() as w:
            self._require_org_admin(w, actor, group_path(name))
            if records.group_exists(w, name):
                raise AlreadyExists(f"group {name} exists", group_path(name))
            records.put_group(w, name)

    @action("group rm", where=lambda a: [])
    def remove_group(self, actor: Actor, name: str) -> None:
        with self.meta.write(reserve=True) as w:
            self._require_org_admin(w, actor, group_path(name))
            self._group(w, name)
            records.delete_group(w, name)

    @action("group members", where=lambda a: [])
    def change_members(self, actor: Actor, name: str, add: list[str], remove: list[str]) -> list[str]:
        with self.meta.write() as w:
            if add or remove:
                self._require_org_admin(w, actor, group_path(name))
            self._group(w, name)
            for email in [*add, *remove]:
                self._user(w, email)
            for email in add:
                records.set_member(w, name, email.lower(), True)
            for email in remove:
                records.set_member(w, name, email.lower(), False)
            return records.members(w, name)

    def groups(self, actor: Actor) -> list[tuple[str, list[str]]]:
        with self.meta.read() as r:
            return [(name, records.members(r, name)) for name in records.group_names(r)]

    def _group(self, r: ReadTxn, name: str) -> None:
        if not records.group_exists(r, name):
            raise NotFound(f"no group {name} (see encfs group ls)", group_path(name))

    # ------------------------------------------------------------ grants

    def _target(self, r: ReadTxn, actor: Actor, path: str) -> tuple[int, bool]:
        """(id, is a Dataset or Project) of what `path` names, if the caller sees it."""
        parts = split_path(path)
        if parts[:1] in ([".datasets"], [".projects"]) and len(parts) == 2:
            kind = DATASET if parts[0] == ".datasets" else PROJECT
            collection = self.service._collection(r, kind, parts[1])
            if not self.policy.sees_collection(r, actor, collection.id):
                raise NotFound("no such Dataset or Project", path)
            return collection.id, True
        node = self.service._resolve(r, parts)
        self.policy.check_sees(r, actor, node.id, path)
        if not isinstance(node, Folder):
            raise InvalidInput("access is granted on folders (and Datasets and Projects), not files", path)
        return node.id, False

    def _require_admin(self, r: ReadTxn, actor: Actor, target: int, collection: bool, path: str) -> None:
        if collection:
            self.policy.require_collection(r, actor, target, Role.ADMIN, "Dataset or Project",
                                           "changing its access", path)
        else:
            self.policy.require(r, actor, target, Role.ADMIN, "changing the folder's access", path)

    def listing(self, actor: Actor, path: str) -> dict[str, Any]:
        """Own grants, inherited ones (with where from) and org admins, as `.access` shows them."""
        with self.meta.read() as r:
            target, collection = self._target(r, actor, path)
            if not collection:  # a folder seen only on the way down to one's own does not show its grants
                self.policy.require(r, actor, target, Role.VIEWER, "reading the folder's access", path)
            own = [(shown_subject(s), Role(role).word, path) for s, role in records.grants_on(r, target)]
            inherited = [] if collection else self._inherited(r, target)
            admins = sorted(u["email"] for u in records.users(r) if u.get("org_admin"))
            return {"path": path, "own": own, "inherited": inherited, "org_admins": admins,
                    "collection": collection}

    def _inherited(self, r: ReadTxn, folder_id: int) -> list[tuple[str, str, str]]:
        found = []
        node = r.node(folder_id)
        while isinstance(node, Folder) and node.id != ROOT_ID:
            parent_id = node.parent
            where = self.service._path(r, parent_id, {})
            found += [(shown_subject(s), Role(role).word, where)
                      for s, role in records.grants_on(r, parent_id)]
            node = r.node(parent_id)
        return found

    def text(self, actor: Actor, path: str) -> bytes:
        shown = self.listing(actor, path)
        return text.render(shown["path"], shown["own"], shown["inherited"], shown["org_admins"],
                           shown["collection"]).encode()

    @action("access write")
    def write_text(self, actor: Actor, path: str, raw: bytes) -> None:
        """`.access` written: its lines replace the folder's own grants, all or nothing."""
        lines = text.parse(raw, path)
        with self.meta.write() as w:
            target, collection = self._target(w, actor, path)
            self._require_admin(w, actor, target, collection, path)
            wanted: dict[str, Role] = {}
            for line in lines:
                where = f"line {line.number}: "
                subject, role = self._grant_of(w, line.who, line.role, collection, path, where)
                if subject in wanted:
                    raise InvalidInput(f"{where}{line.who} is named twice; nothing was changed", path)
                wanted[subject] = role
            self._replace_grants(w, target, {s: r for s, r in wanted.items() if not self._is_org_admin(w, s)})
            self._journal(w, target, collection, path)

    def _replace_grants(self, w: WriteTxn, target: int, wanted: dict[str, Role]) -> None:
        current = dict(records.grants_on(w, target))
        for subject in current.keys() - wanted.keys():
            records.set_grant(w, target, subject, None)
        for subject, role in wanted.items():
            if current.get(subject) != role:
                records.set_grant(w, target, subject, role)

    def _is_org_admin(self, r: ReadTxn, subject: str) -> bool:
        if not subject.startswith("u:"):
            return False
        found = records.user(r, subject[2:])
        return bool(found and found.get("org_admin"))

    def _grant_of(self, r: ReadTxn, who: str, role_word: str, collection: bool, path: str,
                  where: str = "") -> tuple[str, Role]:
        """The subject and role a line or a command names, checked: a known user or
        group, a known role, no change to an org admin."""
        words = COLLECTION_ROLE_WORDS if collection else ROLE_WORDS
        role = words.get(role_word.lower())
        if role is None:
            raise InvalidInput(f"{where}unknown role {role_word!r}: the roles are {', '.join(words)}; "
                               "nothing was changed", path)
        if who.startswith("@"):
            if not records.group_exists(r, who[1:]):
                raise InvalidInput(f"{where}no group {who[1:]} (see encfs group ls); nothing was changed",
                                   path)
            return group_subject(who[1:]), role
        if records.user(r, who) is None:
            raise InvalidInput(f"{where}no user {who} (see encfs user ls); nothing was changed", path)
        subject = user_subject(who)
        if self._is_org_admin(r, subject) and role != Role.ADMIN:
            raise NotPermitted(f"{where}{who} is an org admin: admin everywhere, which cannot be changed; "
                               "nothing was changed", path)
        return subject, role

    @action("access write", where=lambda a: [a["folder"], a["source"]])
    def write_from_file(self, actor: Actor, source: str, folder: str) -> None:
        """`mv FOLDER/tmp FOLDER/.access` (how editors save): the file's content is
        written as the folder's access list, and the file goes; refused, both stay."""
        item = self.service.lookup(actor, source)
        if isinstance(item, Folder):
            raise InvalidInput("a folder cannot become an access list", source)
        if item.size > text.ACCESS_TEXT_MAX:
            raise InvalidInput(f"an access list is at most {text.ACCESS_TEXT_MAX // 1024} KiB; nothing was "
                               "changed", folder)
        reader = self.service.open_reader(actor, item)
        try:
            raw = b"" if reader is None else reader.pread(item.size, 0)
        finally:
            if reader is not None:
                reader.close()
        self.write_text(actor, folder, raw)
        self.service.remove_item(actor, source)

    @action("access grant")
    def grant(self, actor: Actor, path: str, who: str, role: str) -> None:
        with self.meta.write() as w:
            target, collection = self._target(w, actor, path)
            self._require_admin(w, actor, target, collection, path)
            subject, level = self._grant_of(w, who, role, collection, path)
            if not self._is_org_admin(w, subject):
                records.set_grant(w, target, subject, level)
                self._journal(w, target, collection, path)

    @action("access revoke")
    def revoke(self, actor: Actor, path: str, who: str) -> None:
        with self.meta.write(reserve=True) as w:
            target, collection = self._target(w, actor, path)
            self._require_admin(w, actor, target, collection, path)
            subject = group_subject(who[1:]) if who.startswith("@") else user_subject(who)
            if self._is_org_admin(w, subject):
                raise NotPermitted(f"{who} is an org admin: admin everywhere, which cannot be changed", path)
            if subject not in dict(records.grants_on(w, target)):
                raise NotFound(f"{who} has no grant on {path} itself (inherited grants are revoked where "
                               "they were made)", path)
            records.set_grant(w, target, subject, None)
            self._journal(w, target, collection, path)

    @staticmethod
    def _journal(w: WriteTxn, target: int, collection: bool, path: str) -> None:
        """A change of grants is an "access change" line in the folder's activity (a
        Dataset's or Project's is in no folder's)."""
        w.journal("access change", [path], folder_ids=[] if collection else [target])


def _check_email(email: str) -> None:
    malformed = "@" not in email.strip("@") or email.startswith("@") or len(email) > 254 or not is_text(email)
    if malformed or any(c.isspace() or c in "#/" for c in email):
        raise InvalidInput(f"{printable(email)[:300]!r} is not an email address", "")


GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def _check_group_name(name: str) -> None:
    if not GROUP_NAME.fullmatch(name):
        raise InvalidInput(f"{printable(name)[:200]!r} is not a group name (letters, digits, '.', '_' "
                           "and '-', at most 128)", "")


def _uid_of(uid: int | None, linux_user: str | None, email: str) -> int | None:
    if uid is not None and linux_user:
        raise InvalidInput("give --uid or --linux-user, not both", email)
    if linux_user:
        try:
            return pwd.getpwnam(linux_user).pw_uid
        except KeyError:
            raise NotFound(f"no Linux user {linux_user} on this machine", email) from None
    if uid is not None and not 0 <= uid < 2**32 - 1:
        raise InvalidInput(f"uid {uid} is not a Linux uid", email)
    return uid
