"""Reading a course's events from the log, a batch of days at a time."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

import polars as pl

from course_exports.access_log.course_copy import CopiedDay, CourseCopy
from course_exports.access_log.partitions import ACCESS_LOG_DIR, DayPartition
from course_exports.access_log.schema import (
    ACCESS_TYPE_LABELS,
    EVENT_TIME,
    SCAN_CASTS,
    SCAN_SCHEMA,
    check_footer,
)
from course_exports.access_log.window import AccessWindow
from course_exports.errors import LakeDataError
from course_exports.storage import Location

log = logging.getLogger(__name__)

# Batches read ahead of the one being rendered; each holds one batch of course rows
# (and, on remote storage, the raw bytes of its files), so this bounds memory.
_PREFETCH_BATCHES = 2
# Course rows a batch aims at: big enough that per-batch overhead vanishes for small
# courses, small enough that a batch's frames stay in the tens of MB.
_BATCH_ROWS = 200_000
_BATCH_MAX_BYTES = 32 * 1024 * 1024
# Before any batch is read: as if every row were the course's, at about 12 bytes a row
# of compressed Parquet (the sample log takes ~15).
_ROWS_PER_BYTE_GUESS = 1 / 12

# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Query:
    """What to keep from the log: the course, the window and the optional filters."""

    course_id: int
    window: AccessWindow
    assignment_ids: tuple[int, ...] | None
    user_ids: tuple[int, ...] | None

    def keep(self, start: datetime, end: datetime) -> pl.Expr:
        """Rows to read in ``[start, end)``: the selected ones, and every broken row.

        Broken rows (unknown access type, no time) are read even when the filters would
        drop them, so that damage is reported rather than filtered away.
        """
        time = pl.col("event_time")
        inside = (time >= pl.lit(start, dtype=EVENT_TIME)) & (time < pl.lit(end, dtype=EVENT_TIME))
        selected = inside
        if self.assignment_ids is not None:
            selected &= pl.col("assignment_id").is_in(self.assignment_ids)
        if self.user_ids is not None:
            selected &= pl.col("user_id").is_in(self.user_ids)
        known = pl.col("access_type").is_in(list(ACCESS_TYPE_LABELS)).fill_null(False)
        return selected | (~known & inside) | time.is_null()


_COLUMNS = ("event_time", "user_id", "assignment_id", "access_type", "project_path", "ip")


@dataclass
class Batch:
    """Consecutive days read, sorted and written together."""

    partitions: list[DayPartition]  # every day of the batch, oldest first
    start: datetime  # rows read: start <= event_time < end (already within the window)
    end: datetime
    planned_bytes: int  # the share of the source files' bytes this batch stands for
    #: Days of ``partitions`` read from the course-clustered copy; the rest (and any
    #: copied day found damaged) are read from the source files.
    copied: dict[date, CopiedDay] = field(default_factory=dict)
    events: pl.DataFrame | None = None
    #: Rows that came from the source files (what the planner learns densities from).
    source_rows: int = 0
    error: Exception | None = None

    @property
    def files(self) -> list[str]:
        """The source files this batch reads."""
        return [
            path
            for partition in self.partitions
            if partition.day not in self.copied
            for path in partition.files
        ]


def _scan(sources: list[str] | list[bytes], query: Query, batch: Batch) -> pl.LazyFrame:
    # One scan over all files of a batch: Polars pipelines the files itself, and the
    # course predicate is evaluated on course_id before other columns are decoded.
    return (
        pl.scan_parquet(
            sources,
            schema=SCAN_SCHEMA,
            cast_options=SCAN_CASTS,
            extra_columns="ignore",
            hive_partitioning=False,
        )
        .filter(pl.col("course_id") == query.course_id)
        .select(_COLUMNS)
        .filter(query.keep(batch.start, batch.end))
    )


def scan_sources(lake: Location, files: list[str]) -> list[str] | list[bytes]:
    """What a Polars scan of ``files`` reads: local paths, or remote objects' bytes."""
    return _Sources(lake).get(files)


class _Sources:
    """What Polars scans: local paths, or the bytes of remote objects.

    Remote objects are fetched whole and concurrently (the storage's ``scan_sources``):
    every file holds all courses and the course's rows can be in any row group. The
    last fetch is kept (an error report reads the batch's files again).
    """

    def __init__(self, lake: Location) -> None:
        self._lake = lake
        self._last: tuple[tuple[str, ...], list[str] | list[bytes]] | None = None

    def get(self, files: list[str]) -> list[str] | list[bytes]:
        key = tuple(files)
        if self._last is None or self._last[0] != key:
            self._last = None  # let the old bytes go before fetching the new ones
            self._last = (key, self._lake.scan_sources([self._lake.relative(f) for f in files]))
        return self._last[1]


def _read_batch(sources: _Sources, batch: Batch, query: Query, copy: CourseCopy | None) -> Batch:
    try:
        frames = [_read_copied(copy, batch, query)] if copy is not None and batch.copied else []
        if batch.files:
            source = _scan(sources.get(batch.files), query, batch).collect()
            batch.source_rows = source.height
            frames.append(source)
        batch.events = pl.concat(frames) if frames else SCAN_SCHEMA.to_frame().select(_COLUMNS)
    except Exception as exc:  # reported with the file's name by explain_failure
        batch.error = exc
    return batch


def _read_copied(copy: CourseCopy, batch: Batch, query: Query) -> pl.DataFrame:
    """The batch's rows from its copied days; a damaged day moves to the source files."""
    rows, damaged = copy.read(list(batch.copied.values()), query.course_id)
    for day, problem in damaged:
        log.warning("not using the copy of %s: %s", day.partition.day, problem)
        copy.discard(day)
        del batch.copied[day.partition.day]
    return rows.select(_COLUMNS).filter(query.keep(batch.start, batch.end))


class Planner:
    """Cuts the days into batches of about :data:`_BATCH_ROWS` rows of the course.

    A day read from the copy says how many rows its course has (exact when the course has
    a chunk of its own; its share of a shared chunk otherwise, off by less than one
    chunk a day). For the source, how many of the course's rows a byte of log holds is known
    only after reading some: until then the guess is that every row is the course's
    (:data:`_ROWS_PER_BYTE_GUESS`), afterwards the larger of the overall and the latest
    ratio, so a course that gets busier is caught at the next batch. Quiet days are
    grouped (up to :data:`_BATCH_MAX_BYTES` of source files, which remote reads hold in
    memory). A busy day is a batch of its own and is read once: it used to be read in
    time slices, but a time slice cannot skip any of a file that is one unsorted row
    group (the usual LMS layout), so every slice decoded the whole day again. Memory is
    bounded by one day of the course's rows.
    """

    def __init__(self, window: AccessWindow, copied: dict[date, CopiedDay] | None = None) -> None:
        self._window = window
        self._copied = copied or {}
        self._rows = 0
        self._bytes = 0
        self._latest: float | None = None

    def observe(self, batch: Batch) -> None:
        if batch.events is None or not batch.planned_bytes:
            return
        self._rows += batch.source_rows
        self._bytes += batch.planned_bytes
        self._latest = batch.source_rows / batch.planned_bytes

    def _rows_per_byte(self) -> float:
        if self._latest is None:
            return _ROWS_PER_BYTE_GUESS
        return max(self._latest, self._rows / self._bytes)

    def _source_bytes(self, day: DayPartition) -> int:
        return 0 if day.day in self._copied else day.size_bytes

    def _expected_rows(self, day: DayPartition, ratio: float) -> float | None:
        """The course's expected rows on ``day``; None when nothing tells."""
        if day.day in self._copied:
            return self._copied[day.day].rows
        return day.size_bytes * ratio if day.size_bytes else None

    def batches(self, days: list[DayPartition]) -> Iterator[Batch]:
        index = 0
        while index < len(days):
            ratio = self._rows_per_byte()
            day = days[index]
            index += 1
            rows = self._expected_rows(day, ratio)
            group, size = [day], self._source_bytes(day)
            # A day of unknown size (a hand-made partition list) stays a batch of its own.
            while rows is not None and index < len(days):
                more = self._expected_rows(days[index], ratio)
                if more is None:
                    break
                grown = size + self._source_bytes(days[index])
                if grown > _BATCH_MAX_BYTES or rows + more > _BATCH_ROWS:
                    break
                group.append(days[index])
                rows, size = rows + more, grown
                index += 1
            yield self._batch(group, self._window.start, self._window.end, size)

    def _batch(self, days: list[DayPartition], start: datetime, end: datetime, size: int) -> Batch:
        copied = {d.day: self._copied[d.day] for d in days if d.day in self._copied}
        return Batch(days, start, end, size, copied)


class Prefetcher:
    """Reads batches in a background thread, at most :data:`_PREFETCH_BATCHES` ahead.

    Polars and s3fs release the GIL while they read, so the next batch's I/O and
    decoding overlap the rendering of the current one.
    """

    def __init__(
        self,
        lake: Location,
        days: list[DayPartition],
        query: Query,
        copy: CourseCopy | None = None,
    ) -> None:
        self._query = query
        self._copy = copy
        self._sources = _Sources(lake)
        self._planner = Planner(query.window, copy.days if copy is not None else None)
        self._plan = self._planner.batches(days)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="access-log-read")
        self._pending: deque[Future[Batch]] = deque()

    def _submit(self) -> None:
        while len(self._pending) <= _PREFETCH_BATCHES:
            batch = next(self._plan, None)
            if batch is None:
                return
            self._pending.append(
                self._pool.submit(_read_batch, self._sources, batch, self._query, self._copy)
            )

    def __iter__(self) -> Iterator[Batch]:
        self._submit()
        while self._pending:
            batch = self._pending.popleft().result()
            self._planner.observe(batch)
            self._submit()
            yield batch

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)


def _read_file(lake: Location, path: str, query: Query, batch: Batch) -> pl.LazyFrame:
    return _scan(_Sources(lake).get([path]), query, batch)


def explain_failure(lake: Location, batch: Batch, query: Query) -> LakeDataError:
    """A read of several files failed: find the file and say what is wrong with it."""
    for path in batch.files:
        check_footer(lake, path)
        try:
            _read_file(lake, path, query, batch).collect()
        except FileNotFoundError:
            return LakeDataError(lake.url_of(path), "file disappeared while reading")
        except Exception as exc:
            return LakeDataError(lake.url_of(path), f"not a readable parquet file: {exc}")
    path = batch.files[0] if batch.files else lake.path(ACCESS_LOG_DIR)
    return LakeDataError(lake.url_of(path), f"could not be read: {batch.error}")


def _first_file_with(
    lake: Location, batch: Batch, query: Query, condition: pl.Expr
) -> tuple[str, dict[str, Any]]:
    """The first file of the batch holding a row that matches, and that row."""
    for path in batch.files:
        rows = _read_file(lake, path, query, batch).filter(condition).head(1).collect()
        if rows.height:
            return lake.url_of(path), rows.row(0, named=True)
    raise AssertionError("a row of the batch is in none of its files")


def check_rows(lake: Location, batch: Batch, query: Query, events: pl.DataFrame) -> None:
    """Refuse broken rows of the course; they are never skipped (CONTRACT 2)."""
    unknown = ~pl.col("access_type").is_in(list(ACCESS_TYPE_LABELS)).fill_null(False)
    if events.select(unknown.any()).item():
        url, row = _first_file_with(lake, batch, query, unknown)
        raise LakeDataError(url, f"unknown access_type {row['access_type']!r}")
    if events["event_time"].null_count():
        url, _ = _first_file_with(lake, batch, query, pl.col("event_time").is_null())
        raise LakeDataError(url, f"event_time is null in a row of course {query.course_id}")
    # Batches are written one after the other, not sorted together, which is only right
    # if every row lies in its partition's day.
    if not events.height:
        return
    first, last = batch.partitions[0].start, batch.partitions[-1].end
    earliest, latest = events["event_time"].min(), events["event_time"].max()
    assert isinstance(earliest, datetime) and isinstance(latest, datetime)
    if earliest >= first and latest < last:
        return
    for partition in batch.partitions:
        if partition.day in batch.copied:
            continue  # checked when read (course_copy.read_copied_rows)
        outside = (pl.col("event_time") < partition.start) | (pl.col("event_time") >= partition.end)
        for path in partition.files:
            rows = _read_file(lake, path, query, batch).filter(outside).head(1).collect()
            if rows.height:
                raise LakeDataError(
                    lake.url_of(path),
                    f"event_time {rows['event_time'][0].isoformat()} is not on the "
                    f"partition's day {partition.day.isoformat()}",
                )
