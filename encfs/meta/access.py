"""The access records in LMDB: users, groups, memberships and grants. Nothing here
knows a rule; `encfs.access` decides.

    users        email:utf8 (lower case) -> JSON {email, name, uid, org_admin}
    uids         uid:u64 -> email (each Linux uid maps to at most one user)
    groups       name:utf8 -> JSON {name}
    memberships  group:utf8 + 0x00 + email -> b""
    member_of    email + 0x00 + group -> b"" (the same pairs the other way round)
    grants       target:u64 + subject:utf8 -> role:u8 (target: a folder, Dataset or Project id;
                 subject: "u:EMAIL" or "g:GROUP")
    granted      subject + 0x00 + target:u64 -> role:u8 (the same grants by subject)
    info         b"access_generation" -> u64, bumped by every change that can change
                 who may see or do what (access, users, groups, folder moves and removals)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from encfs.meta.store import U64, ReadTxn, WriteTxn, _text_key, u64

GENERATION = b"access_generation"


def generation(r: ReadTxn) -> int:
    raw = r.txn.get(GENERATION, db=r.dbs["info"])
    return 0 if raw is None else U64.unpack(raw)[0]


def bump_generation(w: WriteTxn) -> None:
    w.txn.put(GENERATION, u64(generation(w) + 1), db=w.dbs["info"])


def has_users(r: ReadTxn) -> bool:
    with r.txn.cursor(db=r.dbs["users"]) as cur:
        return cur.first()


def user(r: ReadTxn, email: str) -> dict[str, Any] | None:
    key = _text_key(email.lower())
    raw = None if key is None else r.txn.get(key, db=r.dbs["users"])
    return None if raw is None else json.loads(raw)


def users(r: ReadTxn) -> Iterator[dict[str, Any]]:
    with r.txn.cursor(db=r.dbs["users"]) as cur:
        for _, value in cur:
            yield json.loads(value)


def email_of_uid(r: ReadTxn, uid: int) -> str | None:
    raw = r.txn.get(u64(uid), db=r.dbs["uids"])
    return None if raw is None else raw.decode()


def put_user(w: WriteTxn, record: dict[str, Any], old_uid: int | None = None) -> None:
    key = record["email"].lower().encode()
    if old_uid is not None:
        w.txn.delete(u64(old_uid), db=w.dbs["uids"])
    w.txn.put(key, json.dumps(record).encode(), db=w.dbs["users"])
    if record.get("uid") is not None:
        w.txn.put(u64(record["uid"]), key, db=w.dbs["uids"])
    bump_generation(w)


def delete_user(w: WriteTxn, email: str) -> None:
    record = user(w, email)
    if record is None:
        return
    key = email.lower()
    if record.get("uid") is not None:
        w.txn.delete(u64(record["uid"]), db=w.dbs["uids"])
    for group in groups_of_user(w, key):
        set_member(w, group, key, False)
    _drop_subject(w, "u:" + key, "users", key)


def group_exists(r: ReadTxn, name: str) -> bool:
    key = _text_key(name)
    return key is not None and r.txn.get(key, db=r.dbs["groups"]) is not None


def group_names(r: ReadTxn) -> list[str]:
    with r.txn.cursor(db=r.dbs["groups"]) as cur:
        return [key.decode() for key in cur.iternext(keys=True, values=False)]


def put_group(w: WriteTxn, name: str) -> None:
    w.txn.put(name.encode(), json.dumps({"name": name}).encode(), db=w.dbs["groups"])
    bump_generation(w)


def delete_group(w: WriteTxn, name: str) -> None:
    for email in members(w, name):
        set_member(w, name, email, False)
    _drop_subject(w, "g:" + name, "groups", name)


def _drop_subject(w: WriteTxn, subject: str, db: str, key: str) -> None:
    """A user or group goes: its grants everywhere, then its record."""
    for target, _ in grants_by(w, subject):
        set_grant(w, target, subject, None)
    w.txn.delete(key.encode(), db=w.dbs[db])
    bump_generation(w)


def members(r: ReadTxn, group: str) -> list[str]:
    return [key.split(b"\x00", 1)[1].decode() for key, _ in r._scan("memberships", group.encode() + b"\x00")]


def groups_of_user(r: ReadTxn, email: str) -> list[str]:
    return [key.split(b"\x00", 1)[1].decode() for key, _ in r._scan("member_of", email.encode() + b"\x00")]


def set_member(w: WriteTxn, group: str, email: str, present: bool) -> None:
    w._mark("memberships", group.encode() + b"\x00" + email.encode(), present)
    w._mark("member_of", email.encode() + b"\x00" + group.encode(), present)
    bump_generation(w)


def grants_on(r: ReadTxn, target: int) -> list[tuple[str, int]]:
    """(subject, role) of the grants made on one folder, Dataset or Project."""
    return [(key[8:].decode(), value[0]) for key, value in r._scan("grants", u64(target))]


def grants_by(r: ReadTxn, subject: str) -> list[tuple[int, int]]:
    """(target, role) of a subject's grants."""
    prefix = subject.encode() + b"\x00"
    return [(U64.unpack(key[-8:])[0], value[0]) for key, value in r._scan("granted", prefix)]


def set_grant(w: WriteTxn, target: int, subject: str, role: int | None) -> None:
    key, by_subject = u64(target) + subject.encode(), subject.encode() + b"\x00" + u64(target)
    if role is None:
        w.txn.delete(key, db=w.dbs["grants"])
        w.txn.delete(by_subject, db=w.dbs["granted"])
    else:
        w.txn.put(key, bytes([role]), db=w.dbs["grants"])
        w.txn.put(by_subject, bytes([role]), db=w.dbs["granted"])
    bump_generation(w)


def drop_grants_on(w: WriteTxn, target: int) -> None:
    """A removed folder, Dataset or Project takes its grants with it."""
    for subject, _ in grants_on(w, target):
        set_grant(w, target, subject, None)
