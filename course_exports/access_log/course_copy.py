"""The copy as one export reads it: which days come from it, and the course's rows.

See ``clustered`` for the layout. An export lists the copy's folders, takes each day from
the merged month that holds it current when its course is in the month's file, else
from the day's own file when that is current, else from the source; then it reads one
range of each file it uses (the course's chunks), checks every chunk against its crc32
and decodes only those bytes. A file that fails a check gives its days back to the
source (:class:`~course_exports.access_log.clustered.DamagedCopyError`) and loses its
index, so the indexer rebuilds it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

import polars as pl

from course_exports.access_log.clustered import (
    COPY_DIR,
    INDEX,
    ChunkedFile,
    CopyFolders,
    DamagedCopyError,
    DayIndex,
    MonthIndex,
    checked_chunks,
    copy_folders,
    day_folder,
    discard_index,
    month_folder,
    month_of,
    read_indexes,
)
from course_exports.access_log.partitions import DayPartition
from course_exports.access_log.schema import ACCESS_TYPE_LABELS, SCAN_SCHEMA
from course_exports.storage import Location

#: Chunk bytes per Polars scan of days' files, so memory stays bounded whatever a batch holds.
_SCAN_BYTES = 64 * 2**20


@dataclass(frozen=True)
class CopiedDay:
    """A day an export reads from the copy: which file (the day's or its month's), and
    the course's chunks in it."""

    partition: DayPartition
    index: ChunkedFile
    chunks: tuple[int, ...]
    #: Days of the file this export reads with the same chunks (a month's): the course's
    #: rows are shared out among them.
    sharing: int = 1

    @property
    def rows(self) -> int:
        """The course's rows of the day, as the index tells them (see Chunk)."""
        rows = sum(self.index.chunks[i].course_rows() for i in self.chunks)
        return -(-rows // self.sharing)

    @property
    def path(self) -> str:
        """The copy's file, relative to the exports root."""
        return self.index.path


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
    """The days of ``partitions`` the copy holds current, and in which file.

    One listing of the copy's folders, one small read per month's index, and one per
    day's index for the days no month gives this course. A day whose index is missing,
    unreadable or stale is left out (read from the source); its file is checked as it is
    read (each chunk against its checksum), and a file missing, cut short or not the one
    its index describes gives its days back to the source then. A day without rows of
    the course is kept with no chunks, so the export skips it without reading anything.
    """
    wanted = {p.day: p for p in partitions}
    folders = copy_folders(store)
    days: dict[date, CopiedDay] = {}
    for month in _months(store, folders, {month_of(day) for day in wanted}, course_id):
        held = month.current_days(wanted)
        chunks = month.chunks_of(course_id)
        for day in held:
            days[day] = CopiedDay(wanted[day], month, chunks, len(held))
    rest = sorted(d for d in folders.days if d in wanted and d not in days)
    for day, index in zip(
        rest, read_indexes(store, [_index_path(d) for d in rest], DayIndex), strict=True
    ):
        partition = wanted[day]
        if index is not None and index.is_current(partition):
            days[day] = CopiedDay(partition, index, index.chunks_of(course_id))
    return CourseCopy(store, dict(sorted(days.items())))


def _months(
    store: Location, folders: CopyFolders, wanted: set[str], course_id: int
) -> Iterator[MonthIndex]:
    """The merged months of ``wanted`` whose file holds the course (not left out)."""
    months = sorted(m for m in folders.months if m in wanted)
    paths = [f"{COPY_DIR}/{month_folder(m)}/{INDEX}" for m in months]
    for month, index in zip(months, read_indexes(store, paths, MonthIndex), strict=True):
        if index is not None and index.month == month and course_id not in index.left_out:
            yield index


def _index_path(day: date) -> str:
    return f"{COPY_DIR}/{day_folder(day)}/{INDEX}"


def read_copied_rows(
    store: Location, days: Sequence[CopiedDay], course_id: int
) -> tuple[pl.DataFrame, list[tuple[CopiedDay, DamagedCopyError]]]:
    """The course's rows of ``days`` (all columns), and the days found damaged.

    Each file (a day's, or a month's for all of its days here) is one ranged read of
    the course's chunks; every chunk is checked against its crc32 in the index, and
    Polars decodes those very bytes (each chunk is a parquet file of its own), nothing
    else of the file. So an export fetches what its course costs, never whole files,
    on any storage. A damaged file's days contribute no rows: the caller reads them
    from the source.
    """
    files = _by_file([day for day in days if day.chunks])
    if not files:
        return SCAN_SCHEMA.to_frame(), []
    # The storage runs the reads as it finds worth it: at once on S3, where they wait on
    # the network; one after another on a disk (179 small reads ~15 ms, ~45 in threads).
    spans = store.read_ranges([_span(group[0]) for group in files])
    damaged: list[tuple[CopiedDay, DamagedCopyError]] = []
    good: list[tuple[list[CopiedDay], list[bytes]]] = []
    for group, span in zip(files, spans, strict=True):
        chunks = _verified(store, group[0], span)
        if isinstance(chunks, DamagedCopyError):
            damaged += [(day, chunks) for day in group]
        else:
            good.append((group, chunks))
    frames = []
    for scan in _scans(good):
        try:
            frames.append(_scan(scan, course_id))
        except Exception:  # find the file(s) at fault; the others are fine
            for group, chunks in scan:
                try:
                    frames.append(_scan([(group, chunks)], course_id))
                except Exception as exc:
                    problem = f"{store.url_for(group[0].path)}: {type(exc).__name__}: {exc}"
                    damaged += [(day, DamagedCopyError(problem)) for day in group]
    return (pl.concat(frames) if frames else SCAN_SCHEMA.to_frame()), damaged


def _by_file(days: list[CopiedDay]) -> list[list[CopiedDay]]:
    """The days grouped by the file they are read from, in order of first use."""
    groups: dict[str, list[CopiedDay]] = {}
    for day in days:
        groups.setdefault(day.path, []).append(day)
    return list(groups.values())


def _span(day: CopiedDay) -> tuple[str, int, int]:
    """The one range of the day's file that holds the course's chunks."""
    first, last = day.index.chunks[day.chunks[0]], day.index.chunks[day.chunks[-1]]
    return day.path, first.offset, last.offset + last.length


def _verified(
    store: Location, day: CopiedDay, span: bytes | Exception
) -> list[bytes] | DamagedCopyError:
    """The course's chunks of the day's file, each checked, or why it is damaged."""
    if isinstance(span, Exception):  # gone (rebuilt meanwhile), unreadable
        return DamagedCopyError(f"{store.url_for(day.path)}: {type(span).__name__}: {span}")
    try:
        return checked_chunks(day.index, day.chunks, span, _span(day)[1])
    except DamagedCopyError as exc:
        return DamagedCopyError(f"{store.url_for(day.path)}: {exc}")


Fetched = tuple[list[CopiedDay], list[bytes]]


def _scans(files: list[Fetched]) -> list[list[Fetched]]:
    """Files in Polars scans: days' files together, up to :data:`_SCAN_BYTES` of chunks;
    each month's file alone (its rows of days not read from it are filtered out)."""
    scans: list[list[Fetched]] = []
    size = 0
    for group, chunks in files:
        weight = sum(len(chunk) for chunk in chunks)
        alone = isinstance(group[0].index, MonthIndex)
        if alone or not scans or size + weight > _SCAN_BYTES or _is_month(scans[-1]):
            scans.append([])
            size = 0
        scans[-1].append((group, chunks))
        size += weight
    return scans


def _is_month(scan: list[Fetched]) -> bool:
    return isinstance(scan[0][0][0].index, MonthIndex)


def _scan(files: list[Fetched], course_id: int) -> pl.DataFrame:
    sources = [chunk for _, chunks in files for chunk in chunks]
    frame = (
        pl.scan_parquet(sources, schema=SCAN_SCHEMA, hive_partitioning=False)
        .filter(pl.col("course_id") == course_id)
        .collect()
    )
    held = frozenset().union(*(group[0].index.held_days for group, _ in files))
    used = {day.partition.day for group, _ in files for day in group}
    _check_rows(frame, held)
    if used != held:  # a month's days this export reads from elsewhere, or not at all
        frame = frame.filter(pl.col("event_time").dt.date().is_in(sorted(used)))
    return frame


def _check_rows(frame: pl.DataFrame, held: frozenset[date]) -> None:
    """Belt and braces after the checksums: the rows are of the file's days, of known
    kinds."""
    time = pl.col("event_time")
    problems = frame.select(
        (~pl.col("access_type").is_in(list(ACCESS_TYPE_LABELS)).fill_null(False))
        .any()
        .alias("unknown access type"),
        time.is_null().any().alias("no time"),
        (~time.dt.date().is_in(sorted(held))).any().alias("another day"),
    ).row(0, named=True)
    found = [name for name, bad in problems.items() if bad]
    if found:
        raise DamagedCopyError(f"rows disagree with the index ({', '.join(found)})")
