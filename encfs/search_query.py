"""The search language: what `encfs search --where EXPR` and `/.search/EXPR,EXPR/` take.

    kind=image            kind!=video                (a kind, as Encord names it)
    size>5MB  size<=1.5GiB  width>=1024  height<720  duration<10  fps=30
    created>2026-01-01    created=2026-01-31        (ISO 8601, UTC; a date alone with =
                                                    is that whole day)
    in:DATASET  not-in:DATASET                      (a Dataset's files, or files not in it)
    under:/FOLDER                                   (a folder and everything below it; the
                                                    leading / may go, and in a /.search path
                                                    a / inside is written %2F: under:a%2Fb)
    meta.KEY=V  meta.KEY!=V  meta.KEY>0.8  meta.KEY~text   (client metadata)
    name~TEXT                                       (any-case substring of the name)

Comparisons are = != < <= > >= and ~ (contains, any case). Sizes take B, KB, MB, GB, TB
(powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024). A path segment of /.search is
a comma-separated list of these; a segment in which no part is an expression is plain
name text, as before (`/.search/frame_0001/`), and plain parts beside expressions are
name text too. A bad expression raises InvalidInput with a sentence saying why.

The typing of a `meta.KEY` value waits for the metadata schema (finder.py)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from encfs.errors import InvalidInput
from encfs.meta.attrindex import datetime_ns
from encfs.model import Kind

OPERATORS = ("!=", ">=", "<=", "=", ">", "<", "~")
MEDIA_FIELDS = ("size", "width", "height", "duration", "fps", "created")
FIELDS = ("kind", "name", *MEDIA_FIELDS)
ORDERED = ("<", "<=", ">", ">=")
UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
         "kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}
DAY_NS = 86_400 * 10**9
_CONDITION = re.compile(r"(?P<field>[A-Za-z_]+|meta\.[^=<>!~]+?)\s*(?P<op>!=|>=|<=|=|>|<|~)(?P<value>.*)",
                        re.S)
_PLACE = re.compile(r"(?P<field>in|not-in|under):(?P<value>.*)", re.S)
_SIZE = re.compile(r"(?P<number>[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*(?P<unit>[A-Za-z]*)")
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class Condition:
    """One filter: `field op value`; `value` is typed for every field but meta.KEY."""

    field: str
    op: str
    value: Any
    until: Any = None  # created=DATE: the end of that day (exclusive)

    @property
    def meta_key(self) -> str | None:
        return self.field[5:] if self.field.startswith("meta.") else None


@dataclass
class Query:
    texts: list[str] = field(default_factory=list)  # name substrings, case-folded
    conditions: list[Condition] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.texts and not self.conditions

    def describe(self) -> str:
        parts = [f"name~{t}" for t in self.texts]
        parts += [f"{c.field}{c.op}{c.value}" if c.field not in ("in", "not-in", "under")
                  else f"{c.field}:{c.value}" for c in self.conditions]
        return ",".join(parts)


def looks_like_expression(term: str) -> bool:
    """Whether a term is written as an expression (a word, or meta.KEY, then an
    operator; or a place), rather than name text. A word that is not a field makes a
    bad expression, not text: a misspelt field is refused, never searched for."""
    return bool(_PLACE.fullmatch(term) or _CONDITION.fullmatch(term)) or term.startswith("meta.")


def parse_expression(term: str) -> Condition | str:
    """One expression as a Condition; `name~TEXT` as the text; InvalidInput if bad."""
    place = _PLACE.fullmatch(term)
    if place:
        value = place["value"]
        if not value:
            raise InvalidInput(f"'{term}': {place['field']}: needs a name after the colon")
        if place["field"] == "under":
            value = "/" + value.replace("%2F", "/").replace("%2f", "/").strip("/")
        return Condition(place["field"], ":", value)
    found = _CONDITION.fullmatch(term)
    if not found:
        raise InvalidInput(f"'{term}' is not a search expression; write FIELD OP VALUE (e.g. width>=1024), "
                           "in:DATASET, not-in:DATASET or under:/FOLDER")
    name, op, value = found["field"].strip(), found["op"], found["value"].strip()
    if not value:
        raise InvalidInput(f"'{term}': give a value after {op}")
    if name.startswith("meta."):
        if not name[5:].strip():
            raise InvalidInput(f"'{term}': meta. needs a key, e.g. meta.site=north")
        return Condition(name, op, value)
    if name not in FIELDS:
        raise InvalidInput(f"'{term}': unknown field '{name}'; fields are {', '.join(FIELDS)} and meta.KEY")
    return _typed(term, name, op, value)


def _typed(term: str, name: str, op: str, value: str) -> Condition | str:
    if name == "name":
        if op != "~":
            raise InvalidInput(f"'{term}': name takes ~ (contains), e.g. name~frame")
        return value.casefold()
    if name == "kind":
        if op not in ("=", "!="):
            raise InvalidInput(f"'{term}': kind takes = or !=")
        if value not in {k.value for k in Kind}:
            kinds = ", ".join(k.value for k in Kind)
            raise InvalidInput(f"'{term}': unknown kind '{value}'; kinds are {kinds}")
        return Condition(name, op, Kind(value))
    if op == "~":
        raise InvalidInput(f"'{term}': ~ (contains) is for name and meta.KEY; {name} takes = != < <= > >=")
    if name == "created":
        return _created(term, op, value)
    number = _size(term, value) if name == "size" else _number(term, name, value)
    if name in ("width", "height") and number != int(number):
        raise InvalidInput(f"'{term}': {name} is a whole number of pixels")
    return Condition(name, op, number)


def _number(term: str, name: str, value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise InvalidInput(f"'{term}': {name} takes a number, not '{value}'") from None
    if not math.isfinite(number) or number < 0:
        raise InvalidInput(f"'{term}': {name} takes a number of 0 or more")
    return number


def _size(term: str, value: str) -> float:
    found = _SIZE.fullmatch(value)
    if not found or found["unit"].lower() not in UNITS:
        raise InvalidInput(f"'{term}': a size is a number with B, KB, MB, GB, TB, KiB, MiB, GiB or TiB "
                           "(e.g. 5MB)")
    return float(found["number"]) * UNITS[found["unit"].lower()]


def _created(term: str, op: str, value: str) -> Condition:
    ns = datetime_ns(value)
    if ns is None:
        raise InvalidInput(f"'{term}': created takes an ISO 8601 date or datetime, e.g. 2026-01-31 or "
                           "2026-01-31T12:00:00Z")
    if op in ("=", "!=") and _DATE_ONLY.fullmatch(value.strip()):
        return Condition("created", op, ns, until=ns + DAY_NS)
    return Condition("created", op, ns)


def parse_terms(text: str | None, expressions: list[str]) -> Query:
    """The CLI's form: TEXT (a name substring) and --where expressions (each may hold
    several, comma-separated)."""
    query = Query()
    if text:
        query.texts.append(text.casefold())
    for expression in expressions:
        for term in _split(expression):
            _add(query, parse_expression(term))
    return query


def parse_segment(segment: str) -> Query:
    """The path form: one /.search segment."""
    if not any(looks_like_expression(term.strip()) for term in segment.split(",")):
        return Query(texts=[segment.casefold()] if segment else [])
    query = Query()
    for term in _split(segment):
        if looks_like_expression(term):
            _add(query, parse_expression(term))
        elif term:
            query.texts.append(term.casefold())
    return query


def _split(expression: str) -> list[str]:
    terms = [term.strip() for term in expression.split(",")]
    if any(not term for term in terms):
        raise InvalidInput(f"'{expression}': an empty expression between commas")
    return terms


def _add(query: Query, parsed: Condition | str) -> None:
    if isinstance(parsed, str):
        query.texts.append(parsed)
    else:
        query.conditions.append(parsed)
