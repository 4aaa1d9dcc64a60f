"""Steps of the access-data export: plan the window, write the CSV."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO, cast

from course_exports import access_log, registry
from course_exports.access_log import AccessWindow, DayPartition
from course_exports.access_log.course_copy import CourseCopy, find_current_days
from course_exports.access_log.writer import Progress
from course_exports.export_records import ExportRecord
from course_exports.heartbeat import Heartbeat
from course_exports.lake import Course, check_assignment_ids, read_roster, read_users
from course_exports.settings import Settings
from tasks.export import WrittenFile
from tasks.retry import io_task


@dataclass(frozen=True)
class AccessPlan:
    window: AccessWindow
    timezone: str
    partitions: list[DayPartition]
    #: Source files checked (the days not read from the course-clustered copy).
    files: int
    #: The days read from our course-clustered copy instead of the source.
    copy: CourseCopy | None = None


def access_window(
    settings: Settings, since: datetime | None, until: datetime | None
) -> AccessWindow:
    """The export's window from now: the retention cut-off intersected with since/until
    (no I/O: the request's check refuses a bad one, and the flow names the file after
    its end before the write step plans and writes)."""
    return access_log.access_window(
        datetime.now(UTC), settings.access_retention_months, since, until
    )


def plan_access_export(
    settings: Settings,
    course: Course,
    window: AccessWindow,
    *,
    assignment_ids: Sequence[int] | None,
    timezone: str | None,
) -> AccessPlan:
    """Check the parameters, then find the day partitions inside the window and check them.

    Days whose copy in our course-clustered copy is current are read from it; the other
    days' source files are checked from their footers here, so damaged data stops the
    run before a byte is written.
    """
    tz = access_log.parse_timezone(timezone)
    check_assignment_ids(course, assignment_ids)
    lake = settings.lake()
    partitions = access_log.list_day_partitions(lake, window)
    copy = find_current_days(settings.exports(), partitions, course.id)
    files = access_log.check_log_files(lake, [p for p in partitions if p.day not in copy.days])
    return AccessPlan(window, tz, partitions, files, copy)


def _reporter(heartbeat: Heartbeat) -> Progress:
    """Rows and bytes so far into the export's manifest (the heartbeat only stores them)."""

    def report(rows: int, done: int) -> None:
        heartbeat.update(rows=rows, bytes_done=done)

    return report


def write_access_file(
    settings: Settings,
    record: ExportRecord,
    course: Course,
    window: AccessWindow,
    *,
    assignment_ids: Sequence[int] | None,
    user_ids: Sequence[int] | None,
    timezone: str | None,
    excel: bool,
    progress: Heartbeat | None = None,
) -> WrittenFile:
    """Plan (:func:`plan_access_export`: nothing is written if the log is damaged), then
    write the CSV. One task for both: each task run costs the flow tens of ms (issue 10),
    as much as a small course's whole plan."""
    plan = plan_access_export(
        settings, course, window, assignment_ids=assignment_ids, timezone=timezone
    )
    lake = settings.lake()
    with registry.open_export_file(settings.exports(), record) as out:
        stats = access_log.write_access_csv(
            lake,
            plan.partitions,
            cast(BinaryIO, out),  # HashingWriter is a write-only binary stream
            course_id=course.id,
            window=plan.window,
            assignments=course.assignment_labels(),
            roster=read_roster(lake, course.id),
            users=read_users(lake),
            assignment_ids=assignment_ids,
            user_ids=user_ids,
            timezone=plan.timezone,
            excel=excel,
            copy=plan.copy,
            on_progress=None if progress is None else _reporter(progress),
        )
    counts = {
        "events": stats.rows,
        "days": stats.days,
        "files_read": stats.files,
        "days_from_copy": stats.days_from_copy,
    }
    details = {
        "window_start": plan.window.start.isoformat(),
        "window_end": plan.window.end.isoformat(),
        "timezone": plan.timezone,
    }
    return WrittenFile(out.size, out.sha256, counts, details)


write_access_file_task = io_task("write-access-csv", timeout_seconds=3600, delays=(5, 30))(
    write_access_file
)
