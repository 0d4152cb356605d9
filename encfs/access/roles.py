"""Roles, people and grants: the nouns of folder access."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.IntEnum):
    """Folder roles, each including the one before: Encord's viewer and admin, and
    editor, which a drive needs (create, write, rename, move, delete)."""

    NONE = 0
    VIEWER = 1
    EDITOR = 2
    ADMIN = 3

    @property
    def word(self) -> str:
        return self.name.lower()


ROLE_WORDS = {role.word: role for role in (Role.VIEWER, Role.EDITOR, Role.ADMIN)}
COLLECTION_ROLE_WORDS = {"viewer": Role.VIEWER, "admin": Role.ADMIN}  # Encord's Dataset and Project roles


@dataclass(frozen=True)
class User:
    email: str
    name: str = ""
    uid: int | None = None
    org_admin: bool = False

    def record(self) -> dict:
        return {"email": self.email, "name": self.name, "uid": self.uid, "org_admin": self.org_admin}

    @classmethod
    def of(cls, record: dict) -> User:
        return cls(record["email"], record.get("name", ""), record.get("uid"), bool(record.get("org_admin")))


@dataclass(frozen=True)
class Person:
    """Who a call acts for. `subjects` are the grant subjects that apply to them (their
    user and their groups); `admin` is true for root and org admins (admin everywhere);
    `member` is false for a uid no user maps (nobody: sees an empty root)."""

    uid: int
    email: str | None
    subjects: frozenset[str]
    admin: bool

    @property
    def member(self) -> bool:
        return self.admin or self.email is not None


EVERYONE = Person(uid=-1, email=None, subjects=frozenset(), admin=True)  # a store without users


def user_subject(email: str) -> str:
    return "u:" + email.lower()


def group_subject(group: str) -> str:
    return "g:" + group


def shown_subject(subject: str) -> str:
    """How `.access` and `encfs access ls` write a subject: EMAIL or @GROUP."""
    return subject[2:] if subject.startswith("u:") else "@" + subject[2:]
