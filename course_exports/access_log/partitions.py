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
        return datetime(self.day.year, self.day.month, self.day.day, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        return self.start + ONE_DAY


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


def list_day_partitions(lake: Location, window: AccessWindow) -> list[DayPartition]:
    """The day partitions whose UTC day intersects ``window``, oldest first.

    One recursive listing of ``access_log/``. Hidden entries (``.x``, ``_x``) and files
    that do not end in ``.parquet`` are ignored; anything else that breaks the layout (a
    folder not named ``event_date=YYYY-MM-DD``, a folder inside a partition, a data file
    outside one) raises LakeDataError naming it. No ``access_log/`` means no events.
    """
    # A day's files: (name, size, tag). Names are joined to the folder's path once per
    # day, and each folder's name parsed once, not per file: a log of hourly files lists
    # thousands in every export.
    days: dict[date, list[tuple[str, int, str | None]]] = {}
    folders: dict[str, date] = {}
    for entry in lake.iter_files(ACCESS_LOG_DIR):
        parts = entry.path.split("/")[1:]  # below access_log/
        if any(_is_hidden(p) for p in parts):
            continue
        if len(parts) == 1:
            if parts[0].endswith(".parquet"):
                path = lake.path(entry.path)
                raise LakeDataError(lake.url_of(path), "data file outside a day partition")
            continue
        day = folders.get(parts[0])
        if day is None:
            day = _partition_day(lake, lake.path(ACCESS_LOG_DIR, parts[0]), parts[0])
            folders[parts[0]] = day
        if len(parts) > 2:
            folder = lake.path(ACCESS_LOG_DIR, parts[0], parts[1])
            raise LakeDataError(lake.url_of(folder), "unexpected folder inside a day partition")
        entries = days.setdefault(day, [])
        if parts[1].endswith(".parquet"):
            entries.append((parts[1], entry.size, entry.etag))
    partitions = []
    for day in sorted(days):
        files = sorted(days[day])
        folder = partition_folder(lake, day)  # the folder's own name: the regex admits no other
        partition = DayPartition(
            day=day,
            files=tuple(f"{folder}/{name}" for name, _, _ in files),
            size_bytes=sum(s for _, s, _ in files),
            stamps=tuple(files),
        )
        if files and partition.start < window.end and partition.end > window.start:
            partitions.append(partition)
    return partitions


def partition_folder(location: Location, day: date, base: str = ACCESS_LOG_DIR) -> str:
    """The folder of ``day`` under ``base`` (the log's own, or our copy's)."""
    return location.path(base, f"event_date={day.isoformat()}")
