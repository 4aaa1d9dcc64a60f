"""export-access-data: who accessed which assignment when, as a CSV behind a link."""

from __future__ import annotations

from datetime import datetime

from course_exports.export_records import ExportKind, ExportResult
from course_exports.settings import load_settings
from flows.hooks import export_flow
from flows.parameters import COURSE_ID, REQUEST_ID, REQUESTED_BY, PositiveId, param
from tasks.access_log import access_window, write_access_file_task
from tasks.export import claim_export, conclude, exporting, publish_export
from tasks.request import export_request

KIND = ExportKind.ACCESS_DATA


@export_flow(
    KIND,
    name="export-access-data",
    flow_run_name="access-data · course {course_id}",
    description="A CSV of who accessed the course's assignments when, mailed as a link.",
)
def export_access_data(
    course_id: PositiveId = COURSE_ID,
    requested_by: PositiveId = REQUESTED_BY,
    since: datetime | None = param(
        "Since", "Only events at or after this time (without an offset: UTC)", None
    ),
    until: datetime | None = param(
        "Until", "Only events before this time (without an offset: UTC)", None
    ),
    assignment_ids: list[PositiveId] | None = param(
        "Assignments", "Only project events of these assignment ids (log in/out left out)", None
    ),
    user_ids: list[PositiveId] | None = param("Users", "Only events of these user ids", None),
    timezone: str | None = param(
        "Time zone", "IANA name for the Date/Time column, e.g. Europe/Berlin (default: UTC)", None
    ),
    excel: bool = param("For Excel", "Start the file with a UTF-8 byte-order mark", False),
    request_id: str | None = REQUEST_ID,
    notify: bool = param("Mail the requester", "Send the link by mail when it is ready", False),
) -> ExportResult:
    settings = load_settings()
    request = export_request(
        KIND,
        course_id,
        requested_by,
        request_id,
        notify=notify,
        since=since,
        until=until,
        assignment_ids=assignment_ids,
        user_ids=user_ids,
        timezone=timezone,
        excel=excel,
    )
    checked, claim = claim_export(settings, request)
    if not claim.writes:
        return conclude(settings, request, checked, claim)

    with exporting(settings, request, checked, claim) as export:
        window = access_window(settings, since, until)
        record = export.name_file(f"access-data-{course_id}-{window.end:%Y%m%dT%H%M%SZ}.csv")
        written = write_access_file_task(
            settings,
            record,
            checked.course,
            window,
            assignment_ids=request.selection["assignment_ids"],
            user_ids=request.selection["user_ids"],
            timezone=timezone,
            excel=excel,
            progress=export,
        )
        result = publish_export(settings, request, checked, export, written)
    return result
