"""Merging a month's copied days into one file for small courses (see ``clustered``).

Survey -> decide -> apply, as the indexer: one listing of the copy and a read of each
day's and month's index, a plan a person can read, then one month at a time. A month is
merged (again) when the days it holds are not exactly the month's current day copies,
with the same source files (a day added, rebuilt or removed since), or when its file is
missing, of another size or, with ``verify``, fails a checksum. A month with no copied
day left is removed. A merge reads the day copies, never the LMS's log: they are sorted
already and hold what the day indexes say, so the month records those very stamps.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import polars as pl
from pydantic import BaseModel

from course_exports.access_log.clustered import (
    COPY_DIR,
    FORMAT,
    INDEX,
    MONTH_COURSE_ROWS,
    MONTH_FORMAT,
    Chunk,
    DamagedCopyError,
    DayIndex,
    MonthIndex,
    checked_chunks,
    day_folder,
    discard_index,
    month_folder,
    month_of,
    parse_model,
    publish_index,
    read_indexes,
    survey_copy,
)
from course_exports.access_log.indexer import COPY_ORDER, chunked_parquet
from course_exports.access_log.schema import SCAN_SCHEMA
from course_exports.storage import Location

#: Rows decoded at once while merging a month (plus at most one course's spill-over):
#: ~50 MB of frame, whatever the month holds.
_SLICE_ROWS = 500_000


class MonthMerge(BaseModel):
    """A month to merge (again), why, and the day copies it takes, as the plan read them."""

    month: str
    reason: str
    days: list[DayIndex]


class MonthPlan(BaseModel):
    merge: list[MonthMerge]
    #: Merged months with no copied day left.
    remove: list[str]
    #: Months already current.
    current: int


class MonthResult(BaseModel):
    """What merging one month did."""

    month: str
    days: int = 0
    rows: int = 0
    #: Courses left out (more than MONTH_COURSE_ROWS rows): read from the days' files.
    left_out: int = 0
    copy_bytes: int = 0
    seconds: float = 0.0
    #: Why nothing was merged: a day copy found damaged (dropped, to be copied again).
    problem: str | None = None


def plan_months(store: Location, *, verify: bool = False) -> MonthPlan:
    """Which months to merge (again), from the day copies that are whole now."""
    survey = survey_copy(store)
    dated = sorted(d for d, files in survey.days.items() if INDEX in files)
    paths = [f"{COPY_DIR}/{day_folder(d)}/{INDEX}" for d in dated]
    wanted: dict[str, list[DayIndex]] = {}
    for day, index in zip(dated, read_indexes(store, paths, DayIndex), strict=True):
        if index and index.format == FORMAT and survey.days[day].get(index.file) == index.size:
            wanted.setdefault(month_of(day), []).append(index)
    merge, current = [], 0
    for month, days in sorted(wanted.items()):
        reason = _why_merge(store, month, days, survey.months.get(month, {}), verify)
        if reason is None:
            current += 1
        else:
            merge.append(MonthMerge(month=month, reason=reason, days=days))
    remove = sorted(m for m in survey.months if m not in wanted)
    return MonthPlan(merge=merge, remove=remove, current=current)


def _why_merge(
    store: Location, month: str, days: list[DayIndex], files: dict[str, int], verify: bool
) -> str | None:
    if INDEX not in files:
        return "not merged yet"
    try:
        index = parse_model(store.read_bytes(COPY_DIR, month_folder(month), INDEX), MonthIndex)
    except FileNotFoundError:
        return "not merged yet"
    if index is None or index.format != MONTH_FORMAT or index.month != month:
        return "merged by another release, or damaged"
    if index.days != {d.day: d.source for d in days}:
        return "its days were copied again, added or removed"
    if files.get(index.file) != index.size:
        return "damaged: the file is missing or of another size"
    if verify:
        try:
            data = store.read_bytes(index.path)
            checked_chunks(index, range(len(index.chunks)), data, 0)
        except (OSError, DamagedCopyError) as exc:
            return f"damaged: {exc}"
    return None


def merge_month(store: Location, merge: MonthMerge) -> MonthResult:
    """Merge the month's day copies: every course with at most MONTH_COURSE_ROWS rows in
    them, sorted by course and time, chunked as a day is.

    A slice of courses at a time (about :data:`_SLICE_ROWS` rows, read as one range of
    each day's file), streamed into the new file: memory stays bounded whatever a month
    holds (one month of the benchmark's lake in one piece peaked at 895 MB). The file
    gets a new name and the index is written after it, as a day's. A day copy that is
    gone or fails a checksum meanwhile stops the merge, nothing written, and loses its
    index, so the indexer copies the day again and the next refresh merges the month.
    """
    started = time.perf_counter()
    # A course whose own chunks alone pass the limit is left out without being read.
    own: Counter[int] = Counter()
    for day in merge.days:
        for chunk in day.chunks:
            if chunk.courses == 1:
                own[chunk.first] += chunk.rows
    left_out = {course for course, rows in own.items() if rows > MONTH_COURSE_ROWS}
    wanted = [
        (day, [c for c in day.chunks if not (c.courses == 1 and c.first in left_out)])
        for day in merge.days
    ]
    name = f"{uuid.uuid4().hex}.parquets"
    folder = month_folder(merge.month)
    entries: list[Chunk] = []
    rows = size = 0
    try:
        with store.open_write(COPY_DIR, folder, name) as out:
            for low, high in _slices([c for _, chunks in wanted for c in chunks]):
                frame = _slice(store, merge.days, low, high, left_out)
                data, chunks = chunked_parquet(frame)
                out.write(data)
                entries += [chunk._replace(offset=chunk.offset + size) for chunk in chunks]
                size += len(data)
                rows += frame.height
    except _DamagedDay as exc:
        discard_index(store, exc.day)
        return MonthResult(month=merge.month, problem=str(exc))
    index = MonthIndex(
        format=MONTH_FORMAT,
        month=merge.month,
        days={day.day: day.source for day in merge.days},
        left_out=sorted(left_out),
        file=name,
        size=size,
        rows=rows,
        chunks=entries,
        built_at=datetime.now(UTC),
        build_seconds=time.perf_counter() - started,
    )
    publish_index(store, index)
    return MonthResult(
        month=merge.month,
        days=len(merge.days),
        rows=rows,
        left_out=len(left_out),
        copy_bytes=size,
        seconds=time.perf_counter() - started,
    )


class _DamagedDay(Exception):
    def __init__(self, day: DayIndex, problem: str) -> None:
        super().__init__(f"the copy of {day.day} is damaged: {problem}")
        self.day = day


def _slices(chunks: list[Chunk]) -> list[tuple[int, int]]:
    """Ranges ``[low, high]`` of course ids covering ``chunks``, of about
    :data:`_SLICE_ROWS` rows each (a chunk across a cut is read by both sides)."""
    if not chunks:
        return []
    ordered = sorted(chunks, key=lambda chunk: chunk.first)
    bounds: list[tuple[int, int]] = []
    low, rows = ordered[0].first, 0
    for chunk in ordered:
        if rows >= _SLICE_ROWS and chunk.first > low:
            bounds.append((low, chunk.first - 1))
            low, rows = chunk.first, 0
        rows += chunk.rows
    bounds.append((low, max(chunk.last for chunk in ordered)))
    return bounds


def _slice(
    store: Location, days: list[DayIndex], low: int, high: int, left_out: set[int]
) -> pl.DataFrame:
    """The rows of courses ``low`` to ``high`` of every day, but the courses left out
    (``left_out`` grows by those found to pass the limit here), sorted for the copy."""
    reads: list[tuple[DayIndex, list[int]]] = []
    for day in days:
        numbers = [
            i
            for i, c in enumerate(day.chunks)
            if c.last >= low and c.first <= high and not (c.courses == 1 and c.first in left_out)
        ]
        if numbers:  # one range each: a left-out course's chunk between them is read, not decoded
            reads.append((day, numbers))
    spans = store.read_ranges([_span(day, numbers) for day, numbers in reads])
    chunks: list[bytes] = []
    for (day, numbers), span in zip(reads, spans, strict=True):
        if isinstance(span, Exception):
            raise _DamagedDay(day, f"{type(span).__name__}: {span}")
        try:
            chunks += checked_chunks(day, numbers, span, day.chunks[numbers[0]].offset)
        except DamagedCopyError as exc:
            raise _DamagedDay(day, str(exc)) from exc
    course = pl.col("course_id")
    frame = (
        pl.scan_parquet(chunks, schema=SCAN_SCHEMA, hive_partitioning=False)
        .filter(course.is_between(low, high) & ~course.is_in(sorted(left_out)))
        .collect()
    )
    busy = frame.group_by("course_id").len().filter(pl.col("len") > MONTH_COURSE_ROWS)
    left_out.update(busy["course_id"].to_list())
    if busy.height:
        frame = frame.filter(~course.is_in(busy["course_id"].implode()))
    return frame.sort(list(COPY_ORDER), nulls_last=False)


def _span(day: DayIndex, numbers: list[int]) -> tuple[str, int, int]:
    first, last = day.chunks[numbers[0]], day.chunks[numbers[-1]]
    return day.path, first.offset, last.offset + last.length


def remove_month(store: Location, month: str) -> None:
    store.delete_tree(COPY_DIR, month_folder(month))
