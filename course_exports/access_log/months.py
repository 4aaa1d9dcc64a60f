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
from datetime import UTC, date, datetime

import polars as pl
from pydantic import BaseModel

from course_exports.access_log.clustered import (
    COPY_DIR,
    FORMAT,
    INDEX,
    MONTH_COURSE_ROWS,
    MONTH_FORMAT,
    DamagedCopyError,
    DayIndex,
    MonthIndex,
    checked_chunks,
    day_folder,
    index_bytes,
    month_folder,
    month_of,
    parse_index,
    parse_model,
    survey_copy,
)
from course_exports.access_log.indexer import COPY_ORDER, chunked_parquet
from course_exports.access_log.schema import SCAN_SCHEMA
from course_exports.storage import Location


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


def plan_months(store: Location, *, verify: bool = False) -> MonthPlan:
    """Which months to merge (again), from the day copies that are whole now."""
    survey = survey_copy(store)
    dated = sorted(d for d, files in survey.days.items() if INDEX in files)
    blobs = store.read_many([f"{COPY_DIR}/{day_folder(d)}/{INDEX}" for d in dated])
    wanted: dict[str, list[DayIndex]] = {}
    for day, data in zip(dated, blobs, strict=True):
        index = parse_index(data)
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
    them, sorted by course and time, chunked as a day is. The new file gets a new name
    and the index is written after it, as a day's; a day copy that is gone or fails its
    checksums meanwhile is left out (the next plan merges the month again)."""
    started = time.perf_counter()
    chunks: list[bytes] = []
    held: dict[date, list[tuple[str, int, str]]] = {}
    for day in merge.days:
        try:
            data = store.read_bytes(day.path)
            if len(data) != day.size:
                continue
            chunks += checked_chunks(day, range(len(day.chunks)), data, 0)
        except (FileNotFoundError, DamagedCopyError):
            continue
        held[day.day] = day.source
    if not held:
        remove_month(store, merge.month)
        return MonthResult(month=merge.month)
    scan = pl.scan_parquet(chunks, schema=SCAN_SCHEMA, hive_partitioning=False)
    # Counted on the course column alone, before the rows kept are decoded.
    busy = scan.group_by("course_id").len().filter(pl.col("len") > MONTH_COURSE_ROWS)
    left_out = sorted(busy.select("course_id").collect().to_series().to_list())
    frame = scan.filter(~pl.col("course_id").is_in(left_out)).collect()
    data, entries = chunked_parquet(frame.sort(list(COPY_ORDER), nulls_last=False))
    name = f"{uuid.uuid4().hex}.parquets"
    folder = month_folder(merge.month)
    store.write_bytes_atomic(data, COPY_DIR, folder, name)
    index = MonthIndex(
        format=MONTH_FORMAT,
        month=merge.month,
        days=held,
        left_out=left_out,
        file=name,
        size=len(data),
        rows=frame.height,
        chunks=entries,
        built_at=datetime.now(UTC),
        build_seconds=time.perf_counter() - started,
    )
    store.write_bytes_atomic(index_bytes(index), COPY_DIR, folder, INDEX)
    for entry in list(store.iter_files(COPY_DIR, folder)):
        if entry.path.rsplit("/", 1)[-1] not in (name, INDEX):
            store.delete(entry.path)
    return MonthResult(
        month=merge.month,
        days=len(held),
        rows=frame.height,
        left_out=len(left_out),
        copy_bytes=len(data),
        seconds=time.perf_counter() - started,
    )


def remove_month(store: Location, month: str) -> None:
    store.delete_tree(COPY_DIR, month_folder(month))
