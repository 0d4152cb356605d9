"""Name search by trigrams. A name is padded with a start mark and two end marks so that
every character begins some gram; a query of three or more characters needs only the
postings of its rarest gram, a shorter one the grams that start with it."""

from __future__ import annotations

START, END = "\x02", "\x03"


def grams_of(lowered_name: str) -> set[str]:
    padded = START + lowered_name + END + END
    return {padded[i : i + 3] for i in range(len(padded) - 2)}


def query_grams(lowered_query: str) -> list[str]:
    return [lowered_query[i : i + 3] for i in range(len(lowered_query) - 2)]
