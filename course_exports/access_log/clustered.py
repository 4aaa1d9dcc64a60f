"""Our course-clustered copy of the access log, as exports read it.

The lake is the LMS's and read-only, and its day files hold every course in no useful
order, so without help an export of a course of 3,000 events reads all 30 million. We
keep a copy in our own storage, under the exports root in the reserved folder
:data:`COPY_DIR` (never an export's: export folders are ``<course id>/`` and
``projects/``)::

    _access_log_copy/event_date=YYYY-MM-DD/<build id>.parquets
        the day's rows sorted by course_id, then SORT_KEYS, as *chunks* back to back:
        each chunk a whole parquet file of its own (one row group, zstd, written by
        Polars) holding either whole courses, about CHUNK_ROWS rows together, or the
        rows of one course that has CHUNK_ROWS or more that day
    _access_log_copy/event_date=YYYY-MM-DD/index.json
        written after the file: the source files it was made from (name, size, content
        tag), the file's name and size, and each chunk's first and last course, rows,
        byte span and crc32

An export reads a day from the copy only when it is *current* (its index names exactly
the files the LMS has now, same sizes and content tags) and *intact*, and then only the
chunks that hold its course: one ranged read a day, on any storage. Every other day
comes from the source. So the CSV never depends on whether or when the indexer ran, and
is byte-identical either way.

Nothing read from the copy is trusted: the file's size must match the index, and every
chunk the export uses must match its crc32 in the index before Polars decodes it; the
bytes checked are the bytes decoded (a chunk needs no footer from elsewhere in the
file). The rows must then be of the day, with known access types. Anything else is a
:class:`DamagedCopyError`: the reader reads that day from the source, and drops the
index so the next indexer run rebuilds the day (``indexer``).

Format 1 was one parquet file a day in row groups of 4,096 rows: an export then read
the course's span and the footer (two reads a day) and Polars parsed each day's footer
of ~40 row groups; a small course's 179 copied days cost twice what chunks cost.
"""

from __future__ import annotations

import bisect
import json
import logging
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import NamedTuple

import polars as pl
from pydantic import BaseModel, ValidationError

from course_exports.access_log.partitions import DayPartition
from course_exports.access_log.schema import ACCESS_TYPE_LABELS, SCAN_SCHEMA
from course_exports.storage import Location

log = logging.getLogger(__name__)

#: The copy's folder under the exports root.
COPY_DIR = "_access_log_copy"
INDEX = "index.json"
#: Bumped when the file layout changes: older copies are then rebuilt, never misread.
FORMAT = 2
#: Rows of small courses packed into one chunk (a chunk closes once it has this many;
#: a course with this many rows or more that day is a chunk of its own). A small
#: course's export decodes fewer than 2 x CHUNK_ROWS rows of a day: a few tens of KB,
#: while a day of 170,000 events is about 40 chunks, each with its own small footer.
CHUNK_ROWS = 4_096
#: Chunk bytes per Polars scan, so memory stays bounded whatever a batch holds.
_SCAN_BYTES = 64 * 2**20


class DamagedCopyError(Exception):
    """A day of the copy disagrees with its index or fails a check: not to be used."""


class Chunk(NamedTuple):
    """One chunk of a copied day as the index lists it (a JSON array of seven numbers)."""

    first: int  # the first and last course_id of its rows
    last: int
    rows: int
    courses: int  # distinct courses: 1 for a course's own chunk
    offset: int  # where its bytes are in the day's file, and their checksum
    length: int
    crc32: int

    def course_rows(self) -> int:
        """A course's rows here: exact in a chunk of its own, else its share (a course
        in a shared chunk has fewer than CHUNK_ROWS rows, so the guess is off by less)."""
        return self.rows if self.courses == 1 else -(-self.rows // self.courses)


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
    #: Every chunk, in file order.
    chunks: list[Chunk]
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

    def chunks_of(self, course_id: int) -> tuple[int, ...]:
        """The chunks that can hold the course's rows (consecutive, maybe none)."""
        lasts = [chunk.last for chunk in self.chunks]
        first = bisect.bisect_left(lasts, course_id)
        found = []
        for index in range(first, len(self.chunks)):
            low, high = self.chunks[index].first, self.chunks[index].last
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


def index_format(data: bytes) -> int | None:
    """The ``format`` an index says it has, even one this code cannot read (an older
    release's); None when it says none."""
    try:
        found = json.loads(data).get("format")
    except (ValueError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, int) else None


def index_bytes(index: DayIndex) -> bytes:
    return json.dumps(index.model_dump(mode="json"), separators=(",", ":")).encode()


@dataclass(frozen=True)
class CopiedDay:
    """A day an export reads from the copy: which file, and the course's chunks."""

    partition: DayPartition
    index: DayIndex
    chunks: tuple[int, ...]

    @property
    def rows(self) -> int:
        """The course's rows of the day, as the index tells them (see Chunk)."""
        return sum(self.index.chunks[i].course_rows() for i in self.chunks)

    @property
    def path(self) -> str:
        """The copy's file, relative to the exports root."""
        return f"{COPY_DIR}/{day_folder(self.index.day)}/{self.index.file}"


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
    is kept with no chunks, so the export skips it without reading anything.
    """
    wanted = {p.day: p for p in partitions}
    copied = survey_copy(store)
    indexes = {
        day: f"{COPY_DIR}/{day_folder(day)}/{INDEX}"
        for day, files in copied.items()
        if INDEX in files and day in wanted
    }
    days: dict[date, CopiedDay] = {}
    order = sorted(indexes)
    try:
        blobs = store.read_many([indexes[d] for d in order])
    except FileNotFoundError:  # an index dropped since the listing (damaged, purged, rebuilt)
        blobs = [_read_or_nothing(store, indexes[d]) for d in order]
    for day, data in zip(order, blobs, strict=True):
        index = parse_index(data)
        partition = wanted[day]
        if index is None or not index.is_current(partition):
            continue
        if copied[day].get(index.file) != index.size:
            continue
        days[day] = CopiedDay(partition, index, index.chunks_of(course_id))
    return CourseCopy(store, days)


def _read_or_nothing(store: Location, path: str) -> bytes:
    try:
        return store.read_bytes(path)
    except FileNotFoundError:
        return b""  # no index: the day is read from the source


def survey_copy(store: Location) -> dict[date, dict[str, int]]:
    """Every copied day's files and their sizes, from one listing of the copy."""
    days: dict[date, dict[str, int]] = {}
    for entry in store.iter_files(COPY_DIR):
        folder, _, name = entry.path.removeprefix(f"{COPY_DIR}/").partition("/")
        if not folder.startswith("event_date=") or "/" in name:
            continue  # not a day's folder, or a folder inside one: not ours
        try:
            day = date.fromisoformat(folder.removeprefix("event_date="))
        except ValueError:
            continue
        days.setdefault(day, {})[name] = entry.size
    return days


def read_copied_rows(
    store: Location, days: Sequence[CopiedDay], course_id: int
) -> tuple[pl.DataFrame, list[tuple[CopiedDay, DamagedCopyError]]]:
    """The course's rows of ``days`` (all columns), and the days found damaged.

    Each day is one ranged read of the course's chunks, concurrently with the other
    days; every chunk is checked against its crc32 in the index, and Polars decodes
    those very bytes (each chunk is a parquet file of its own), nothing else of the
    file. So an export fetches what its course costs, never whole day files, on any
    storage. A damaged day contributes no rows: the caller reads it from the source.
    """
    wanted = [day for day in days if day.chunks]
    if not wanted:
        return SCAN_SCHEMA.to_frame(), []
    # The storage runs the reads as it finds worth it: at once on S3, where they wait on
    # the network; one after another on a disk (179 small reads ~15 ms, ~45 in threads).
    spans = store.read_ranges([_span(day) for day in wanted])
    fetched = [_verified(store, day, span) for day, span in zip(wanted, spans, strict=True)]
    damaged = [
        (d, f) for d, f in zip(wanted, fetched, strict=True) if isinstance(f, DamagedCopyError)
    ]
    good = [
        (d, f) for d, f in zip(wanted, fetched, strict=True) if not isinstance(f, DamagedCopyError)
    ]
    frames = []
    for group in _scan_groups(good):
        try:
            frames.append(_scan(group, course_id))
        except Exception:  # find the day(s) at fault; the others are fine
            for day, chunks in group:
                try:
                    frames.append(_scan([(day, chunks)], course_id))
                except Exception as exc:
                    problem = f"{store.url_for(day.path)}: {type(exc).__name__}: {exc}"
                    damaged.append((day, DamagedCopyError(problem)))
    return (pl.concat(frames) if frames else SCAN_SCHEMA.to_frame()), damaged


def _span(day: CopiedDay) -> tuple[str, int, int]:
    """The one range of the day's file that holds the course's chunks."""
    first, last = day.index.chunks[day.chunks[0]], day.index.chunks[day.chunks[-1]]
    return day.path, first.offset, last.offset + last.length


def _verified(
    store: Location, day: CopiedDay, span: bytes | Exception
) -> list[bytes] | DamagedCopyError:
    """The course's chunks of the day, each checked, or why the day is damaged."""
    if isinstance(span, Exception):  # gone (rebuilt meanwhile), unreadable
        return DamagedCopyError(f"{store.url_for(day.path)}: {type(span).__name__}: {span}")
    try:
        return checked_chunks(day.index, day.chunks, span, _span(day)[1])
    except DamagedCopyError as exc:
        return DamagedCopyError(f"{store.url_for(day.path)}: {exc}")


def _scan_groups(
    days: list[tuple[CopiedDay, list[bytes]]],
) -> list[list[tuple[CopiedDay, list[bytes]]]]:
    """Days in scans of at most :data:`_SCAN_BYTES` of chunks."""
    groups: list[list[tuple[CopiedDay, list[bytes]]]] = []
    size = 0
    for day, chunks in days:
        weight = sum(len(chunk) for chunk in chunks)
        if not groups or size + weight > _SCAN_BYTES:
            groups.append([])
            size = 0
        groups[-1].append((day, chunks))
        size += weight
    return groups


def _scan(days: list[tuple[CopiedDay, list[bytes]]], course_id: int) -> pl.DataFrame:
    sources = [chunk for _, chunks in days for chunk in chunks]
    frame = (
        pl.scan_parquet(sources, schema=SCAN_SCHEMA, hive_partitioning=False)
        .filter(pl.col("course_id") == course_id)
        .collect()
    )
    _check_rows(frame, [day for day, _ in days])
    return frame


def checked_chunks(index: DayIndex, numbers: Sequence[int], data: bytes, start: int) -> list[bytes]:
    """The bytes of chunks ``numbers`` out of ``data`` (the file's bytes from offset
    ``start`` on), each checked against its length and crc32 in the index
    (DamagedCopyError naming the first that fails)."""
    checked = []
    for number in numbers:
        chunk = index.chunks[number]
        piece = data[chunk.offset - start : chunk.offset - start + chunk.length]
        if len(piece) != chunk.length or zlib.crc32(piece) != chunk.crc32:
            raise DamagedCopyError(f"chunk {number} fails its checksum")
        checked.append(piece)
    return checked


def _check_rows(frame: pl.DataFrame, days: Sequence[CopiedDay]) -> None:
    """Belt and braces after the checksums: the rows are of these days, of known kinds."""
    time = pl.col("event_time")
    first, last = days[0].partition.start, days[-1].partition.end
    problems = frame.select(
        (~pl.col("access_type").is_in(list(ACCESS_TYPE_LABELS)).fill_null(False))
        .any()
        .alias("unknown access type"),
        time.is_null().any().alias("no time"),
        ((time < first) | (time >= last)).any().alias("another day"),
    ).row(0, named=True)
    found = [name for name, bad in problems.items() if bad]
    if found:
        raise DamagedCopyError(f"rows disagree with the index ({', '.join(found)})")


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
