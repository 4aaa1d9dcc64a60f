"""The access-data CSV (CONTRACT 4.2) from the hive-partitioned access log (CONTRACT 2).

How it stays fast and small:

* Only the day partitions that intersect the window are read, from one listing.
* Day partitions do not overlap in time, so the CSV is produced a batch at a time,
  oldest first: each batch is sorted on its own and the concatenation is ordered. No
  global sort, and memory is bounded by the batch size (about :data:`_BATCH_ROWS` rows
  of the course), not by the log, the course or the density of a day: quiet days are
  grouped into one batch, a very busy day is read in time slices.
* Each batch is one Polars scan with the course predicate pushed into the Parquet
  reader, which decodes the other columns only for the matching rows: for a course that
  is a sliver of the log, most bytes are never turned into values.
* Users, roster and assignments are rendered to CSV cells once (formula guard included)
  and joined per batch; timestamps, labels and quoting are Polars expressions and the
  Polars CSV writer, never a Python loop over rows.
* The next batches are read in a background thread and the CSV is handed to ``out`` by
  another, so reading (S3 round trips), rendering and writing overlap.

Choices the contract leaves open, made here:

* Row order: ``event_time``, then :data:`SORT_KEYS` (user_id, access_type,
  assignment_id, project_path, ip; nulls first). That is every column of an event, so
  only identical rows tie, and their order changes no byte.
* Date/Time drops the fraction of a second (12.999 s is written as 12 s), never rounds.
* A text cell that is empty or null is an empty field; login and logout rows have an
  empty Assignment even if the LMS wrote an assignment id on them.
* ``event_time`` may be stored in ms, us or ns but must be UTC; a naive or other-zone
  timestamp is refused, not guessed at. Strings may be string, large_string, string_view
  or dictionary-encoded. Other columns must be exactly as in the contract.
* Broken rows of the course inside the window (unknown or null access_type, null
  event_time, a row filed under another day's partition) stop the export even when the
  user or assignment filters would have dropped them.
"""

from __future__ import annotations

import calendar
import math
import posixpath
import queue
import re
import threading
import zoneinfo
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from typing import Any, BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from course_exports.errors import InputError, LakeDataError
from course_exports.storage import Location
from course_exports.tabular import csv_bytes, spreadsheet_cell

ACCESS_TYPE_LABELS: dict[str, str] = {
    "login": "Log In",
    "logout": "Log Out",
    "project_open": "Project Open",
    "project_close": "Project Close",
}
CSV_HEADER = (
    "Username,Email,First Name,Last Name,Date/Time,Access Type,Assignment,Role,"
    "Project Path,IP Address"
)
UTF8_BOM = b"\xef\xbb\xbf"
ACCESS_LOG_DIR = "access_log"

#: Oldest first; equal times are ordered by the remaining columns, nulls first. Together
#: they are every column of an event row (course_id is fixed), so the order is total.
SORT_KEYS: tuple[str, ...] = (
    "event_time",
    "user_id",
    "access_type",
    "assignment_id",
    "project_path",
    "ip",
)

#: Footer types the engine accepts. Timestamps may use any Parquet unit (ms/us/ns, the
#: engine normalises to us) but must be UTC: a naive or non-UTC column would shift every
#: row, so it is refused rather than guessed at.
_UTC_NAMES = frozenset({"UTC", "Etc/UTC", "+00:00"})
_INT_COLUMNS = ("user_id", "course_id", "assignment_id")
_STRING_COLUMNS = ("access_type", "project_path", "ip")
REQUIRED_COLUMNS: tuple[str, ...] = ("event_time", *_INT_COLUMNS, *_STRING_COLUMNS)
#: The log's columns as the LMS writes them (CONTRACT 2); readers also accept other
#: timestamp units and string encodings (see ``_type_problem``).
ACCESS_LOG_SCHEMA = pa.schema(
    [
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.int64()),
        ("course_id", pa.int64()),
        ("assignment_id", pa.int64()),
        ("access_type", pa.string()),
        ("project_path", pa.string()),
        ("ip", pa.string()),
    ]
)

_PARTITION_RE = re.compile(r"event_date=(\d{4}-\d{2}-\d{2})")
_ONE_DAY = timedelta(days=1)
# ISO 8601 with the offset as +hh:mm; %S alone truncates the fraction of a second.
_ISO_SECONDS = "%Y-%m-%dT%H:%M:%S%:z"
_EVENT_TIME = pl.Datetime("us", "UTC")

# Footer reads are round trips on S3, not CPU: a wide pool hides their latency.
_FOOTER_THREADS = 16
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
# Rows rendered to CSV text at a time, and chunks of text waiting for the writer thread:
# together they bound the CSV bytes in memory (~4 x 131k rows x ~150 bytes).
_RENDER_ROWS = 131_072
_WRITE_QUEUE = 4


# ---------------------------------------------------------------------------- parameters


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already (CONTRACT 4.2)."""
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def retention_cutoff(now: datetime, months: int) -> datetime:
    """``now`` minus ``months`` calendar months, in UTC, clamping the day to the month.

    Aug 31 minus 6 months is Feb 28 (29 in a leap year): the oldest instant still kept.
    """
    if months < 0:
        raise ValueError(f"retention months must be >= 0, got {months}")
    now = as_utc(now)
    index = now.year * 12 + (now.month - 1) - months
    year, month0 = divmod(index, 12)
    day = min(now.day, calendar.monthrange(year, month0 + 1)[1])
    return now.replace(year=year, month=month0 + 1, day=day)


@cache
def _timezones_by_folded_name() -> dict[str, str]:
    return {name.casefold(): name for name in zoneinfo.available_timezones()}


def parse_timezone(name: str | None) -> str:
    """The canonical IANA name for ``name`` ("UTC" when None); InputError if unknown.

    Case is forgiven (``america/new_york``) because people type these by hand. The name
    must be known to both zoneinfo and Polars' time-zone database, which renders it.
    """
    if name is None:
        return "UTC"
    cleaned = name.strip()
    canonical = _timezones_by_folded_name().get(cleaned.casefold(), cleaned)
    try:
        zoneinfo.ZoneInfo(canonical)
        pl.Series([0], dtype=_EVENT_TIME).dt.convert_time_zone(canonical)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, pl.exceptions.PolarsError):
        raise InputError(
            "timezone", f"{name!r} is not an IANA time zone name (e.g. 'Europe/Berlin')"
        ) from None
    return canonical


@dataclass(frozen=True)
class AccessWindow:
    """Events with ``start <= event_time < end`` are exported (both UTC aware)."""

    start: datetime
    end: datetime

    @property
    def is_empty(self) -> bool:
        return self.start >= self.end


def access_window(
    now: datetime, retention_months: int, since: datetime | None, until: datetime | None
) -> AccessWindow:
    """The retention window ``[now - months, now)`` intersected with ``[since, until)``.

    ``until`` later than ``now`` is capped at ``now``: the export is a snapshot of what
    had happened when the run started, even while the LMS keeps appending to today.
    A window that ends up empty (e.g. ``since`` before the retention and ``until`` too)
    is not an error: the export then has the header only.
    """
    now = as_utc(now)
    start = retention_cutoff(now, retention_months)
    end = now
    if since is not None and until is not None and as_utc(since) >= as_utc(until):
        raise InputError(
            "since",
            f"must be before until ({as_utc(since).isoformat()} is not before "
            f"{as_utc(until).isoformat()})",
        )
    if since is not None:
        start = max(start, as_utc(since))
    if until is not None:
        end = min(end, as_utc(until))
    return AccessWindow(start=start, end=max(start, end))


# ---------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class DayPartition:
    """One ``access_log/event_date=YYYY-MM-DD/`` folder: its day and its parquet files."""

    day: date
    files: tuple[str, ...]
    #: Total size of ``files`` in bytes when the listing knew it (used to size batches).
    size_bytes: int = 0

    @property
    def start(self) -> datetime:
        return datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + _ONE_DAY


def _is_hidden(name: str) -> bool:
    # Hive convention (Spark, Arrow): "_SUCCESS", ".part.tmp" are bookkeeping, not data.
    return name.startswith((".", "_"))


def _partition_day(lake: Location, path: str, name: str) -> date:
    match = _PARTITION_RE.fullmatch(name)
    if match is None:
        raise LakeDataError(
            lake.url_of(path), "not a day partition (expected access_log/event_date=YYYY-MM-DD)"
        )
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        raise LakeDataError(lake.url_of(path), f"{match.group(1)} is not a date") from None


def _list_access_log(lake: Location) -> dict[str, dict[str, Any]]:
    lake.refresh()
    try:
        found: dict[str, dict[str, Any]] = lake.fs.find(
            lake.path(ACCESS_LOG_DIR), withdirs=True, detail=True
        )
    except FileNotFoundError:
        return {}
    return found


def list_day_partitions(lake: Location, window: AccessWindow) -> list[DayPartition]:
    """The day partitions whose UTC day intersects ``window``, oldest first.

    One recursive listing of ``access_log/``. Hidden entries (``.x``, ``_x``) and files
    that do not end in ``.parquet`` are ignored; anything else that breaks the layout (a
    folder not named ``event_date=YYYY-MM-DD``, a folder inside a partition, a data file
    outside one) raises LakeDataError naming it. No ``access_log/`` means no events.
    """
    base = lake.path(ACCESS_LOG_DIR)
    days: dict[date, list[tuple[str, int]]] = {}
    for path, info in _list_access_log(lake).items():
        path = path.rstrip("/")
        rel = posixpath.relpath(path, base)
        if rel == ".":
            continue
        parts = rel.split("/")
        if any(_is_hidden(p) for p in parts):
            continue
        is_dir = info.get("type") == "directory"
        if len(parts) == 1 and not is_dir:
            if parts[0].endswith(".parquet"):
                raise LakeDataError(lake.url_of(path), "data file outside a day partition")
            continue
        day = _partition_day(lake, posixpath.join(base, parts[0]), parts[0])
        if len(parts) > 2 or (len(parts) == 2 and is_dir):
            raise LakeDataError(lake.url_of(path), "unexpected folder inside a day partition")
        entries = days.setdefault(day, [])
        if len(parts) == 2 and parts[1].endswith(".parquet"):
            entries.append((path, int(info.get("size") or 0)))
    partitions = []
    for day in sorted(days):
        files = sorted(days[day])
        partition = DayPartition(
            day=day,
            files=tuple(p for p, _ in files),
            size_bytes=sum(s for _, s in files),
        )
        if files and partition.start < window.end and partition.end > window.start:
            partitions.append(partition)
    return partitions


# ---------------------------------------------------------------------------- footers


def _type_problem(name: str, actual: pa.DataType) -> str | None:
    """Why a column's arrow type is refused, or None when the engine can read it."""
    if pa.types.is_dictionary(actual):
        actual = actual.value_type
    if name == "event_time":
        if pa.types.is_timestamp(actual) and actual.unit != "s" and actual.tz in _UTC_NAMES:
            return None
        expected = "timestamp[us, tz=UTC]"
    elif name in _INT_COLUMNS:
        if actual == pa.int64():
            return None
        expected = "int64"
    else:
        if actual in (pa.string(), pa.large_string(), pa.string_view()):
            return None
        expected = "string"
    return f"column {name!r} is {actual}, expected {expected}"


def _check_footer(lake: Location, path: str) -> None:
    url = lake.url_of(path)
    try:
        schema = pq.read_schema(path, filesystem=lake.fs)
    except FileNotFoundError:
        raise LakeDataError(url, "file disappeared while reading (is a purge running?)") from None
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise LakeDataError(url, f"not a readable parquet file: {exc}") from None
    for name in REQUIRED_COLUMNS:
        index = schema.get_field_index(name)
        if index < 0:
            raise LakeDataError(url, f"missing column {name!r}")
        problem = _type_problem(name, schema.field(index).type)
        if problem:
            raise LakeDataError(url, problem)


def check_log_files(lake: Location, partitions: list[DayPartition]) -> int:
    """Check every file's footer (readable, columns and types); the number of files.

    Only footers are read, concurrently, so a broken file stops the run before any row
    is written. The first broken file in day/file order is the one reported.
    """
    paths = [path for partition in partitions for path in partition.files]
    if not paths:
        return 0
    with ThreadPoolExecutor(min(_FOOTER_THREADS, len(paths))) as pool:
        futures = [pool.submit(_check_footer, lake, path) for path in paths]
        for future in futures:
            future.result()
    return len(paths)


# ---------------------------------------------------------------------------- rendering


_USER_CELLS = ("username", "email", "first_name", "last_name")
_SESSION_TYPES = ("login", "logout")


class _People:
    """CSV cells of every user met so far: the four directory cells and the roster role.

    Seeded with the roster; a batch that meets users outside it (people who left the
    course) looks only those up in the directory, once, so the directory (possibly the
    whole platform) is scanned a handful of times per export, not once per row or batch.
    """

    def __init__(self, users: pl.DataFrame, roster: pl.DataFrame) -> None:
        self._users = users.select(
            pl.col("user_id").cast(pl.Int64), *(pl.col(c).cast(pl.String) for c in _USER_CELLS)
        )
        self._roles = roster.select(
            pl.col("user_id").cast(pl.Int64),
            spreadsheet_cell(pl.col("role").cast(pl.String)).alias("role"),
        ).unique("user_id", keep="first", maintain_order=True)
        self.cells = self._lookup(self._roles.select("user_id"))

    def _lookup(self, ids: pl.DataFrame) -> pl.DataFrame:
        found = self._users.join(ids, on="user_id", how="semi").unique(
            "user_id", keep="first", maintain_order=True
        )
        # Ids missing from the directory stay as rows of nulls, so they are not looked up
        # again in the next batch.
        return (
            ids.join(found, on="user_id", how="left")
            .join(self._roles, on="user_id", how="left")
            .select("user_id", *(spreadsheet_cell(pl.col(c)).alias(c) for c in _USER_CELLS), "role")
        )

    def for_batch(self, events: pl.DataFrame) -> pl.DataFrame:
        ids = events.select(pl.col("user_id").unique().drop_nulls())
        new = ids.join(self.cells, on="user_id", how="anti")
        if new.height:
            self.cells = pl.concat([self.cells, self._lookup(new)])
        return self.cells


def _assignment_cells(assignments: pl.DataFrame) -> pl.DataFrame:
    return assignments.select(
        pl.col("assignment_id").cast(pl.Int64),
        spreadsheet_cell(pl.col("label").cast(pl.String)).alias("assignment"),
    ).unique("assignment_id", keep="first", maintain_order=True)


def _render(events: pl.DataFrame, timezone: str) -> pl.DataFrame:
    """The CSV columns, in order, for sorted events already joined with their cells."""
    local = pl.col("event_time")
    if timezone != "UTC":
        local = local.dt.convert_time_zone(timezone)
    return events.select(
        pl.col("username"),
        pl.col("email"),
        pl.col("first_name"),
        pl.col("last_name"),
        local.dt.strftime(_ISO_SECONDS).alias("date_time"),
        pl.col("access_type").replace_strict(ACCESS_TYPE_LABELS, return_dtype=pl.String),
        # Login and logout name no assignment (CONTRACT 4.2), whatever the row says.
        pl.when(pl.col("access_type").is_in(_SESSION_TYPES))
        .then(pl.lit(None, dtype=pl.String))
        .otherwise(pl.col("assignment"))
        .alias("assignment"),
        pl.col("role"),
        spreadsheet_cell(pl.col("project_path")).alias("project_path"),
        spreadsheet_cell(pl.col("ip")).alias("ip"),
    )


# ---------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _Query:
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
        inside = (time >= pl.lit(start, dtype=_EVENT_TIME)) & (
            time < pl.lit(end, dtype=_EVENT_TIME)
        )
        selected = inside
        if self.assignment_ids is not None:
            selected &= pl.col("assignment_id").is_in(self.assignment_ids)
        if self.user_ids is not None:
            selected &= pl.col("user_id").is_in(self.user_ids)
        known = pl.col("access_type").is_in(list(ACCESS_TYPE_LABELS)).fill_null(False)
        return selected | (~known & inside) | time.is_null()


_SCAN_SCHEMA = pl.Schema(
    {
        "event_time": _EVENT_TIME,
        "user_id": pl.Int64(),
        "course_id": pl.Int64(),
        "assignment_id": pl.Int64(),
        "access_type": pl.String(),
        "project_path": pl.String(),
        "ip": pl.String(),
    }
)
# Lets one scan read files whose footers differ in ways _type_problem accepts (ms/ns
# units, "Etc/UTC", dictionary strings) as the single schema above.
_SCAN_CASTS = pl.ScanCastOptions(
    datetime_cast=["nanosecond-downcast", "millisecond-upcast", "convert-timezone"],
    categorical_to_string="allow",
    _internal_call=True,  # the options are marked unstable; the tests pin the behaviour
)


@dataclass
class _Batch:
    """Consecutive days (or a time slice of one day) read, sorted and written together."""

    partitions: list[DayPartition]
    start: datetime  # rows read: start <= event_time < end (already within the window)
    end: datetime
    planned_bytes: int  # the share of the files' bytes this batch stands for
    events: pl.DataFrame | None = None
    error: Exception | None = None

    @property
    def files(self) -> list[str]:
        return [path for partition in self.partitions for path in partition.files]


def _scan(sources: list[str] | list[bytes], query: _Query, batch: _Batch) -> pl.LazyFrame:
    # One scan over all files of a batch: Polars pipelines the files itself, and the
    # course predicate is evaluated on course_id before other columns are decoded.
    return (
        pl.scan_parquet(
            sources,
            schema=_SCAN_SCHEMA,
            cast_options=_SCAN_CASTS,
            extra_columns="ignore",
            hive_partitioning=False,
        )
        .filter(pl.col("course_id") == query.course_id)
        .select("event_time", "user_id", "assignment_id", "access_type", "project_path", "ip")
        .filter(query.keep(batch.start, batch.end))
    )


class _Sources:
    """What Polars scans: local paths, or the bytes of remote objects.

    Remote objects are fetched whole with one call (s3fs fetches them concurrently):
    every file holds all courses and the course's rows can be in any row group. The
    last fetch is kept, because the slices of a dense day read the same files again.
    """

    def __init__(self, lake: Location) -> None:
        self._lake = lake
        self._last: tuple[tuple[str, ...], list[bytes]] | None = None

    def get(self, files: list[str]) -> list[str] | list[bytes]:
        if self._lake.is_local:
            return list(files)
        key = tuple(files)
        if self._last is None or self._last[0] != key:
            self._last = None  # let the old bytes go before fetching the new ones
            blobs: dict[str, bytes] = self._lake.fs.cat(files, on_error="raise")
            self._last = (key, [blobs[path] for path in files])
        return self._last[1]


def _read_batch(sources: _Sources, batch: _Batch, query: _Query) -> _Batch:
    try:
        batch.events = _scan(sources.get(batch.files), query, batch).collect()
    except Exception as exc:  # reported with the file's name by _explain_failure
        batch.error = exc
    return batch


class _Planner:
    """Cuts the days into batches of about :data:`_BATCH_ROWS` rows of the course.

    How many of the course's rows a byte of log holds is known only after reading some.
    Until then the guess is that every row is the course's (:data:`_ROWS_PER_BYTE_GUESS`),
    afterwards the larger of the overall and the latest ratio, so a course that gets
    busier is caught at the next batch. Quiet days are grouped (up to
    :data:`_BATCH_MAX_BYTES` of files, which remote reads hold in memory); a day expected
    to hold more than two batches is read in time slices, re-reading its files, so that
    memory stays bounded by the batch size however dense the log gets.
    """

    def __init__(self, window: AccessWindow) -> None:
        self._window = window
        self._rows = 0
        self._bytes = 0
        self._latest: float | None = None

    def observe(self, batch: _Batch) -> None:
        if batch.events is None or not batch.planned_bytes:
            return
        self._rows += batch.events.height
        self._bytes += batch.planned_bytes
        self._latest = batch.events.height / batch.planned_bytes

    def _rows_per_byte(self) -> float:
        if self._latest is None:
            return _ROWS_PER_BYTE_GUESS
        return max(self._latest, self._rows / self._bytes)

    def batches(self, days: list[DayPartition]) -> Iterator[_Batch]:
        start, end = self._window.start, self._window.end
        index = 0
        while index < len(days):
            ratio = self._rows_per_byte()
            group, size = [days[index]], days[index].size_bytes
            index += 1
            if size * ratio > 2 * _BATCH_ROWS:
                yield from self._slices(group[0], math.ceil(size * ratio / _BATCH_ROWS))
                continue
            # A day of unknown size (a hand-made partition list) stays a batch of its own.
            while size and index < len(days) and days[index].size_bytes:
                grown = size + days[index].size_bytes
                if grown > _BATCH_MAX_BYTES or grown * ratio > _BATCH_ROWS:
                    break
                group.append(days[index])
                size = grown
                index += 1
            yield _Batch(group, start, end, size)

    def _slices(self, day: DayPartition, count: int) -> Iterator[_Batch]:
        lo, hi = max(day.start, self._window.start), min(day.end, self._window.end)
        span_us = (hi - lo) // timedelta(microseconds=1)
        bounds = [lo + timedelta(microseconds=span_us * k // count) for k in range(count + 1)]
        # The outer slices reach to the window's ends, so a row filed under the wrong day
        # is still read, and reported by _check_rows, as it is when the day is not sliced.
        bounds[0], bounds[-1] = self._window.start, self._window.end
        share = day.size_bytes // count
        for k in range(count):
            yield _Batch([day], bounds[k], bounds[k + 1], share)


class _Prefetcher:
    """Reads batches in a background thread, at most :data:`_PREFETCH_BATCHES` ahead.

    Polars and s3fs release the GIL while they read, so the next batch's I/O and
    decoding overlap the rendering of the current one.
    """

    def __init__(self, lake: Location, days: list[DayPartition], query: _Query) -> None:
        self._query = query
        self._sources = _Sources(lake)
        self._planner = _Planner(query.window)
        self._plan = self._planner.batches(days)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="access-log-read")
        self._pending: deque[Future[_Batch]] = deque()

    def _submit(self) -> None:
        while len(self._pending) <= _PREFETCH_BATCHES:
            batch = next(self._plan, None)
            if batch is None:
                return
            self._pending.append(self._pool.submit(_read_batch, self._sources, batch, self._query))

    def __iter__(self) -> Iterator[_Batch]:
        self._submit()
        while self._pending:
            batch = self._pending.popleft().result()
            self._planner.observe(batch)
            self._submit()
            yield batch

    def __enter__(self) -> _Prefetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self._pending:
            future.cancel()
        self._pool.shutdown(wait=True)


class _Writer:
    """Calls ``out.write`` from one background thread, in order, with a bounded queue.

    Writing (page cache, or an S3 part upload inside fsspec's writer) then overlaps the
    rendering of the next rows instead of stalling it.
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=_WRITE_QUEUE)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="access-csv-write", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while (data := self._queue.get()) is not None:
            if self._error is None:
                try:
                    self._out.write(data)
                except BaseException as exc:  # re-raised in the caller's thread
                    self._error = exc

    def write(self, data: bytes) -> None:
        self._raise_error()
        self._queue.put(data)

    def _raise_error(self) -> None:
        if self._error is not None:
            raise self._error

    def __enter__(self) -> _Writer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self._queue.put(None)
        self._thread.join()
        if exc_type is None:  # otherwise the caller's own error is the one to report
            self._raise_error()


def _read_file(lake: Location, path: str, query: _Query, batch: _Batch) -> pl.LazyFrame:
    return _scan(_Sources(lake).get([path]), query, batch)


def _explain_failure(lake: Location, batch: _Batch, query: _Query) -> LakeDataError:
    """A read of several files failed: find the file and say what is wrong with it."""
    for path in batch.files:
        _check_footer(lake, path)
        try:
            _read_file(lake, path, query, batch).collect()
        except FileNotFoundError:
            return LakeDataError(lake.url_of(path), "file disappeared while reading")
        except Exception as exc:
            return LakeDataError(lake.url_of(path), f"not a readable parquet file: {exc}")
    path = batch.files[0] if batch.files else lake.path(ACCESS_LOG_DIR)
    return LakeDataError(lake.url_of(path), f"could not be read: {batch.error}")


def _first_file_with(
    lake: Location, batch: _Batch, query: _Query, condition: pl.Expr
) -> tuple[str, dict[str, Any]]:
    """The first file of the batch holding a row that matches, and that row."""
    for path in batch.files:
        rows = _read_file(lake, path, query, batch).filter(condition).head(1).collect()
        if rows.height:
            return lake.url_of(path), rows.row(0, named=True)
    raise AssertionError("a row of the batch is in none of its files")


def _check_rows(lake: Location, batch: _Batch, query: _Query, events: pl.DataFrame) -> None:
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
        outside = (pl.col("event_time") < partition.start) | (pl.col("event_time") >= partition.end)
        for path in partition.files:
            rows = _read_file(lake, path, query, batch).filter(outside).head(1).collect()
            if rows.height:
                raise LakeDataError(
                    lake.url_of(path),
                    f"event_time {rows['event_time'][0].isoformat()} is not on the "
                    f"partition's day {partition.day.isoformat()}",
                )


# ---------------------------------------------------------------------------- the CSV


@dataclass(frozen=True)
class AccessCsvStats:
    """What was written: data rows (header excluded), day partitions and files read."""

    rows: int
    days: int
    files: int


def write_access_csv(
    lake: Location,
    partitions: list[DayPartition],
    out: BinaryIO,
    *,
    course_id: int,
    window: AccessWindow,
    assignments: pl.DataFrame,
    roster: pl.DataFrame,
    users: pl.DataFrame,
    assignment_ids: Sequence[int] | None = None,
    user_ids: Sequence[int] | None = None,
    timezone: str = "UTC",
    excel: bool = False,
) -> AccessCsvStats:
    """Write the access CSV of one course (CONTRACT 4.2) to ``out``, oldest row first.

    ``partitions`` come from :func:`list_day_partitions`; days outside ``window`` are
    skipped. ``assignment_ids`` keeps only project events of those assignments (login
    and logout have none, so they go); ``user_ids`` keeps only those users; an empty
    sequence selects nothing. ``out`` only receives ``write(bytes)`` calls, in order.
    Broken log data raises LakeDataError, possibly after some rows were written: the
    caller publishes the file only when this returns.
    """
    timezone = parse_timezone(timezone)
    query = _Query(
        course_id=course_id,
        window=window,
        assignment_ids=None if assignment_ids is None else tuple(int(i) for i in assignment_ids),
        user_ids=None if user_ids is None else tuple(int(i) for i in user_ids),
    )
    days = sorted(
        (p for p in partitions if p.files and p.start < window.end and p.end > window.start),
        key=lambda p: p.day,
    )
    people = _People(users, roster)
    assignment_cells = _assignment_cells(assignments)

    rows = 0
    with _Writer(out) as writer, _Prefetcher(lake, days, query) as prefetcher:
        writer.write((UTF8_BOM if excel else b"") + CSV_HEADER.encode() + b"\r\n")
        for batch in prefetcher:
            if batch.error is not None:
                raise _explain_failure(lake, batch, query) from batch.error
            assert batch.events is not None
            _check_rows(lake, batch, query, batch.events)
            rows += _write_batch(writer, batch.events, people, assignment_cells, timezone)
    return AccessCsvStats(rows=rows, days=len(days), files=sum(len(d.files) for d in days))


def _write_batch(
    writer: _Writer,
    events: pl.DataFrame,
    people: _People,
    assignment_cells: pl.DataFrame,
    timezone: str,
) -> int:
    if not events.height:
        return 0
    joined = (
        events.sort(list(SORT_KEYS), nulls_last=False)
        .join(people.for_batch(events), on="user_id", how="left", maintain_order="left")
        .join(assignment_cells, on="assignment_id", how="left", maintain_order="left")
    )
    for offset in range(0, joined.height, _RENDER_ROWS):
        writer.write(csv_bytes(_render(joined.slice(offset, _RENDER_ROWS), timezone)))
    return joined.height
