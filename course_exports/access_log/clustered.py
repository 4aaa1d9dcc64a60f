"""Our course-clustered copy of the access log, as exports read it.

The lake is the LMS's and read-only, and its day files hold every course in no useful
order, so without help an export of a course of 3,000 events reads all 30 million. We
keep a copy in our own storage, under the exports root in the reserved folder
:data:`COPY_DIR` (never an export's: export folders are ``<course id>/`` and
``projects/``)::

    _access_log_copy/event_date=YYYY-MM-DD/<build id>.parquet
        the day's rows sorted by course_id, then SORT_KEYS, in row groups of
        ROW_GROUP_ROWS rows, zstd, with a CRC on every page
    _access_log_copy/event_date=YYYY-MM-DD/index.json
        written after the file: the source files it was made from (name, size, content
        tag), the file's name and size, and each row group's first and last course

An export reads a day from the copy only when it is *current* (its index names exactly
the files the LMS has now, same sizes and content tags) and *intact*, and then only the
row groups that can hold its course; every other day comes from the source. So the CSV
never depends on whether or when the indexer ran, and is byte-identical either way.

Nothing read from the copy is trusted: the file's size must match the index, its footer
must match the index row group by row group, every page read must pass its CRC, and the
rows must be the course's, of the day, with known access types. Anything else raises
:class:`DamagedCopyError`; the reader then reads that day from the source, and the index
is dropped so the next indexer run rebuilds the day (``indexer``).
"""

from __future__ import annotations

import bisect
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ValidationError

from course_exports.access_log.partitions import DayPartition
from course_exports.access_log.schema import ACCESS_LOG_SCHEMA, ACCESS_TYPE_LABELS, SCAN_SCHEMA
from course_exports.storage import Location

log = logging.getLogger(__name__)

#: The copy's folder under the exports root.
COPY_DIR = "_access_log_copy"
INDEX = "index.json"
#: Bumped when the file layout changes: older copies are then rebuilt, never misread.
FORMAT = 1
#: Rows per row group. A course's rows of a day sit in consecutive row groups, so an
#: export reads at most this many rows of other courses at each end of its run; small
#: enough that a small course reads a few KB a day, large enough that footers stay small
#: (``make bench-access`` measured 2,048-16,384; see the README).
ROW_GROUP_ROWS = 4_096
# Days read at once: pyarrow reads, decompresses and checks CRCs without the GIL, and on
# S3 each day is a few ranged GETs.
_READ_THREADS = 4


class DamagedCopyError(Exception):
    """A day of the copy disagrees with its index or fails a check: not to be used."""


class DayIndex(BaseModel):
    """``index.json`` of one copied day."""

    format: int
    day: date
    #: ``(name, size, content tag)`` of every source file, as the listing gave them.
    source: list[tuple[str, int, str]]
    #: The copy's parquet file in the day's folder, and its size in bytes.
    file: str
    size: int
    rows: int
    #: ``(first course_id, last course_id, rows)`` of each row group, in file order.
    row_groups: list[tuple[int, int, int]]
    built_at: datetime
    #: Seconds the build took (reported by the indexer and the benchmark).
    build_seconds: float = 0.0

    def is_current(self, partition: DayPartition) -> bool:
        """Built by this code from exactly the files the LMS has for the day now."""
        stamps = tuple(tuple(s) for s in self.source)
        return (
            self.format == FORMAT
            and self.day == partition.day
            and bool(partition.stamps)
            and all(tag for _, _, tag in partition.stamps)  # unknown tags: cannot tell
            and stamps == partition.stamps
        )

    def row_groups_of(self, course_id: int) -> tuple[int, ...]:
        """The row groups that can hold the course's rows (consecutive, maybe none)."""
        lasts = [last for _, last, _ in self.row_groups]
        first = bisect.bisect_left(lasts, course_id)
        found = []
        for index in range(first, len(self.row_groups)):
            low, high, _ = self.row_groups[index]
            if low > course_id:
                break
            if high >= course_id:
                found.append(index)
        return tuple(found)


def day_folder(day: date) -> str:
    return f"event_date={day.isoformat()}"


def parse_index(data: bytes) -> DayIndex | None:
    """The index, or None when it is unreadable (a damaged day, to be rebuilt)."""
    try:
        return DayIndex.model_validate_json(data)
    except (ValidationError, ValueError):
        return None


def index_bytes(index: DayIndex) -> bytes:
    return json.dumps(index.model_dump(mode="json"), separators=(",", ":")).encode()


@dataclass(frozen=True)
class CopiedDay:
    """A day an export reads from the copy: which file, and the course's row groups."""

    partition: DayPartition
    index: DayIndex
    row_groups: tuple[int, ...]

    @property
    def rows(self) -> int:
        """Rows in the course's row groups: an upper bound of the course's rows."""
        return sum(self.index.row_groups[i][2] for i in self.row_groups)


@dataclass(frozen=True)
class CourseCopy:
    """The copy as one export sees it: where it is, and its current days."""

    store: Location
    days: dict[date, CopiedDay]

    def read(
        self, days: Sequence[CopiedDay], course_id: int
    ) -> tuple[pl.DataFrame, list[tuple[CopiedDay, DamagedCopyError]]]:
        return read_copied_rows(self.store, days, course_id)

    def discard(self, copied: CopiedDay) -> None:
        discard_index(self.store, copied.index)


def find_current_days(
    store: Location, partitions: Sequence[DayPartition], course_id: int
) -> CourseCopy:
    """The days of ``partitions`` the copy holds, current and of the right size.

    One listing of the copy and one small read per day's index. A day whose index is
    missing, unreadable, stale or whose file is missing or of another size is left out
    (read from the source); so is a day without rows of the course... except that it
    is kept with no row groups, so the export skips it without reading anything.
    """
    wanted = {p.day: p for p in partitions}
    sizes: dict[str, int] = {}
    indexes: dict[date, str] = {}
    store.refresh()
    for entry in store.list(COPY_DIR):
        sizes[entry.path] = entry.size
        folder, _, name = entry.path.removeprefix(f"{COPY_DIR}/").partition("/")
        day = _folder_day(folder)
        if name == INDEX and day in wanted:
            indexes[day] = entry.path
    days: dict[date, CopiedDay] = {}
    order = sorted(indexes)
    blobs: list[bytes] = store.read_many([indexes[d] for d in order])
    for day, data in zip(order, blobs, strict=True):
        index = parse_index(data)
        partition = wanted[day]
        if index is None or not index.is_current(partition):
            continue
        if sizes.get(f"{COPY_DIR}/{day_folder(day)}/{index.file}") != index.size:
            continue
        days[day] = CopiedDay(partition, index, index.row_groups_of(course_id))
    return CourseCopy(store, days)


def _folder_day(folder: str) -> date | None:
    if not folder.startswith("event_date="):
        return None
    try:
        return date.fromisoformat(folder.removeprefix("event_date="))
    except ValueError:
        return None


def read_copied_rows(
    store: Location, days: Sequence[CopiedDay], course_id: int
) -> tuple[pl.DataFrame, list[tuple[CopiedDay, DamagedCopyError]]]:
    """The course's rows of ``days`` (all columns), and the days found damaged.

    Days are read concurrently (pyarrow decodes and checks CRCs without the GIL) and
    turned into one frame. A damaged day contributes no rows: the caller reads it from
    the source instead.
    """
    wanted = [day for day in days if day.row_groups]
    tables: list[pa.Table] = []
    damaged: list[tuple[CopiedDay, DamagedCopyError]] = []
    if wanted:
        with ThreadPoolExecutor(min(_READ_THREADS, len(wanted))) as pool:
            results = list(pool.map(lambda day: _read_day(store, day), wanted))
        for day, result in zip(wanted, results, strict=True):
            if isinstance(result, DamagedCopyError):
                damaged.append((day, result))
            else:
                tables.append(result)
    if not tables:
        return SCAN_SCHEMA.to_frame(), damaged
    frame = pl.from_arrow(pa.concat_tables(tables))
    assert isinstance(frame, pl.DataFrame)
    return frame.filter(pl.col("course_id") == course_id), damaged


def _read_day(store: Location, day: CopiedDay) -> pa.Table | DamagedCopyError:
    """The day's row groups of the course, checked against the index and their CRCs."""
    index = day.index
    path = (COPY_DIR, day_folder(index.day), index.file)
    where = store.url_for(*path)
    try:
        with store.open_seekable(*path) as handle:
            parquet = pq.ParquetFile(handle, page_checksum_verification=True)
            _check_footer(parquet.metadata, index)
            table = parquet.read_row_groups(list(day.row_groups), use_threads=False)
        _check_rows(table, day)
    except DamagedCopyError as exc:
        return DamagedCopyError(f"{where}: {exc}")
    except Exception as exc:  # unreadable, truncated, a page failing its CRC, gone
        return DamagedCopyError(f"{where}: {type(exc).__name__}: {exc}")
    return table


def _check_footer(metadata: pq.FileMetaData, index: DayIndex) -> None:
    counts = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
    if counts != [rows for _, _, rows in index.row_groups]:
        raise DamagedCopyError("its row groups do not match the index")


def _check_rows(table: pa.Table, day: CopiedDay) -> None:
    """The rows are what the index promised: its columns, courses, day and kinds.

    Every page passed its CRC already; this catches a file that is intact but is not
    what the index describes.
    """
    if table.schema != ACCESS_LOG_SCHEMA:
        raise DamagedCopyError(f"columns {table.schema.names} are not the log's")
    groups = [day.index.row_groups[i] for i in day.row_groups]
    if table.num_rows != sum(rows for _, _, rows in groups):
        raise DamagedCopyError(f"{table.num_rows} rows, the index says otherwise")
    courses = pc.min_max(table["course_id"]).as_py()
    times = pc.min_max(table["event_time"]).as_py()
    kinds = set(pc.unique(table["access_type"]).to_pylist())
    if courses["min"] != groups[0][0] or courses["max"] != groups[-1][1]:
        raise DamagedCopyError(f"courses {courses} are not the index's")
    if table["course_id"].null_count or table["event_time"].null_count:
        raise DamagedCopyError("a row has no course or no time")
    if times["min"] < day.partition.start or times["max"] >= day.partition.end:
        raise DamagedCopyError(f"times {times} are not on {day.index.day}")
    if not kinds <= set(ACCESS_TYPE_LABELS):
        raise DamagedCopyError(f"unknown access types {sorted(map(str, kinds))}")


def discard_index(store: Location, index: DayIndex) -> None:
    """Drop a damaged day's index (if it is still the one read): the day is rebuilt."""
    path = (COPY_DIR, day_folder(index.day), INDEX)
    try:
        current = parse_index(store.read_bytes(*path))
    except FileNotFoundError:
        return
    if current == index:
        store.delete(*path)
        log.warning("dropped the index of the damaged copy of %s", index.day)
