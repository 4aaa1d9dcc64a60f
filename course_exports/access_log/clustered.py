"""Our course-clustered copy of the access log: its layout, indexes and checks.

How an export reads it is ``course_copy``; how the indexer builds it, ``indexer`` and
``months``.

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

Small courses have a faster way in: each month's copied days merged into one file,
``_access_log_copy/month=YYYY-MM/<build id>.parquets`` with its ``index.json``
(:class:`MonthIndex`, built by ``months``): the rows of every course with at most
:data:`MONTH_COURSE_ROWS` rows in those days, chunked the same way, and the list of the
courses left out. A median course then makes six ranged reads for half a year instead
of 179, and Polars decodes six small chunks instead of 179 (decoding ~4,000 rows a day of
other courses' chunks was most of such an export's reading). The day files stay as they
are: what a month leaves out (a big course, a day the LMS rewrote since) is read from
them, so a month only ever saves time. A month is used for a day only when it holds the
day from exactly the files the LMS has now; one that fails a check is discarded like a
day (its days come from the source until the indexer merges the month again).

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
from datetime import date, datetime
from typing import NamedTuple, TypeVar

from pydantic import BaseModel, ValidationError

from course_exports.access_log.partitions import DayPartition
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
#: Of a month's merged days (see above); bumped as FORMAT is.
MONTH_FORMAT = 1
#: A course with more rows than this in a month's days is left out of the month's file
#: and read from the days' files (its own chunks there are cheap to read already): 98%
#: of the course-months of the benchmark's lake are under it (the median course has
#: ~600 rows a month), 49% of its events, so the months add ~45% to the copy.
MONTH_COURSE_ROWS = 4 * CHUNK_ROWS


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


#: ``(name, size, content tag)`` of each source file of a day, as a listing gave them.
Stamps = tuple[tuple[str, int, str], ...]


class ChunkedFile(BaseModel):
    """What the index of a file of the copy (a day's or a month's) says about it."""

    format: int
    #: The parquet file in the index's folder, and its size in bytes.
    file: str
    size: int
    rows: int
    #: Every chunk, in file order.
    chunks: list[Chunk]
    built_at: datetime
    #: Seconds the build took (reported by the indexer and the benchmark).
    build_seconds: float = 0.0

    @property
    def folder(self) -> str:
        """The folder of the file and its index under :data:`COPY_DIR`."""
        raise NotImplementedError

    @property
    def held_days(self) -> frozenset[date]:
        """The days whose rows the file holds."""
        raise NotImplementedError

    @property
    def path(self) -> str:
        """The file, relative to the exports root."""
        return f"{COPY_DIR}/{self.folder}/{self.file}"

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


class DayIndex(ChunkedFile):
    """``index.json`` of one copied day."""

    day: date
    source: Stamps

    @property
    def folder(self) -> str:
        return day_folder(self.day)

    @property
    def held_days(self) -> frozenset[date]:
        return frozenset((self.day,))

    def is_current(self, partition: DayPartition) -> bool:
        """Built by this code from exactly the files the LMS has for the day now."""
        return (
            self.format == FORMAT
            and self.day == partition.day
            and same_files(self.source, partition)
        )


class MonthIndex(ChunkedFile):
    """``index.json`` of a month's merged days (see the module's docstring)."""

    month: str  # YYYY-MM
    #: The days merged, each with the source files its day's copy was made from.
    days: dict[date, Stamps]
    #: Courses with more than MONTH_COURSE_ROWS rows in these days: not in the file.
    left_out: list[int]

    @property
    def folder(self) -> str:
        return month_folder(self.month)

    @property
    def held_days(self) -> frozenset[date]:
        return frozenset(self.days)

    def current_days(self, partitions: dict[date, DayPartition]) -> list[date]:
        """The days it holds from exactly the files the LMS has for them now."""
        if self.format != MONTH_FORMAT:
            return []
        return sorted(
            day
            for day, stamps in self.days.items()
            if day in partitions and same_files(stamps, partitions[day])
        )


def same_files(stamps: Stamps, partition: DayPartition) -> bool:
    """``stamps`` are the day's files as the LMS has them now (every one with a content
    tag: without one a rewrite cannot be told)."""
    # Compared as parsed (tuples): an export compares a month's 31 days of stamps, up to
    # 24 files a day on an hourly log, for each of its months.
    return (
        stamps == partition.stamps and bool(stamps) and all(tag for _, _, tag in partition.stamps)
    )


def day_folder(day: date) -> str:
    return f"event_date={day.isoformat()}"


def month_folder(month: str) -> str:
    return f"month={month}"


def month_of(day: date) -> str:
    """The month (``YYYY-MM``) whose merge holds ``day``."""
    return day.strftime("%Y-%m")


Index = TypeVar("Index", bound=ChunkedFile)


def parse_index(data: bytes) -> DayIndex | None:
    """A day's index, or None when it is unreadable (a damaged day, to be rebuilt)."""
    return parse_model(data, DayIndex)


def parse_model(data: bytes, model: type[Index]) -> Index | None:
    """An index of ``model``'s kind, or None when it is unreadable (to be rebuilt)."""
    try:
        return model.model_validate_json(data)
    except (ValidationError, ValueError):
        return None


def read_indexes(store: Location, paths: list[str], model: type[Index]) -> list[Index | None]:
    """The indexes at ``paths`` (None for one unreadable, or dropped since the listing
    that named it: by a refresh, the purge or an export that found its file damaged)."""
    try:
        blobs = store.read_many(paths)
    except FileNotFoundError:
        blobs = [_read_or_nothing(store, path) for path in paths]
    return [parse_model(data, model) for data in blobs]


def _read_or_nothing(store: Location, path: str) -> bytes:
    try:
        return store.read_bytes(path)
    except FileNotFoundError:
        return b""  # no index: its days are read from the source


def index_format(data: bytes) -> int | None:
    """The ``format`` an index says it has, even one this code cannot read (an older
    release's); None when it says none."""
    try:
        found = json.loads(data).get("format")
    except (ValueError, AttributeError, RecursionError):
        return None
    return found if isinstance(found, int) else None


def index_bytes(index: ChunkedFile) -> bytes:
    return json.dumps(index.model_dump(mode="json"), separators=(",", ":")).encode()


class CopySurvey(NamedTuple):
    """The copy's files and their sizes, from one listing: per day, and per month."""

    days: dict[date, dict[str, int]]
    months: dict[str, dict[str, int]]


def survey_copy(store: Location) -> CopySurvey:
    """Every copied day's and merged month's files and their sizes, from one listing."""
    days: dict[date, dict[str, int]] = {}
    months: dict[str, dict[str, int]] = {}
    for entry in store.iter_files(COPY_DIR):
        folder, _, name = entry.path.removeprefix(f"{COPY_DIR}/").partition("/")
        if "/" in name:
            continue  # a folder inside a day's or a month's: not ours
        found = _folder_of(folder)
        if isinstance(found, date):
            days.setdefault(found, {})[name] = entry.size
        elif found is not None:
            months.setdefault(found, {})[name] = entry.size
    return CopySurvey(days, months)


class CopyFolders(NamedTuple):
    """The copy's day and month folders (their files unlisted)."""

    days: frozenset[date]
    months: frozenset[str]


def copy_folders(store: Location) -> CopyFolders:
    """The copy's day and month folders, from a listing of its top folder alone.

    What an export needs to know which indexes to read: it stats no file (~15 ms for
    the 370 files of six months here, a tenth of a small course's export), since it
    checks the bytes it reads of each file against the index's checksums anyway; the
    indexer's survey (:func:`survey_copy`) checks each file's size.
    """
    days, months = set(), set()
    for name in store.list_names(COPY_DIR):
        found = _folder_of(name)
        if isinstance(found, date):
            days.add(found)
        elif found is not None:
            months.add(found)
    return CopyFolders(frozenset(days), frozenset(months))


def _folder_of(name: str) -> date | str | None:
    """The day (``event_date=YYYY-MM-DD``) or month (``month=YYYY-MM``) a folder of the
    copy holds; None for a name that is not ours."""
    kind, _, when = name.partition("=")
    try:
        if kind == "event_date":
            return date.fromisoformat(when)
        if kind == "month" and when == date.fromisoformat(f"{when}-01").strftime("%Y-%m"):
            return when
    except ValueError:
        pass
    return None


def checked_chunks(
    index: ChunkedFile, numbers: Sequence[int], data: bytes, start: int
) -> list[bytes]:
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


def publish_index(store: Location, index: ChunkedFile) -> None:
    """Write the index of a file just written, then remove the folder's older files: a
    reader sees the old pair or the new one (an export still reading an old file then
    finds it gone and reads those days from the source)."""
    store.write_bytes_atomic(index_bytes(index), COPY_DIR, index.folder, INDEX)
    for entry in list(store.iter_files(COPY_DIR, index.folder)):
        if entry.path.rsplit("/", 1)[-1] not in (index.file, INDEX):
            store.delete(entry.path)


def discard_index(store: Location, index: ChunkedFile) -> None:
    """Drop a damaged file's index (if it is still the one read): the indexer rebuilds
    the day or merges the month again."""
    path = (COPY_DIR, index.folder, INDEX)
    try:
        current = parse_model(store.read_bytes(*path), type(index))
    except FileNotFoundError:
        return
    if current == index:
        store.delete(*path)
        log.warning("dropped the index of the damaged copy in %s", index.folder)
