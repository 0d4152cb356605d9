"""Domain errors. Each carries the errno the mount returns and a sentence for people.

The service raises these; the FUSE adapter turns them into the errno, the CLI into a
message and a non-zero exit. Those raised by a user action (`actions.action`) are also
recorded in the user's `/.encfs/errors`; a lookup of a missing name is not an action.
"""

from __future__ import annotations

import errno


class EncfsError(Exception):
    errno: int = errno.EIO
    exit_code: int = 1

    def __init__(self, reason: str, path: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path else self.reason


class NotFound(EncfsError):
    errno = errno.ENOENT
    exit_code = 2


class AlreadyExists(EncfsError):
    errno = errno.EEXIST


class NotPermitted(EncfsError):
    errno = errno.EPERM


class InvalidInput(EncfsError):
    errno = errno.EINVAL


class NotText(EncfsError):
    """A name that is not UTF-8 text: Linux allows any bytes, Encord names are text."""

    errno = errno.EILSEQ


class NameTooLong(EncfsError):
    errno = errno.ENAMETOOLONG


class FolderNotEmpty(EncfsError):
    errno = errno.ENOTEMPTY


class IsAFolder(EncfsError):
    errno = errno.EISDIR


class NotAFolder(EncfsError):
    errno = errno.ENOTDIR


class Busy(EncfsError):
    errno = errno.EBUSY


class NoSpace(EncfsError):
    errno = errno.ENOSPC


class NoAttribute(EncfsError):
    errno = errno.ENODATA


class StoreError(EncfsError):
    """The store directory is missing, is not a store, or cannot be opened."""

    errno = errno.EIO
    exit_code = 3


DAMAGED = "the store's metadata is damaged: run encfs fsck"


class DamagedMetadata(StoreError):
    """The metadata is not what encfs wrote (cut short, pages or records damaged).
    A fault, not a refusal: it is logged, never recorded in `/.encfs/errors`."""

    def __init__(self, detail: str, path: str = "") -> None:
        super().__init__(f"{DAMAGED} ({detail})", path)
        self.detail = detail


class ReadOnly(EncfsError):
    errno = errno.EROFS


class AccessDenied(EncfsError):
    """The caller may not do this: the modes do not let them (before the store has
    users), or their role on a folder, Dataset or Project is too low."""

    errno = errno.EACCES
