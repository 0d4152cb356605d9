"""What users attach to files and folders, and the limits on it, checked at the door.

- Client metadata (`user.encord.client_metadata`, `encfs folder create --metadata`, and
  anything that imports it) is a JSON object of bounded size, nesting and numbers, with
  text for every key and string. One validator serves every way in, so what one accepts
  the others can store and give back: a value the mount cannot return (over 64 KiB as
  `getfattr` shows it) or that Python cannot read back (nesting a thousand deep, an
  integer of 5,000 digits) never reaches the store.
- Descriptions (folders, Datasets, Projects) are UTF-8 text of at most 64 KiB.
- `user.*` attributes: each value at most 64 KiB (the kernel's own limit); per file or
  folder at most `USER_ATTRIBUTES_MAX` of them, with names and values together at most
  `USER_ATTRIBUTES_BYTES` (ext4 fits all of an inode's attributes in one 4 KiB block
  unless `ea_inode` is on, XFS keeps 64 KiB per value; the node record that holds them
  is rewritten on every change, so it must stay small).
"""

from __future__ import annotations

import json
import math
from typing import Any

from encfs.errors import InvalidInput, NoSpace
from encfs.names import is_text

XATTR_MAX = 64 * 1024  # the kernel's limit on one attribute value (XATTR_SIZE_MAX)
METADATA_MAX_BYTES = XATTR_MAX  # as getfattr shows it, so the mount can always return it
METADATA_MAX_DEPTH = 64
INT_MIN, INT_MAX = -(1 << 63), (1 << 64) - 1  # what signed and unsigned 64-bit integers hold
INT_MAX_DIGITS = 20
DESCRIPTION_MAX_BYTES = XATTR_MAX
USER_ATTRIBUTES_MAX = 128  # their names must list in 64 KiB (the kernel's XATTR_LIST_MAX)
USER_ATTRIBUTES_BYTES = 256 * 1024
METADATA = "client metadata"


def metadata_text(metadata: dict[str, Any]) -> str:
    """Client metadata as `user.encord.client_metadata` shows it: sorted keys, ASCII."""
    return json.dumps(metadata, sort_keys=True)


def parse_client_metadata(raw: str | bytes, path: str = "") -> dict[str, Any]:
    """A JSON object within the limits, or InvalidInput saying what is wrong."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"{METADATA} must be UTF-8 text holding a JSON object", path) from None
    if len(raw.encode("utf-8", "surrogateescape")) > 4 * METADATA_MAX_BYTES:
        raise InvalidInput(f"{METADATA} is at most {METADATA_MAX_BYTES} bytes", path)
    try:
        value = json.loads(raw, parse_int=_integer, parse_float=_float, parse_constant=_constant)
    except RecursionError:
        raise _too_deep(path) from None
    except _NumberRefused as exc:
        raise InvalidInput(f"{METADATA}: {exc}", path) from None
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"{METADATA} must be a JSON object; this is not JSON: {exc}", path) from None
    if not isinstance(value, dict):
        raise InvalidInput(f"{METADATA} must be a JSON object, not a JSON {_json_type(value)}", path)
    check_client_metadata(value, path)
    return value


def check_client_metadata(metadata: Any, path: str = "") -> None:
    """Refuse client metadata given as a value (an import, the service's callers) that
    breaks a limit; the same limits as `parse_client_metadata`."""
    if not isinstance(metadata, dict):
        raise InvalidInput(f"{METADATA} must be a JSON object, not a JSON {_json_type(metadata)}", path)
    _check_values(metadata, path)
    size = len(metadata_text(metadata))
    if size > METADATA_MAX_BYTES:
        raise InvalidInput(f"{METADATA} is at most {METADATA_MAX_BYTES} bytes as user.encord.client_metadata "
                           f"shows it (sorted keys, ASCII JSON); this is {size} bytes", path)


def nesting_depth(value: Any, stop_above: int) -> int:
    """How deeply objects and arrays nest in `value` ({} is 1), counted without recursion
    and only up to `stop_above` + 1."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        current, depth = stack.pop()
        if not isinstance(current, dict | list):
            continue
        deepest = max(deepest, depth)
        if deepest > stop_above:
            return deepest
        children = current.values() if isinstance(current, dict) else current
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_description(description: str, path: str = "") -> None:
    if not is_text(description):
        raise InvalidInput("a description must be UTF-8 text", path)
    size = len(description.encode("utf-8"))
    if size > DESCRIPTION_MAX_BYTES:
        raise InvalidInput(f"a description is at most {DESCRIPTION_MAX_BYTES} bytes; this is {size}", path)


def check_user_attributes(current: dict[str, bytes], name: str, value: bytes, path: str) -> None:
    """Setting `name` to `value` on a node holding `current` user attributes: refused
    with ENOSPC past the per-node limits, unless it makes the node no bigger (so an
    attribute can always be shrunk or replaced by a smaller one)."""
    after = {**current, name: value}
    count, size = len(after), _attributes_size(after)
    if count > USER_ATTRIBUTES_MAX and count > len(current):
        raise NoSpace(f"a file or folder holds at most {USER_ATTRIBUTES_MAX} user attributes; remove one "
                      "first", path)
    if size > USER_ATTRIBUTES_BYTES and size > _attributes_size(current):
        raise NoSpace(f"a file or folder's user attributes take at most {USER_ATTRIBUTES_BYTES} bytes "
                      f"(names and values together); these would take {size}", path)


def _attributes_size(attributes: dict[str, bytes]) -> int:
    return sum(len(name.encode("utf-8", "surrogateescape")) + len(value)
               for name, value in attributes.items())


# --------------------------------------------------------------------------- checks of a value


class _NumberRefused(ValueError):
    pass


def _integer(digits: str) -> int:
    if len(digits.lstrip("-")) > INT_MAX_DIGITS:
        raise _NumberRefused(f"integers are at most {INT_MAX_DIGITS} digits (64 bits); "
                             f"one has {len(digits.lstrip('-'))}")
    return int(digits)


def _float(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise _NumberRefused(f"the number {text[:40]} is too large for a 64-bit float")
    return number


def _constant(name: str) -> float:
    raise _NumberRefused(f"{name} is not a JSON number")


def _check_values(metadata: dict[str, Any], path: str) -> None:
    """Every key and string text, every number bounded, nesting bounded; no recursion."""
    stack: list[tuple[Any, int]] = [(metadata, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > METADATA_MAX_DEPTH:
                raise _too_deep(path)
            if isinstance(value, dict):
                for key in value:
                    _check_text(key, "a key", path)
            children = value.values() if isinstance(value, dict) else value
            stack.extend((child, depth + 1) for child in children)
        elif isinstance(value, str):
            _check_text(value, "a string", path)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, int):
            if not INT_MIN <= value <= INT_MAX:
                raise InvalidInput(f"{METADATA}: integers are between {INT_MIN} and {INT_MAX} (64 bits)",
                                   path)
        elif isinstance(value, float):
            if not math.isfinite(value):
                raise InvalidInput(f"{METADATA}: NaN and infinities are not JSON numbers", path)
        else:
            raise InvalidInput(f"{METADATA}: a {type(value).__name__} is not a JSON value", path)


def _check_text(text: Any, what: str, path: str) -> None:
    if not isinstance(text, str):
        raise InvalidInput(f"{METADATA}: {what} must be text, not {type(text).__name__}", path)
    if not is_text(text):
        raise InvalidInput(f"{METADATA}: {what} is not valid Unicode text (a lone surrogate escape)", path)


def _too_deep(path: str) -> InvalidInput:
    return InvalidInput(f"{METADATA} nests objects and arrays at most {METADATA_MAX_DEPTH} deep", path)


def _json_type(value: Any) -> str:
    names = {list: "array", str: "string", bool: "boolean", int: "number", float: "number",
             type(None): "null"}
    return names.get(type(value), type(value).__name__)
