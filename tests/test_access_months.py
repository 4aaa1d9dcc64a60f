"""Merged months of the copy (``months``, ``course_copy``): a small course reads one file a
month, a big one its days' files, and the CSV is byte-identical whatever the copy holds;
a stale, damaged or purged month is never read for a day it no longer holds."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_access_copy import (
    NOW,
    OPTIONS,
    WINDOW,
    Lake,
    build_copy,
    busy_day,
    cut_inside,
    export,
    lakes,  # noqa: F401 (the fixture)
    reference,
)

from course_exports import access_log
from course_exports.access_log import clustered, course_copy, indexer, months
from course_exports.access_log.clustered import COPY_DIR, DayIndex, MonthIndex
from course_exports.storage import Location, open_location
from sample_lake import LogLayout


def month_counts(site: Lake) -> Counter[tuple[int, str]]:
    """Events per (course, month) inside the window's closed days."""
    counts: Counter[tuple[int, str]] = Counter()
    for partition in access_log.list_day_partitions(site.lake, WINDOW)[:-1]:
        for path in partition.files:
            for course in pq.read_table(path, columns=["course_id"])["course_id"].to_pylist():
                counts[course, clustered.month_of(partition.day)] += 1
    return counts


def merge_all(store: Location) -> months.MonthPlan:
    plan = months.plan_months(store)
    for merge in plan.merge:
        months.merge_month(store, merge)
    for month in plan.remove:
        months.remove_month(store, month)
    assert months.plan_months(store).merge == []
    return plan


@pytest.fixture
def merged(
    lakes: dict[LogLayout, Lake],  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> tuple[Lake, Location, int]:
    """A private copy of a lake (the parts layout unless parametrized), its days copied
    and its months merged with a limit that leaves the largest course out of some
    months; and a small course that every month holds."""
    layout = getattr(request, "param", LogLayout.PARTS)
    source = lakes[layout]
    shutil.copytree(source.root, tmp_path / "lake")
    site = Lake(tmp_path / "lake", source.summary)
    store = open_location(str(tmp_path / "exports"))
    build_copy(site.lake, store)
    counts = month_counts(site)
    small = min(source.summary.course_ids, key=lambda c: source.summary.events_per_course[c])
    limit = max(n for (course, _), n in counts.items() if course == small)
    assert any(n > limit for (course, _), n in counts.items() if course == site.course)
    monkeypatch.setattr(months, "MONTH_COURSE_ROWS", limit)
    # A month is merged a slice of courses at a time: here several slices a month.
    monkeypatch.setattr(months, "_SLICE_ROWS", limit // 2)
    merge_all(store)
    return site, store, small


def kinds(site: Lake, store: Location, course_id: int) -> Counter[str]:
    """Days of the window per file an export would read them from."""
    partitions = access_log.list_day_partitions(site.lake, WINDOW)
    copy = course_copy.find_current_days(store, partitions, course_id)
    return Counter(type(day.index).__name__ for day in copy.days.values())


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("merged", list(LogLayout), indirect=True)
def test_same_csv_with_merged_months_for_small_and_big_courses(
    merged: tuple[Lake, Location, int], options: str
) -> None:
    site, store, small = merged
    closed = len(access_log.list_day_partitions(site.lake, WINDOW)) - 1
    for course_id in (small, site.course):
        data, stats = export(site, store, course_id, **OPTIONS[options])
        assert data == reference(site, course_id, **OPTIONS[options])
        assert stats.days_from_copy == closed
    # The small course reads every closed day from a month; the big one, left out of
    # some months, reads those days from their own files.
    assert kinds(site, store, small) == {"MonthIndex": closed}
    big = kinds(site, store, site.course)
    assert big["DayIndex"] and big["MonthIndex"] and big.total() == closed


def test_a_small_course_reads_one_range_a_month(
    merged: tuple[Lake, Location, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    site, store, small = merged
    asked: list[list[tuple[str, int, int]]] = []
    read_ranges = store.read_ranges

    def spy(ranges: Any) -> list[bytes | Exception]:
        asked.append(list(ranges))
        return read_ranges(ranges)

    monkeypatch.setattr(store, "read_ranges", spy)
    assert export(site, store, small)[0] == reference(site, small)
    paths = [path for ranges in asked for path, _, _ in ranges]
    merged_months = {clustered.month_of(d) for d in indexer.copy_sizes(store)}
    assert sorted(paths) == sorted(
        f"{COPY_DIR}/month={m}/{month_file(store, m)}" for m in merged_months
    )


def month_file(store: Location, month: str) -> str:
    return month_index(store, month).file


def month_index(store: Location, month: str) -> MonthIndex:
    index = clustered.parse_model(
        store.read_bytes(COPY_DIR, f"month={month}", "index.json"), MonthIndex
    )
    assert index is not None
    return index


def day_with(site: Lake, course_id: int) -> date:
    """A closed day inside the window on which the course has events."""
    for partition in reversed(access_log.list_day_partitions(site.lake, WINDOW)[:-1]):
        if course_id in pq.read_table(partition.files[0])["course_id"].to_pylist():
            return partition.day
    raise AssertionError("no such day")


def test_a_day_the_lms_rewrote_is_not_read_from_its_month(
    merged: tuple[Lake, Location, int],
) -> None:
    """Its month still holds the day's old rows: they are left out, not doubled."""
    site, store, small = merged
    day = day_with(site, small)
    path = site.root / "access_log" / f"event_date={day}" / "part-0.parquet"
    table = pq.read_table(path)
    extra = table.slice(0, 1).set_column(2, "course_id", pa.array([small], pa.int64()))
    pq.write_table(pa.concat_tables([table, extra]), path)
    closed = len(access_log.list_day_partitions(site.lake, WINDOW)) - 1
    assert kinds(site, store, small) == {"MonthIndex": closed - 1}  # that day: the source
    assert export(site, store, small)[0] == reference(site, small)
    [stale] = indexer.plan_copy(site.lake, store, NOW, 6, max_days=10).build
    indexer.build_day(site.lake, store, stale.partition)
    # The day's new copy is current, its month's merge is not: the day from its file.
    assert kinds(site, store, small) == {"MonthIndex": closed - 1, "DayIndex": 1}
    assert export(site, store, small)[0] == reference(site, small)
    [again] = months.plan_months(store).merge
    assert again.month == clustered.month_of(day)
    assert again.reason == "its days were copied again, added or removed"
    months.merge_month(store, again)
    assert kinds(site, store, small) == {"MonthIndex": closed}
    assert export(site, store, small)[0] == reference(site, small)


@pytest.mark.parametrize("damage", ["chunks", "truncated", "index", "another month's file"])
def test_a_damaged_month_is_never_trusted_and_is_merged_again(
    merged: tuple[Lake, Location, int], damage: str
) -> None:
    site, store, small = merged
    month = clustered.month_of(busy_day(site))
    index = month_index(store, month)
    folder = Path(store.path(COPY_DIR, f"month={month}"))
    target = folder / index.file
    if damage == "chunks":
        data = bytearray(target.read_bytes())
        for chunk in index.chunks:
            data[chunk.offset + chunk.length // 2] ^= 0x5A
        target.write_bytes(bytes(data))
    elif damage == "truncated":  # into the course's chunks
        target.write_bytes(target.read_bytes()[: cut_inside(index, small)])
    elif damage == "index":
        (folder / "index.json").write_bytes(b'{"format": 1, "month": "garbage')
    else:  # a valid file, but not the one the index describes
        other = sorted(m for m in clustered.survey_copy(store).months if m != month)[0]
        theirs = (
            Path(store.path(COPY_DIR, f"month={other}")) / month_file(store, other)
        ).read_bytes()
        size = target.stat().st_size
        target.write_bytes(theirs[:size].ljust(size, b"\0"))
    assert export(site, store, small)[0] == reference(site, small)
    # The export dropped a damaged index it had trusted, or never trusted it.
    [again] = months.plan_months(store).merge
    assert again.month == month
    months.merge_month(store, again)
    assert kinds(site, store, small) == {
        "MonthIndex": len(access_log.list_day_partitions(site.lake, WINDOW)) - 1
    }
    assert export(site, store, small)[0] == reference(site, small)


def test_verify_reads_every_chunk_of_a_month(merged: tuple[Lake, Location, int]) -> None:
    site, store, _ = merged
    month = clustered.month_of(busy_day(site))
    index = month_index(store, month)
    target = Path(store.path(COPY_DIR, f"month={month}")) / index.file
    data = bytearray(target.read_bytes())
    data[index.chunks[0].offset + index.chunks[0].length // 2] ^= 0x5A
    target.write_bytes(bytes(data))
    assert months.plan_months(store).merge == []  # the cheap plan reads no file
    [found] = months.plan_months(store, verify=True).merge
    assert found.month == month and found.reason.startswith("damaged")


def test_a_month_never_outlives_one_of_its_days(merged: tuple[Lake, Location, int]) -> None:
    """The purge drops a day's copy and its month's merge; the next refresh merges the
    month's other days again, and no month holds a purged day."""
    from course_exports import retention

    site, store, _ = merged
    later = NOW + timedelta(days=20)
    cutoff = access_log.retention_cutoff(later, 6).date()
    plan = retention.plan_access_purge(site.lake, store, later, 6, 1000)
    for drop in plan.due:
        retention.drop_partition(site.lake, store, drop)
    gone = {drop.day for drop in plan.due}
    assert not {clustered.month_of(d) for d in gone} & set(clustered.survey_copy(store).months)
    replan = merge_all(store)
    assert [m.month for m in replan.merge] == [clustered.month_of(cutoff)]
    held = {d for m in clustered.survey_copy(store).months for d in month_index(store, m).days}
    assert held and min(held) >= cutoff and not held & gone


def test_months_without_days_are_removed(merged: tuple[Lake, Location, int]) -> None:
    site, store, _ = merged
    month = clustered.month_of(busy_day(site))
    for day in list(indexer.copy_sizes(store)):
        if clustered.month_of(day) == month:
            shutil.rmtree(store.path(COPY_DIR, clustered.day_folder(day)))
    plan = months.plan_months(store)
    assert plan.remove == [month] and plan.merge == []
    merge_all(store)
    assert month not in clustered.survey_copy(store).months


def test_an_index_of_another_release_is_merged_again(merged: tuple[Lake, Location, int]) -> None:
    site, store, small = merged
    month = clustered.month_of(busy_day(site))
    path = Path(store.path(COPY_DIR, f"month={month}", "index.json"))
    path.write_text(json.dumps(json.loads(path.read_text()) | {"format": 99}))
    [again] = months.plan_months(store).merge
    assert (again.month, again.reason) == (month, "merged by another release, or damaged")
    assert export(site, store, small)[0] == reference(site, small)


def test_a_day_shares_out_its_months_rows_to_the_planner() -> None:
    chunks = [(1, 3, 40, 4, 0, 10, 0), (5, 5, 90, 1, 10, 10, 0)]
    month = MonthIndex(
        format=clustered.MONTH_FORMAT,
        month="2026-01",
        days={date(2026, 1, d): [] for d in range(1, 31)},
        left_out=[],
        file="x.parquets",
        size=20,
        rows=130,
        chunks=chunks,
        built_at=NOW,
    )
    partition = access_log.DayPartition(date(2026, 1, 1), ())
    assert course_copy.CopiedDay(partition, month, (1,), sharing=30).rows == 3  # 90 / 30
    assert course_copy.CopiedDay(partition, month, (0,), sharing=30).rows == 1  # 10 / 30
    day = DayIndex(**(month.model_dump() | {"day": date(2026, 1, 1), "source": []}))
    assert course_copy.CopiedDay(partition, day, (1,)).rows == 90
    assert clustered.parse_model(clustered.index_bytes(month), MonthIndex) == month


def test_a_month_is_merged_a_slice_of_courses_at_a_time() -> None:
    """Course ranges of about _SLICE_ROWS rows, back to back, covering every chunk;
    a chunk across a cut is read by both sides."""
    chunks = [
        clustered.Chunk(first, last, rows, 2, 0, 1, 0)
        for first, last, rows in [
            (1, 4, 300),
            (3, 9, 300),
            (10, 10, 900),
            (11, 30, 100),
            (12, 12, 50),
        ]
    ]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(months, "_SLICE_ROWS", 500)
        assert months._slices(chunks) == [(1, 9), (10, 10), (11, 30)]
        patch.setattr(months, "_SLICE_ROWS", 10**6)
        assert months._slices(chunks) == [(1, 30)]
    assert months._slices([]) == []


def test_a_day_found_damaged_while_merging_stops_the_merge_and_is_copied_again(
    merged: tuple[Lake, Location, int],
) -> None:
    site, store, small = merged
    day = day_with(site, small)
    month = clustered.month_of(day)
    before = month_index(store, month)
    # The day is copied again (the LMS rewrote it) and its new file then damaged.
    path = site.root / "access_log" / f"event_date={day}" / "part-0.parquet"
    pq.write_table(pq.read_table(path), path)
    [stale] = indexer.plan_copy(site.lake, store, NOW, 6, max_days=10).build
    indexer.build_day(site.lake, store, stale.partition)
    index = clustered.parse_index(
        store.read_bytes(COPY_DIR, clustered.day_folder(day), "index.json")
    )
    assert index is not None
    target = Path(store.path(index.path))
    data = bytearray(target.read_bytes())
    chunk = index.chunks[index.chunks_of(small)[0]]  # a chunk the merge decodes
    data[chunk.offset + chunk.length // 2] ^= 0x5A
    target.write_bytes(bytes(data))
    [merge] = months.plan_months(store).merge
    result = months.merge_month(store, merge)
    assert result.days == 0 and result.problem and str(day) in result.problem
    assert month_index(store, month) == before  # nothing written over the old merge
    assert {p.name for p in Path(store.path(COPY_DIR, f"month={month}")).iterdir()} == {
        "index.json",
        before.file,
    }
    # The damaged day lost its index: copied again, then the month merges.
    [again] = indexer.plan_copy(site.lake, store, NOW, 6, max_days=10).build
    assert (again.day, again.reason) == (day, "not copied yet")
    indexer.build_day(site.lake, store, stale.partition)
    merge_all(store)
    assert kinds(site, store, small) == {
        "MonthIndex": len(access_log.list_day_partitions(site.lake, WINDOW)) - 1
    }
    assert export(site, store, small)[0] == reference(site, small)
