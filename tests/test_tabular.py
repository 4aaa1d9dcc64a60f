"""Spreadsheet-safe CSV: RFC 4180 quoting and the formula guard, for any cell text."""

from __future__ import annotations

import csv
import io

import polars as pl
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from course_exports.tabular import csv_bytes, safe_csv

TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
cell = st.one_of(
    st.none(),
    st.text(
        alphabet=st.one_of(st.sampled_from(list("=+-@\t\r\n\",; '\x00")), st.characters()),
        max_size=40,
    ),
).filter(lambda text: text is None or not any("\ud800" <= ch <= "\udfff" for ch in text))
rows = st.lists(st.tuples(cell, cell, cell), max_size=20)
HEADER = ["First Name", "Last Name", "Note"]


def read_back(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8"), newline="")))


def frame(values: list[tuple[str | None, str | None, str | None]]) -> pl.DataFrame:
    return pl.DataFrame(values, schema=dict.fromkeys(HEADER, pl.String), orient="row")


def guarded(text: str | None) -> str:
    if not text:
        return ""
    return f"'{text}" if text.startswith(TRIGGERS) else text


@examples(max_examples=300, deadline=None)
@given(rows)
def test_csv_reader_gets_back_exactly_the_strings(values: list[tuple[str | None, ...]]) -> None:
    data = csv_bytes(frame(values), HEADER)  # type: ignore[arg-type]
    assert read_back(data) == [HEADER, *[[v or "" for v in row] for row in values]]
    assert data.endswith(b"\r\n")


@examples(max_examples=300, deadline=None)
@given(rows)
def test_no_cell_starts_a_formula(values: list[tuple[str | None, ...]]) -> None:
    parsed = read_back(safe_csv(frame(values), HEADER))  # type: ignore[arg-type]
    assert parsed == [HEADER, *[[guarded(v) for v in row] for row in values]]
    for row in parsed[1:]:
        assert not any(value.startswith(TRIGGERS) for value in row), row


def test_guard_examples() -> None:
    values = [('=HYPERLINK("http://x")', "+1", "-2"), ("@SUM(A1)", "\tx", "O'Brien, Jr.")]
    parsed = read_back(safe_csv(frame(values), HEADER))  # type: ignore[arg-type]
    assert parsed[1:] == [
        ['\'=HYPERLINK("http://x")', "'+1", "'-2"],
        ["'@SUM(A1)", "'\tx", "O'Brien, Jr."],
    ]
