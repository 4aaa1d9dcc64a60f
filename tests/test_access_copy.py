"""The course-clustered copy: the CSV is byte-identical on every lake layout, with and
without the copy, and a stale, damaged or broken day is read from the source instead."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import shutil
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from reference import lake_reference_csv

from course_exports import access_log
from course_exports.access_log import clustered, course_copy, indexer
from course_exports.access_log.clustered import COPY_DIR, DayIndex
from course_exports.access_log.course_copy import CourseCopy
from course_exports.errors import LakeDataError
from course_exports.lake import read_course, read_roster, read_users
from course_exports.storage import Location, open_location
from sample_lake import LakeSpec, LakeSummary, LogLayout, generate_lake, tiny_lake_spec

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
WINDOW = access_log.access_window(NOW, 6, None, None)
#: The tiny lake has ~15 events a day: copies here are built with chunks of a few rows,
#: so that a day has several and a course's rows can span some.
TEST_CHUNK_ROWS = 3


@dataclasses.dataclass(frozen=True)
class Lake:
    root: Path
    summary: LakeSummary

    @property
    def lake(self) -> Location:
        return open_location(str(self.root))

    @property
    def course(self) -> int:
        return self.summary.course_ids[0]


@pytest.fixture(scope="module")
def lakes(tmp_path_factory: pytest.TempPathFactory) -> dict[LogLayout, Lake]:
    """The tiny lake in every layout: the same events, laid out differently."""
    made = {}
    for layout in LogLayout:
        root = tmp_path_factory.mktemp(f"lake-{layout}")
        spec = dataclasses.replace(tiny_lake_spec(), layout=layout, workspaces=False)
        made[layout] = Lake(root, generate_lake(open_location(str(root)), spec, now=NOW))
    return made


@pytest.fixture(scope="module")
def copies(
    lakes: dict[LogLayout, Lake], tmp_path_factory: pytest.TempPathFactory
) -> dict[LogLayout, Path]:
    """The copy of each layout's log, built once (tests that damage one use their own)."""
    built = {}
    for layout, site in lakes.items():
        root = tmp_path_factory.mktemp(f"copy-{layout}")
        plan = build_copy(site.lake, open_location(str(root)))
        assert plan.build and not plan.remove
        built[layout] = root
    return built


def build_copy(
    lake: Location, store: Location, chunk_rows: int = TEST_CHUNK_ROWS
) -> indexer.CopyPlan:
    plan = indexer.plan_copy(lake, store, NOW, 6, max_days=1000)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(indexer, "CHUNK_ROWS", chunk_rows)
        for day in plan.build:
            assert indexer.build_day(lake, store, day.partition).copied
    return plan


def export(
    site: Lake, store: Location | None, course_id: int | None = None, **options: Any
) -> tuple[bytes, Any]:
    lake = site.lake
    course_id = site.course if course_id is None else course_id
    course = read_course(lake, course_id)
    partitions = access_log.list_day_partitions(lake, WINDOW)
    copy = course_copy.find_current_days(store, partitions, course_id) if store else None
    access_log.check_log_files(lake, [p for p in partitions if not copy or p.day not in copy.days])
    out = io.BytesIO()
    stats = access_log.write_access_csv(
        lake,
        partitions,
        out,
        course_id=course_id,
        window=WINDOW,
        assignments=course.assignment_labels(),
        roster=read_roster(lake, course_id),
        users=read_users(lake),
        copy=copy,
        **options,
    )
    return out.getvalue(), stats


def reference(site: Lake, course_id: int | None = None, **options: Any) -> bytes:
    course_id = site.course if course_id is None else course_id
    return lake_reference_csv(site.root, course_id, WINDOW, **options)


def test_the_layouts_hold_the_same_events(lakes: dict[LogLayout, Lake]) -> None:
    counts = {layout: site.summary.events_per_course for layout, site in lakes.items()}
    assert len({tuple(c.items()) for c in counts.values()}) == 1
    files = {
        layout: sorted(p.name for p in (site.root / "access_log").rglob("*.parquet"))
        for layout, site in lakes.items()
    }
    assert any(name.startswith("hour-") for name in files[LogLayout.HOURLY])
    sorted_lake = lakes[LogLayout.COURSE_SORTED].root
    sample = next(iter(sorted_lake.glob("access_log/*/part-0.parquet")))
    courses = pq.read_table(sample)["course_id"].to_pylist()
    assert courses == sorted(courses)


OPTIONS: dict[str, dict[str, Any]] = {
    "everything": {},
    "filters": {"timezone": "America/New_York", "excel": True, "assignment_ids": [5001, 5002]},
}


@pytest.mark.parametrize("options", list(OPTIONS))
@pytest.mark.parametrize("with_copy", [False, True], ids=["source", "copy"])
@pytest.mark.parametrize("layout", list(LogLayout))
def test_same_csv_on_every_layout_with_and_without_the_copy(
    lakes: dict[LogLayout, Lake],
    copies: dict[LogLayout, Path],
    layout: LogLayout,
    with_copy: bool,
    options: str,
) -> None:
    site = lakes[layout]
    store = open_location(str(copies[layout])) if with_copy else None
    data, stats = export(site, store, **OPTIONS[options])
    assert data == reference(site, **OPTIONS[options])
    assert stats.rows > 20
    if store is not None:
        # Every day inside the window but today (not closed) came from the copy.
        assert stats.days_from_copy == stats.days - 1
        assert stats.files == len(access_log.list_day_partitions(site.lake, WINDOW)[-1].files)
    else:
        assert stats.days_from_copy == 0


@pytest.fixture
def copied(lakes: dict[LogLayout, Lake], tmp_path: Path) -> tuple[Lake, Location]:
    """A private copy of the parts lake, and its course-clustered copy (built anew: the
    copied files are other files, with other content tags)."""
    source = lakes[LogLayout.PARTS]
    shutil.copytree(source.root, tmp_path / "lake")
    site = Lake(tmp_path / "lake", source.summary)
    store = open_location(str(tmp_path / "exports"))
    build_copy(site.lake, store)
    return site, store


def busy_day(site: Lake) -> date:
    """A closed day inside the window on which the course has events."""
    for partition in reversed(access_log.list_day_partitions(site.lake, WINDOW)[:-1]):
        table = pq.read_table(partition.files[0])
        if site.course in table["course_id"].to_pylist():
            return partition.day
    raise AssertionError("no busy day")


def copy_file(store: Location, day: date) -> Path:
    index = read_index(store, day)
    return Path(store.path(COPY_DIR, clustered.day_folder(day), index.file))


def read_index(store: Location, day: date) -> DayIndex:
    index = clustered.parse_index(
        store.read_bytes(COPY_DIR, clustered.day_folder(day), "index.json")
    )
    assert index is not None
    return index


def test_a_day_the_lms_rewrote_is_read_from_the_source(copied: tuple[Lake, Location]) -> None:
    site, store = copied
    day = busy_day(site)
    path = site.root / "access_log" / f"event_date={day}" / "part-0.parquet"
    table = pq.read_table(path)
    extra = table.slice(0, 1).set_column(2, "course_id", pa.array([site.course], pa.int64()))
    pq.write_table(pa.concat_tables([table, extra]), path)
    partitions = access_log.list_day_partitions(site.lake, WINDOW)
    copy = course_copy.find_current_days(store, partitions, site.course)
    assert day not in copy.days and len(copy.days) > 100
    data, _ = export(site, store)
    assert data == reference(site)
    plan = indexer.plan_copy(site.lake, store, NOW, 6, max_days=10)
    assert [(d.day, d.reason) for d in plan.build] == [(day, "the LMS changed the day's files")]
    indexer.build_day(site.lake, store, plan.build[0].partition)
    assert indexer.plan_copy(site.lake, store, NOW, 6, max_days=10).build == []
    assert export(site, store)[0] == data


@pytest.mark.parametrize("gone", ["index.json", "chunks"])
def test_a_day_dropped_while_an_export_reads_the_copy_comes_from_the_source(
    copied: tuple[Lake, Location], monkeypatch: pytest.MonkeyPatch, gone: str
) -> None:
    """The indexer, the purge or another export may drop a day's index or file between
    this export's listing of the copy and its reads: that day is read from the source,
    the others from the copy, and the export goes on."""
    site, store = copied
    day = busy_day(site)
    target = copy_file(store, day).parent / "index.json" if gone == "index.json" else None
    list_folders = course_copy.copy_folders

    def list_then_drop(store: Location) -> clustered.CopyFolders:
        found = list_folders(store)
        if target is not None:
            target.unlink(missing_ok=True)
        return found

    monkeypatch.setattr(course_copy, "copy_folders", list_then_drop)
    partitions = access_log.list_day_partitions(site.lake, WINDOW)
    copy = course_copy.find_current_days(store, partitions, site.course)
    assert (day in copy.days) == (gone == "chunks") and len(copy.days) > 100
    if gone == "chunks":
        copy_file(store, day).unlink()
    rows, damaged = copy.read(list(copy.days.values()), site.course)
    assert [d.partition.day for d, _ in damaged] == ([day] if gone == "chunks" else [])
    assert rows.height and all("FileNotFoundError" in str(error) for _, error in damaged)
    assert export(site, store)[0] == reference(site)


def corrupt_chunks(store: Location, day: date) -> None:
    """Flip a byte inside every chunk but the last, leaving the size (and the last
    chunk, which the indexer's cheap check reads) intact."""
    path = copy_file(store, day)
    data = bytearray(path.read_bytes())
    chunks = read_index(store, day).chunks
    assert len(chunks) > 1
    for chunk in chunks[:-1]:
        data[chunk.offset + chunk.length // 2] ^= 0x5A
    path.write_bytes(bytes(data))


def cut_inside(index: clustered.ChunkedFile, course_id: int) -> int:
    """A length that cuts the file inside the course's last chunk."""
    last = index.chunks[index.chunks_of(course_id)[-1]]
    return last.offset + last.length // 2


@pytest.mark.parametrize("damage", ["pages", "truncated", "index", "other file"])
def test_a_damaged_copy_is_never_trusted_and_is_rebuilt(
    copied: tuple[Lake, Location], damage: str
) -> None:
    site, store = copied
    day = busy_day(site)
    target = copy_file(store, day)
    if damage == "pages":
        corrupt_chunks(store, day)
    elif damage == "truncated":  # into the course's chunks
        target.write_bytes(target.read_bytes()[: cut_inside(read_index(store, day), site.course)])
    elif damage == "index":
        (target.parent / "index.json").write_bytes(b'{"format": 1, "day": "garbage')
    else:  # a valid parquet file, but not the one the index describes
        other = copy_file(store, day - timedelta(days=1))
        data = other.read_bytes()
        target.write_bytes(data + b"\0" * (target.stat().st_size - len(data)))
    data, stats = export(site, store)
    assert data == reference(site)
    assert stats.days_from_copy < stats.days - 1  # that day came from the source
    # The export dropped a damaged index it had trusted, or never trusted it.
    plan = indexer.plan_copy(site.lake, store, NOW, 6, max_days=10)
    assert [d.day for d in plan.build] == [day]
    assert indexer.build_day(site.lake, store, plan.build[0].partition).copied
    assert export(site, store)[0] == data
    assert indexer.plan_copy(site.lake, store, NOW, 6, max_days=10, verify=True).build == []


def test_a_file_cut_short_after_the_courses_chunks_serves_them_and_is_rebuilt(
    copied: tuple[Lake, Location],
) -> None:
    """An export checks the bytes it reads, not the whole file's size (it lists no file
    of the copy): the course's chunks, whole and matching their checksums, are used; the
    indexer, which checks sizes, copies the day again."""
    site, store = copied
    day = busy_day(site)
    target = copy_file(store, day)
    index = read_index(store, day)
    course_end = max(
        index.chunks[i].offset + index.chunks[i].length for i in index.chunks_of(site.course)
    )
    assert course_end < index.size - 1  # the course's chunks are not the file's last bytes
    target.write_bytes(target.read_bytes()[:-1])
    data, stats = export(site, store)
    assert data == reference(site)
    assert stats.days_from_copy == stats.days - 1  # every closed day (today's is the source's)
    plan = indexer.plan_copy(site.lake, store, NOW, 6, max_days=10)
    assert [(d.day, d.reason) for d in plan.build] == [
        (day, "damaged: the copy's file is missing or of another size")
    ]


def test_each_chunk_is_a_parquet_file_and_together_they_are_the_sorted_day(
    copied: tuple[Lake, Location],
) -> None:
    """What lets an export decode exactly the bytes it checked: a chunk needs nothing
    else of the file."""
    site, store = copied
    day = busy_day(site)
    index = read_index(store, day)
    data = copy_file(store, day).read_bytes()
    assert len(index.chunks) > 1 and index.chunks[-1].offset + index.chunks[-1].length == len(data)
    frames = [pl.read_parquet(data[c.offset : c.offset + c.length]) for c in index.chunks]
    for frame, chunk in zip(frames, index.chunks, strict=True):
        courses = frame["course_id"]
        assert (courses[0], courses[-1], frame.height) == (chunk.first, chunk.last, chunk.rows)
        assert courses.n_unique() == chunk.courses
    day_rows = pl.concat(frames)
    assert day_rows.height == index.rows
    assert day_rows.equals(day_rows.sort(list(indexer.COPY_ORDER), nulls_last=False))


@given(
    runs=st.lists(st.integers(1, 40), max_size=60),
    chunk_rows=st.integers(1, 30),
)
def test_chunks_keep_small_courses_whole_and_big_ones_alone(
    runs: list[int], chunk_rows: int
) -> None:
    """Chunks cover the day's rows in order and count their courses; no course is split
    (a course is in one chunk a day), one with CHUNK_ROWS rows or more is alone in its
    chunk; a chunk of several courses stays under 2 x CHUNK_ROWS rows, so a small
    course decodes little besides its own."""
    courses = pl.Series([course for course, n in enumerate(runs) for _ in range(n)], dtype=pl.Int64)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(indexer, "CHUNK_ROWS", chunk_rows)
        bounds = indexer.chunk_bounds(courses)
    assert [start for start, _, _ in bounds] == [
        sum(n for _, n, _ in bounds[:i]) for i in range(len(bounds))
    ]
    assert sum(n for _, n, _ in bounds) == len(courses) and all(n > 0 for _, n, _ in bounds)
    starts = {start for start, _, _ in bounds}
    first_row = 0
    for n in runs:  # a course's rows never straddle two chunks
        assert not any(first_row < s < first_row + n for s in starts)
        first_row += n
    for start, n, count in bounds:
        members = courses.slice(start, n).unique()
        assert count == len(members)
        if len(members) > 1:
            assert n < 2 * chunk_rows
            assert all(runs[c] < chunk_rows for c in members.to_list())


def test_a_day_copied_by_an_older_release_is_read_from_the_source_and_rebuilt(
    copied: tuple[Lake, Location],
) -> None:
    """Format 1 (up to 0.8.0) was one parquet file a day with row groups and a footer:
    this code cannot read its index, uses the source for that day, and the refresh says
    why it rebuilds it (an upgrade, not damage)."""
    site, store = copied
    day = busy_day(site)
    folder = Path(store.path(COPY_DIR, clustered.day_folder(day)))
    index = json.loads((folder / "index.json").read_bytes())
    del index["chunks"]
    index |= {"format": 1, "row_groups": [[1, 9, 3, 4, 10, 0]], "footer": [14, 0]}
    (folder / "index.json").write_text(json.dumps(index))
    data, stats = export(site, store)
    assert data == reference(site)
    assert stats.days_from_copy == stats.days - 2  # today, and that day
    plan = indexer.plan_copy(site.lake, store, NOW, 6, max_days=10)
    assert [(d.day, d.reason) for d in plan.build] == [(day, "copied in format 1, now 2")]
    assert indexer.build_day(site.lake, store, plan.build[0].partition).copied
    assert indexer.plan_copy(site.lake, store, NOW, 6, max_days=10).build == []
    assert export(site, store)[1].days_from_copy == stats.days - 1


def test_verify_reads_every_page(copied: tuple[Lake, Location]) -> None:
    site, store = copied
    day = next(
        d
        for d in sorted(indexer.copy_sizes(store), reverse=True)
        if len(read_index(store, d).chunks) > 1
    )
    corrupt_chunks(store, day)
    # The cheap check reads the last chunk only.
    assert indexer.plan_copy(site.lake, store, NOW, 6, max_days=10).build == []
    [found] = indexer.plan_copy(site.lake, store, NOW, 6, max_days=10, verify=True).build
    assert found.day == day and found.reason.startswith("damaged")


def test_a_day_with_a_broken_row_stays_on_the_source(copied: tuple[Lake, Location]) -> None:
    site, store = copied
    day = busy_day(site)
    path = site.root / "access_log" / f"event_date={day}" / "part-1.parquet"
    table = pq.read_table(path)
    types = table["access_type"].to_pylist()
    row = table["course_id"].to_pylist().index(site.course)
    types[row] = "teleport"
    pq.write_table(table.set_column(4, "access_type", pa.array(types, pa.string())), path)
    [stale] = indexer.plan_copy(site.lake, store, NOW, 6, max_days=10).build
    result = indexer.build_day(site.lake, store, stale.partition)
    assert not result.copied and result.problem == "1 rows with unknown access type"
    with pytest.raises(LakeDataError, match="teleport") as raised:
        export(site, store)
    assert raised.value.path == str(path)


def test_days_the_log_no_longer_has_are_removed(copied: tuple[Lake, Location]) -> None:
    site, store = copied
    oldest = access_log.list_day_partitions(site.lake, WINDOW)[0].day
    shutil.rmtree(site.root / "access_log" / f"event_date={oldest}")
    plan = indexer.plan_copy(site.lake, store, NOW, 6, max_days=10)
    assert plan.remove == [oldest] and plan.build == []
    indexer.remove_day(store, oldest)
    assert not os.path.exists(store.path(COPY_DIR, clustered.day_folder(oldest)))


def test_chunks_of_a_course() -> None:
    index = DayIndex(
        format=clustered.FORMAT,
        day=date(2026, 1, 1),
        source=[],
        file="x.parquets",
        size=1,
        rows=9,
        chunks=[
            (1, 3, 3, 2, 4, 9, 0),
            (3, 3, 3, 1, 13, 9, 0),
            (3, 7, 3, 2, 22, 9, 0),
            (9, 9, 3, 1, 31, 9, 0),
        ],
        built_at=NOW,
    )
    assert index.chunks_of(3) == (0, 1, 2)
    assert index.chunks_of(1) == (0,)
    assert index.chunks_of(5) == (2,)
    assert index.chunks_of(8) == ()
    assert index.chunks_of(9) == (3,)
    assert index.chunks_of(10) == ()
    # Its rows as the planner counts them: a chunk of its own, a share of a shared one.
    assert [c.course_rows() for c in index.chunks] == [2, 3, 2, 3]
    assert clustered.parse_index(clustered.index_bytes(index)) == index


def test_an_empty_copy_changes_nothing(lakes: dict[LogLayout, Lake], tmp_path: Path) -> None:
    site = lakes[LogLayout.DAILY_UNSORTED]
    store = open_location(str(tmp_path / "nothing"))
    copy = course_copy.find_current_days(
        store, access_log.list_day_partitions(site.lake, WINDOW), 1
    )
    assert copy == CourseCopy(store, {})
    assert export(site, store)[0] == reference(site)


def test_the_access_purge_drops_the_copys_days_with_the_sources(
    copied: tuple[Lake, Location],
) -> None:
    from course_exports import retention

    site, store = copied
    later = NOW + timedelta(days=20)  # twenty more days fall out of the retention
    cutoff = access_log.retention_cutoff(later, 6)
    copied_days = sorted(indexer.copy_sizes(store))
    gone = [d for d in copied_days if d < cutoff.date()]
    assert len(gone) >= 15
    plan = retention.plan_access_purge(site.lake, store, later, 6, 1000)
    assert [d.day for d in plan.due][-len(gone) :] == gone
    assert all(d.copy_bytes > 0 for d in plan.due if d.day in gone)
    for drop in plan.due:
        retention.drop_partition(site.lake, store, drop)
    left = sorted(indexer.copy_sizes(store))
    assert left == [d for d in copied_days if d >= cutoff.date()]
    # A copied day whose source is already gone is dropped by the next purge too.
    shutil.copytree(copied_days_folder(store, left[0]), copied_days_folder(store, gone[0]))
    [again] = retention.plan_access_purge(site.lake, store, later, 6, 1000).due
    assert (again.day, again.files, again.bytes) == (gone[0], 0, 0) and again.copy_bytes
    retention.drop_partition(site.lake, store, again)
    assert sorted(indexer.copy_sizes(store)) == left


def copied_days_folder(store: Location, day: date) -> Path:
    return Path(store.path(COPY_DIR, clustered.day_folder(day)))


@pytest.mark.parametrize("merged", [False, True], ids=["days", "months"])
def test_a_small_course_reads_a_sliver_of_the_copy_on_s3(
    tmp_path: Path, s3_server: Any, merged: bool
) -> None:
    """On S3 an export from the copy fetches its course's chunks of each day (one ranged
    GET), or of each month once months are merged, never whole files: O(course), not
    O(log)."""
    from faults import faulty_proxy

    from course_exports.access_log import months

    spec = LakeSpec(
        seed=11,
        courses=40,
        students=10,
        events=160_000,  # 20,000 a day: five chunks a day in the copy
        days=8,
        workspaces=False,
        layout=LogLayout.DAILY_UNSORTED,
        event_skew=1.0,
    )
    summary = generate_lake(open_location(str(tmp_path / "lake")), spec, now=NOW)
    small = sorted(summary.events_per_course, key=summary.events_per_course.__getitem__)[5]
    site = Lake(tmp_path / "lake", dataclasses.replace(summary, course_ids=[small]))
    bucket = s3_server.make_bucket("copy")
    built = open_location(f"s3://{bucket}/exports", s3_endpoint_url=s3_server.endpoint_url)
    build_copy(site.lake, built, chunk_rows=clustered.CHUNK_ROWS)
    if merged:
        for merge in months.plan_months(built).merge:
            assert months.merge_month(built, merge).days
    with faulty_proxy(s3_server.endpoint_url) as proxy:
        store = open_location(f"s3://{bucket}/exports", s3_endpoint_url=proxy.url)
        copy_bytes = sum(e.size for e in store.iter_files(COPY_DIR) if e.path.endswith(".parquets"))
        proxy.answered.clear()
        data, stats = export(site, store)
        parquet_gets = [p for m, p, _ in proxy.answered if m == "GET" and ".parquet" in p]
        read = sum(n for m, p, n in proxy.answered if m == "GET" and ".parquet" in p)
    assert data == reference(site)
    assert 0 < summary.events_per_course[small] < spec.events / 100 and stats.days_from_copy == 7
    # One span a day, or a month.
    assert len(parquet_gets) == (len(clustered.survey_copy(store).months) if merged else 7)
    assert all(("/month" in p) == merged for p in parquet_gets)  # "month=", maybe quoted
    print(f"{len(parquet_gets)} GETs, {read} of {copy_bytes} bytes")
    assert read < copy_bytes / 4, (read, copy_bytes)
