"""Keeping the course-clustered copy current: which days to (re)build, and building one.

Survey -> decide -> apply, as the purges: one listing of the log and of the copy, a plan
a person can read, then one day at a time. A day is (re)built when it is closed (its
UTC day is over), inside the retention, and its copy is missing, stale (the LMS added,
removed or rewrote a file of the day: names, sizes and content tags differ), of an
older format, or damaged (unreadable index, file missing or of another size, footer not
matching the index). Copies of days the log no longer has are removed.

A day with a broken row (unknown access type, no time, a time outside its day) is not
copied: exports keep reading it from the source, whose error names the file.
"""

from __future__ import annotations

import io
import time
import uuid
import zlib
from datetime import UTC, date, datetime

import polars as pl
from pydantic import BaseModel

from course_exports.access_log.clustered import (
    CHUNK_ROWS,
    COPY_DIR,
    FORMAT,
    INDEX,
    Chunk,
    DamagedCopyError,
    DayIndex,
    checked_chunks,
    day_folder,
    index_format,
    month_folder,
    month_of,
    parse_index,
    publish_index,
    survey_copy,
)
from course_exports.access_log.partitions import DayPartition, list_day_partitions
from course_exports.access_log.reader import scan_sources
from course_exports.access_log.schema import (
    ACCESS_TYPE_LABELS,
    SCAN_CASTS,
    SCAN_SCHEMA,
    SORT_KEYS,
    check_log_files,
)
from course_exports.access_log.window import AccessWindow, as_utc, retention_cutoff
from course_exports.storage import Location

#: The copy's sort order: a course's rows together, each course's in export order.
COPY_ORDER: tuple[str, ...] = ("course_id", *SORT_KEYS)


class CopyDay(BaseModel):
    """A day to (re)build, why, and the source files as the plan's listing saw them.

    The index records those stamps: if the LMS rewrites the day while it is being
    copied, the copy says it was built from the older files and is never used.
    """

    day: date
    reason: str
    partition: DayPartition


class CopyPlan(BaseModel):
    now: datetime
    #: Oldest first, at most ``max_days``.
    build: list[CopyDay]
    #: Days past ``max_days`` left for the next runs.
    remaining: int
    #: Copied days the log no longer has (purged, or before the retention).
    remove: list[date]
    #: Days already current.
    current: int


class CopyResult(BaseModel):
    """What building one day did."""

    day: date
    #: False when the day has a broken row: it stays on the source.
    copied: bool
    rows: int = 0
    source_bytes: int = 0
    copy_bytes: int = 0
    seconds: float = 0.0
    problem: str | None = None


def plan_copy(
    lake: Location,
    store: Location,
    now: datetime,
    retention_months: int,
    *,
    max_days: int,
    verify: bool = False,
) -> CopyPlan:
    """Which closed days inside the retention need a (new) copy, and which copies go.

    ``verify`` also reads every current copy in full, checking each page's CRC (the
    cheap checks read only footers).
    """
    if max_days < 1:
        raise ValueError(f"max_days must be at least 1, got {max_days}")
    now = as_utc(now)
    window = AccessWindow(retention_cutoff(now, retention_months), now)
    in_log = list_day_partitions(lake, window)
    # A storage that gives no content tag cannot tell a rewritten day: never copied.
    closed = [p for p in in_log if p.end <= now and all(tag for _, _, tag in p.stamps)]
    copies = survey_copy(store).days
    build: list[CopyDay] = []
    current = 0
    for partition in closed:
        reason = _why_rebuild(store, partition, copies.get(partition.day), verify)
        if reason is None:
            current += 1
            continue
        build.append(CopyDay(day=partition.day, reason=reason, partition=partition))
    kept = {p.day for p in in_log}
    remove = sorted(d for d in copies if d not in kept)
    return CopyPlan(
        now=now,
        build=build[:max_days],
        remaining=max(0, len(build) - max_days),
        remove=remove,
        current=current,
    )


def _why_rebuild(
    store: Location, partition: DayPartition, files: dict[str, int] | None, verify: bool
) -> str | None:
    if not files or INDEX not in files:
        return "not copied yet"
    try:
        data = store.read_bytes(COPY_DIR, day_folder(partition.day), INDEX)
    except FileNotFoundError:
        return "not copied yet"
    index = parse_index(data)
    if index is None:
        # An older release's index has other fields: say so, not "damaged".
        older = index_format(data)
        if older is not None and older != FORMAT:
            return f"copied in format {older}, now {FORMAT}"
        return "damaged: unreadable index"
    if index.format != FORMAT:
        return f"copied in format {index.format}, now {FORMAT}"
    if not index.is_current(partition):
        return "the LMS changed the day's files"
    if files.get(index.file) != index.size:
        return "damaged: the copy's file is missing or of another size"
    try:
        check_copy(store, index, full=verify)
    except DamagedCopyError as exc:
        return f"damaged: {exc}"
    return None


def check_copy(store: Location, index: DayIndex, *, full: bool) -> None:
    """The copy's last chunk matches its checksum; ``full`` checks every chunk.

    The cheap check is one suffix-range read, which also gives the file's size: a file
    cut short or replaced fails it. Damage inside other chunks is found by ``full``, or
    by the first export that reads them (it checks every chunk it decodes).
    """
    path = f"{COPY_DIR}/{day_folder(index.day)}/{index.file}"
    if not index.chunks:
        return  # a day without rows: an empty file, whose size the listing checked
    numbers = range(len(index.chunks)) if full else [len(index.chunks) - 1]
    first = index.chunks[numbers[0]].offset
    try:
        tail, size = store.read_tail(path, index.size - first)
    except Exception as exc:
        raise DamagedCopyError(f"{type(exc).__name__}: {exc}") from exc
    if size != index.size:
        raise DamagedCopyError(f"the file is {size} bytes, the index says {index.size}")
    checked_chunks(index, numbers, tail, first)


def build_day(lake: Location, store: Location, partition: DayPartition) -> CopyResult:
    """Copy one day: read every file, sort by course and time, write, then the index.

    The new file gets a new name and the index is written after it, so a reader sees the
    old pair or the new one; old files of the day are removed last (an export still
    reading one then falls back to the source for that day).
    """
    started = time.perf_counter()
    check_log_files(lake, [partition])
    frame = pl.scan_parquet(
        scan_sources(lake, list(partition.files)),
        schema=SCAN_SCHEMA,
        cast_options=SCAN_CASTS,
        extra_columns="ignore",
        hive_partitioning=False,
    ).collect()
    problem = _broken_rows(frame, partition)
    if problem is not None:
        return CopyResult(day=partition.day, copied=False, problem=problem)
    frame = frame.sort(list(COPY_ORDER), nulls_last=False)
    data, chunks = chunked_parquet(frame)
    name = f"{uuid.uuid4().hex}.parquets"
    folder = day_folder(partition.day)
    store.write_bytes_atomic(data, COPY_DIR, folder, name)
    index = DayIndex(
        format=FORMAT,
        day=partition.day,
        source=tuple((n, s, tag or "") for n, s, tag in partition.stamps),
        file=name,
        size=len(data),
        rows=frame.height,
        chunks=chunks,
        built_at=datetime.now(UTC),
        build_seconds=time.perf_counter() - started,
    )
    publish_index(store, index)
    return CopyResult(
        day=partition.day,
        copied=True,
        rows=frame.height,
        source_bytes=partition.size_bytes,
        copy_bytes=len(data),
        seconds=time.perf_counter() - started,
    )


def _broken_rows(frame: pl.DataFrame, partition: DayPartition) -> str | None:
    unknown = ~pl.col("access_type").is_in(list(ACCESS_TYPE_LABELS)).fill_null(False)
    time_ = pl.col("event_time")
    outside = (time_ < partition.start) | (time_ >= partition.end)
    counts = frame.select(
        unknown.sum().alias("unknown access type"),
        time_.is_null().sum().alias("no event_time"),
        outside.sum().alias("event_time outside the day"),
        pl.col("course_id").is_null().sum().alias("no course_id"),
    ).row(0, named=True)
    found = [f"{n} rows with {what}" for what, n in counts.items() if n]
    return "; ".join(found) or None


def chunk_bounds(courses: pl.Series) -> list[tuple[int, int, int]]:
    """``(first row, rows, courses)`` of each chunk of a day sorted by course: whole
    courses until the chunk has :data:`CHUNK_ROWS` rows, and every course with that
    many rows or more alone (so a small course never decodes a big one's rows)."""
    runs = courses.rle()  # consecutive runs of one course_id: its rows of the day
    bounds: list[tuple[int, int, int]] = []
    start = rows = members = 0
    for length in runs.struct.field("len").to_list():
        if length >= CHUNK_ROWS and rows:
            bounds.append((start, rows, members))
            start, rows, members = start + rows, 0, 0
        rows, members = rows + length, members + 1
        if rows >= CHUNK_ROWS:
            bounds.append((start, rows, members))
            start, rows, members = start + rows, 0, 0
    if rows:
        bounds.append((start, rows, members))
    return bounds


def chunked_parquet(frame: pl.DataFrame) -> tuple[bytes, list[Chunk]]:
    """The sorted day as chunks back to back, and each chunk's index entry.

    Each chunk is a whole parquet file (one row group with statistics, zstd) written by
    Polars' writer: of DuckDB (``COPY … ORDER BY … ROW_GROUP_SIZE``), Polars and pyarrow
    it was the cheapest (0.16 s of CPU a day against 0.35 and 0.18 here) and wrote the
    smallest files (1.50 MB a day against 1.56 and 1.93). A chunk's own footer (~1 KB)
    costs no more than format 1's row groups did: 303 MB against 307 MB for the 30M lake.
    """
    buffer = io.BytesIO()
    entries = []
    for first_row, rows, courses in chunk_bounds(frame["course_id"]):
        chunk = frame.slice(first_row, rows)
        offset = buffer.tell()
        chunk.write_parquet(buffer, compression="zstd", row_group_size=rows, statistics=True)
        data = buffer.getbuffer()[offset:]
        first, last = int(chunk["course_id"][0]), int(chunk["course_id"][-1])
        entries.append(Chunk(first, last, rows, courses, offset, len(data), zlib.crc32(data)))
        data.release()
    return buffer.getvalue(), entries


def remove_day(store: Location, day: date) -> None:
    """Delete one day of the copy (the purge drops it with the source's day), and its
    month's merge first: a merged month never outlives one of its days (its rows would
    stay past the retention); the indexer merges the month's other days again."""
    store.delete_tree(COPY_DIR, month_folder(month_of(day)))
    store.delete_tree(COPY_DIR, day_folder(day))


def copy_sizes(store: Location) -> dict[date, int]:
    """Bytes of the copy's files per copied day (for summaries and the purge)."""
    return {d: sum(f.values()) for d, f in survey_copy(store).days.items()}
