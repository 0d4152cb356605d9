"""The search language, parsed and refused exactly: a table of good and bad expressions."""

from __future__ import annotations

import pytest

from encfs.errors import InvalidInput
from encfs.model import Kind
from encfs.search_query import Condition, parse_segment, parse_terms

DAY = 86_400 * 10**9
JAN_1_2026 = 1_767_225_600 * 10**9

GOOD = [
    ("frame_0001", ["frame_0001"], []),
    ("Frame", ["frame"], []),
    ("a,,b", ["a,,b"], []),  # no expression in it: plain name text, commas and all
    ("kind=image", [], [Condition("kind", "=", Kind.IMAGE)]),
    ("kind!=video", [], [Condition("kind", "!=", Kind.VIDEO)]),
    ("width>=1024", [], [Condition("width", ">=", 1024.0)]),
    ("height < 720", [], [Condition("height", "<", 720.0)]),
    ("duration<10", [], [Condition("duration", "<", 10.0)]),
    ("fps=29.97", [], [Condition("fps", "=", 29.97)]),
    ("size>5MB", [], [Condition("size", ">", 5_000_000.0)]),
    ("size<=1.5KiB", [], [Condition("size", "<=", 1536.0)]),
    ("size>=10", [], [Condition("size", ">=", 10.0)]),
    ("created>2026-01-01", [], [Condition("created", ">", JAN_1_2026)]),
    ("created=2026-01-01", [], [Condition("created", "=", JAN_1_2026, until=JAN_1_2026 + DAY)]),
    ("created<2026-01-01T00:00:01Z", [], [Condition("created", "<", JAN_1_2026 + 10**9)]),
    ("in:Train", [], [Condition("in", ":", "Train")]),
    ("not-in:Train set", [], [Condition("not-in", ":", "Train set")]),
    ("under:/CT scans", [], [Condition("under", ":", "/CT scans")]),
    ("under:CT scans%2F2026", [], [Condition("under", ":", "/CT scans/2026")]),
    ("meta.site=north", [], [Condition("meta.site", "=", "north")]),
    ("meta.score>0.8", [], [Condition("meta.score", ">", "0.8")]),
    ("meta.tags~car", [], [Condition("meta.tags", "~", "car")]),
    ("meta.a.b!=x", [], [Condition("meta.a.b", "!=", "x")]),
    ("name~Frame", ["frame"], []),
    ("frame,kind=image", ["frame"], [Condition("kind", "=", Kind.IMAGE)]),
    ("kind=image,width>=1024,meta.site=north", [],
     [Condition("kind", "=", Kind.IMAGE), Condition("width", ">=", 1024.0),
      Condition("meta.site", "=", "north")]),
]

BAD = [
    ("widht>=1024", "unknown field 'widht'"),
    ("kind=img", "unknown kind 'img'"),
    ("kind>image", "kind takes = or !="),
    ("width>=wide", "width takes a number"),
    ("width=10.5", "whole number of pixels"),
    ("duration<-1", "a number of 0 or more"),
    ("size>5XB", "a size is a number with"),
    ("size~5", "~ (contains) is for name and meta.KEY"),
    ("created>yesterday", "ISO 8601"),
    ("fps>", "give a value after >"),
    ("in:", "in: needs a name"),
    ("name=x", "name takes ~"),
    ("meta.=3", "not a search expression"),
    ("kind=image,,width>1", "an empty expression between commas"),
]


@pytest.mark.parametrize(("segment", "texts", "conditions"), GOOD)
def test_good_expressions(segment: str, texts: list[str], conditions: list[Condition]) -> None:
    query = parse_segment(segment)
    assert (query.texts, query.conditions) == (texts, conditions)


@pytest.mark.parametrize(("segment", "says"), BAD)
def test_bad_expressions_are_refused_with_a_reason(segment: str, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_segment(segment)
    assert says in str(refused.value)


def test_cli_form_takes_text_and_where_lists() -> None:
    query = parse_terms("Chick", ["kind=image,width>=10", "in:Train"])
    assert query.texts == ["chick"]
    assert [c.field for c in query.conditions] == ["kind", "width", "in"]
    with pytest.raises(InvalidInput):
        parse_terms(None, ["chicken"])  # --where takes expressions only
