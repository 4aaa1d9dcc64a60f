"""CSV as teachers open it: RFC 4180, CRLF, and no cell a spreadsheet would run.

Every CSV this system writes (access data, rosters, LTI settings) goes through here.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence

import polars as pl

#: A cell starting with one of these is a formula to Excel, LibreOffice and Sheets.
FORMULA_START = r"^[=+\-@\t\r]"


def spreadsheet_cell(expr: pl.Expr) -> pl.Expr:
    """A text cell: empty for null or "", and a ``'`` before a formula-starting value."""
    return (
        pl.when(expr.str.len_bytes() == 0)
        .then(pl.lit(None, dtype=pl.String))
        .when(expr.str.contains(FORMULA_START))
        .then(pl.concat_str(pl.lit("'"), expr))
        .otherwise(expr)
    )


def header_line(columns: Sequence[str]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerow(columns)
    return buffer.getvalue().encode()


def csv_bytes(frame: pl.DataFrame, header: Sequence[str] | None = None) -> bytes:
    """The frame's rows as CSV (string columns made spreadsheet-safe by the caller or here).

    Polars' "necessary" style quotes fields holding the separator, a quote, LF or CR,
    doubling inner quotes: RFC 4180, checked against the csv module in the tests.
    """
    buffer = io.BytesIO()
    if header is not None:
        buffer.write(header_line(header))
    frame.write_csv(
        buffer,
        include_header=False,
        line_terminator="\r\n",
        quote_style="necessary",
        null_value="",
    )
    return buffer.getvalue()


def safe_csv(frame: pl.DataFrame, header: Sequence[str]) -> bytes:
    """Every string column guarded, then rendered with ``header``."""
    guarded = frame.with_columns(
        spreadsheet_cell(pl.col(name)).alias(name)
        for name, dtype in frame.schema.items()
        if dtype == pl.String
    )
    return csv_bytes(guarded, header)
