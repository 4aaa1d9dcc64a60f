"""The access-log purge: day partitions past the retention, and their copied days.

Whole ``access_log/event_date=YYYY-MM-DD/`` folders whose day ends at or before the
retention cut-off are dropped, oldest first, a bounded number per run, each with its day
of our course-clustered copy (``access_log.clustered``). The listing follows
:func:`access_log.list_day_partitions`: a folder that breaks the layout stops the purge
with an error naming it before anything is deleted (a lake that does not look like a
lake may be the wrong URL; deleting from it is the last thing to do). Folders holding
no parquet file hold no events and are left alone. A copied day whose source day is
already gone is dropped too.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from pydantic import BaseModel

from course_exports.access_log import (
    AccessWindow,
    as_utc,
    list_day_partitions,
    partition_folder,
    retention_cutoff,
)
from course_exports.access_log.indexer import copy_sizes, remove_day
from course_exports.storage import Location


class PartitionDrop(BaseModel):
    day: date
    folder: str
    #: Files and bytes of the source day (none when only our copy still has the day).
    files: int
    bytes: int
    #: Bytes of our copy of the day.
    copy_bytes: int = 0


class AccessPurgePlan(BaseModel):
    now: datetime
    cutoff: datetime
    #: Oldest first, at most ``max_partitions``.
    due: list[PartitionDrop]
    #: Partitions past retention left for later runs.
    remaining: int


def plan_access_purge(
    lake: Location, store: Location, now: datetime, retention_months: int, max_partitions: int
) -> AccessPurgePlan:
    """The day partitions that lie wholly before the retention cut-off, oldest first.

    A partition holding the cut-off instant is kept: its older rows are filtered out by
    the export itself (CONTRACT 4.2), and dropping it would delete events still inside.
    """
    if max_partitions < 1:
        raise ValueError(f"max_partitions must be at least 1, got {max_partitions}")
    now = as_utc(now)
    cutoff = retention_cutoff(now, retention_months)
    before_cutoff = AccessWindow(datetime.min.replace(tzinfo=UTC), cutoff)
    source = {p.day: p for p in list_day_partitions(lake, before_cutoff) if p.end <= cutoff}
    cutoff_day = cutoff.date()
    copied = {d: n for d, n in copy_sizes(store).items() if d < cutoff_day}
    days = sorted(set(source) | set(copied))
    return AccessPurgePlan(
        now=now,
        cutoff=cutoff,
        due=[
            PartitionDrop(
                day=day,
                folder=partition_folder(lake, day),
                files=len(source[day].files) if day in source else 0,
                bytes=source[day].size_bytes if day in source else 0,
                copy_bytes=copied.get(day, 0),
            )
            for day in days[:max_partitions]
        ],
        remaining=max(0, len(days) - max_partitions),
    )


def drop_partition(lake: Location, store: Location, drop: PartitionDrop) -> None:
    """Delete one whole day of the access log, our copy's first (gone already is fine)."""
    # The path is rebuilt from the day, never taken from a listing: nothing but a day
    # folder of access_log/ can be named here.
    folder = partition_folder(lake, drop.day)
    if folder != drop.folder:
        raise ValueError(f"{drop.folder} is not the access-log folder of {drop.day}")
    # The copy first: a copied day without its source is never read, but it would hold
    # events past the retention until the next run.
    remove_day(store, drop.day)
    lake.delete_tree(lake.relative(folder))


class AccessPurgeSummary(BaseModel):
    """What purge-access-logs deleted (or, in a dry run, would delete)."""

    now: datetime
    cutoff: datetime
    dry_run: bool
    partitions_deleted: int
    first_day: date | None
    last_day: date | None
    files_deleted: int
    bytes_freed: int
    #: Day partitions past retention still there, for the next runs.
    remaining: int


def summarise_access_purge(
    plan: AccessPurgePlan, dropped: list[PartitionDrop], dry_run: bool
) -> AccessPurgeSummary:
    days = sorted(d.day for d in dropped)
    return AccessPurgeSummary(
        now=plan.now,
        cutoff=plan.cutoff,
        dry_run=dry_run,
        partitions_deleted=len(dropped),
        first_day=days[0] if days else None,
        last_day=days[-1] if days else None,
        files_deleted=sum(d.files for d in dropped),
        bytes_freed=sum(d.bytes + d.copy_bytes for d in dropped),
        remaining=plan.remaining + len(plan.due) - len(dropped),
    )
