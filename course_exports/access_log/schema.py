"""The access log's columns (CONTRACT 2), the checks of a file's footer, the row order."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from course_exports.access_log.fetched import fetch_footer
from course_exports.errors import LakeDataError
from course_exports.storage import Location

if TYPE_CHECKING:  # partitions imports the window, which imports this module
    from course_exports.access_log.partitions import DayPartition

ACCESS_TYPE_LABELS: dict[str, str] = {
    "login": "Log In",
    "logout": "Log Out",
    "project_open": "Project Open",
    "project_close": "Project Close",
}

#: Oldest first; equal times are ordered by the remaining columns, nulls first. Together
#: they are every column of an event row (course_id is fixed), so the order is total.
SORT_KEYS: tuple[str, ...] = (
    "event_time",
    "user_id",
    "access_type",
    "assignment_id",
    "project_path",
    "ip",
)

#: Footer types the engine accepts. Timestamps may use any Parquet unit (ms/us/ns, the
#: engine normalises to us) but must be UTC: a naive or non-UTC column would shift every
#: row, so it is refused rather than guessed at.
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "+00:00"})
_INT_COLUMNS = ("user_id", "course_id", "assignment_id")
_STRING_COLUMNS = ("access_type", "project_path", "ip")
REQUIRED_COLUMNS: tuple[str, ...] = ("event_time", *_INT_COLUMNS, *_STRING_COLUMNS)
#: The log's columns as the LMS writes them (CONTRACT 2); readers also accept other
#: timestamp units and string encodings (see ``_type_problem``).
ACCESS_LOG_SCHEMA = pa.schema(
    [
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.int64()),
        ("course_id", pa.int64()),
        ("assignment_id", pa.int64()),
        ("access_type", pa.string()),
        ("project_path", pa.string()),
        ("ip", pa.string()),
    ]
)

EVENT_TIME = pl.Datetime("us", "UTC")
# Footer reads are round trips on S3, not CPU: a wide pool hides their latency.
_FOOTER_THREADS = 16

# ---------------------------------------------------------------------------- footers


def _type_problem(name: str, actual: pa.DataType) -> str | None:
    """Why a column's arrow type is refused, or None when the engine can read it."""
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    if name == "event_time":
        if pa.types.is_timestamp(actual) and actual.unit != "s" and actual.tz in _UTC_NAMES:
            return None
        expected = "timestamp[us, tz=UTC]"
    elif name in _INT_COLUMNS:
        if actual == pa.int64():
            return None
        expected = "int64"
    else:
        if actual in (pa.string(), pa.large_string(), pa.string_view()):
            return None
        expected = "string"
    return f"column {name!r} is {actual}, expected {expected}"


def check_footer(lake: Location, path: str) -> None:
    url = lake.url_of(path)
    try:
        # The footer only: one suffix-range read of the file's end (two for a long
        # footer), no HEAD and no read-ahead.
        schema = pq.read_schema(fetch_footer(lake, lake.relative(path)))
    except FileNotFoundError:
        raise LakeDataError(url, "file disappeared while reading (is a purge running?)") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise LakeDataError(url, f"not a readable parquet file: {exc}") from None
    for name in REQUIRED_COLUMNS:
        index = schema.get_field_index(name)
        if index < 0:
            raise LakeDataError(url, f"missing column {name!r}")
        problem = _type_problem(name, schema.field(index).type)
        if problem:
            raise LakeDataError(url, problem)


def check_log_files(lake: Location, partitions: list[DayPartition]) -> int:
    """Check every file's footer (readable, columns and types); the number of files.

    Only footers are read, concurrently, so a broken file stops the run before any row
    is written. The first broken file in day/file order is the one reported.
    """
    paths = [path for partition in partitions for path in partition.files]
    if not paths:
        return 0
    with ThreadPoolExecutor(min(_FOOTER_THREADS, len(paths))) as pool:
        futures = [pool.submit(check_footer, lake, path) for path in paths]
        for future in futures:
            future.result()
    return len(paths)


SCAN_SCHEMA = pl.Schema(
    {
        "event_time": EVENT_TIME,
        "user_id": pl.Int64(),
        "course_id": pl.Int64(),
        "assignment_id": pl.Int64(),
        "access_type": pl.String(),
        "project_path": pl.String(),
        "ip": pl.String(),
    }
)
# Lets one scan read files whose footers differ in ways _type_problem accepts (ms/ns
# units, "Etc/UTC", dictionary strings) as the single schema above.
SCAN_CASTS = pl.ScanCastOptions(
    datetime_cast=["nanosecond-downcast", "millisecond-upcast", "convert-timezone"],
    categorical_to_string="allow",
    _internal_call=True,  # the options are marked unstable; the tests pin the behaviour
)
