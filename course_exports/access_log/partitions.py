"""The day partitions of the access log: one listing, the layout checked (shared with the purge)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from course_exports.access_log.window import AccessWindow
from course_exports.errors import LakeDataError
from course_exports.storage import Location

ACCESS_LOG_DIR = "access_log"

_PARTITION_RE = re.compile(r"event_date=(\d{4}-\d{2}-\d{2})")
ONE_DAY = timedelta(days=1)

# ---------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class DayPartition:
    """One ``access_log/event_date=YYYY-MM-DD/`` folder: its day and its parquet files."""

    day: date
    files: tuple[str, ...]
    #: Total size of ``files`` in bytes when the listing knew it (used to size batches).
    size_bytes: int = 0
    #: ``(file name, size, content tag)`` of each file, from the listing: it changes when
    #: the LMS adds, removes or rewrites a file of the day (see ``clustered``).
    stamps: tuple[tuple[str, int, str | None], ...] = ()

    @property
    def start(self) -> datetime:
        return day_start(self.day)

    @property
    def end(self) -> datetime:
        return self.start + ONE_DAY


def day_start(day: date) -> datetime:
    """Midnight UTC starting ``day``."""
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _partition_day(lake: Location, name: str) -> date:
    """The day of the folder ``name`` under ``access_log/``."""
    match = _PARTITION_RE.fullmatch(name)
    if match is None:
        raise LakeDataError(
            lake.url_for(ACCESS_LOG_DIR, name),
            "not a day partition (expected access_log/event_date=YYYY-MM-DD)",
        )
    try:
        return date.fromisoformat(match.group(1))
    except ValueError:
        raise LakeDataError(
            lake.url_for(ACCESS_LOG_DIR, name), f"{match.group(1)} is not a date"
        ) from None


def list_day_partitions(lake: Location, window: AccessWindow) -> list[DayPartition]:
    """The day partitions whose UTC day intersects ``window``, oldest first.

    One recursive listing of ``access_log/``. Hidden entries (``.x``, ``_x``: bookkeeping
    by the Hive convention of Spark and Arrow, as ``_SUCCESS``) and files that do not end in ``.parquet`` are ignored; anything else that breaks the layout (a
    folder not named ``event_date=YYYY-MM-DD``, a folder inside a partition, a data file
    outside one) raises LakeDataError naming it. No ``access_log/`` means no events.
    """
    # A day's files: (name, size, tag). Names are joined to the folder's path once per
    # day, and each folder's name parsed once, not per file: a log of hourly files lists
    # thousands in every export (~15 µs a file here was a third of a small export's).
    days: dict[date, list[tuple[str, int, str | None]]] = {}
    below = len(ACCESS_LOG_DIR) + 1
    folder, entries = "", []  # the folder of the entry before: a listing goes folder by folder
    for path, size, tag in lake.iter_tags(ACCESS_LOG_DIR):
        if "/." in path or "/_" in path:  # a hidden name below access_log/
            continue
        name_in, slash, name = path[below:].partition("/")
        if not slash:
            if name_in.endswith(".parquet"):
                raise LakeDataError(lake.url_for(path), "data file outside a day partition")
            continue
        if name_in != folder:
            day = _partition_day(lake, name_in)
            folder, entries = name_in, days.setdefault(day, [])
        if "/" in name:
            inner = lake.path(ACCESS_LOG_DIR, name_in, name.partition("/")[0])
            raise LakeDataError(lake.url_of(inner), "unexpected folder inside a day partition")
        if name.endswith(".parquet"):
            entries.append((name, size, tag))
    partitions = []
    for day in sorted(days):
        files = sorted(days[day])
        start = day_start(day)  # a day outside the window makes no partition
        if not files or start >= window.end or start + ONE_DAY <= window.start:
            continue
        folder = partition_folder(lake, day)  # the folder's own name: the regex admits no other
        partitions.append(
            DayPartition(
                day=day,
                files=tuple(f"{folder}/{name}" for name, _, _ in files),
                size_bytes=sum(s for _, s, _ in files),
                stamps=tuple(files),
            )
        )
    return partitions


def partition_folder(location: Location, day: date, base: str = ACCESS_LOG_DIR) -> str:
    """The folder of ``day`` under ``base`` (the log's own, or our copy's)."""
    return location.path(base, f"event_date={day.isoformat()}")
