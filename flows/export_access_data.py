"""export-access-data: who accessed which assignment when, as a CSV behind a link."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from course_exports.registry import ExportKind, ExportRecord, ExportResult
from course_exports.settings import load_settings
from flows.hooks import export_flow
from flows.parameters import COURSE_ID, REQUEST_ID, REQUESTED_BY, PositiveId, param
from tasks.access_log import AccessPlan, plan_access_export_task, write_access_file_task
from tasks.export import (
    begin_export,
    fail_export,
    find_previous_export,
    publish_export,
    summarise_export,
)
from tasks.mail import send_ready_mail
from tasks.request import check_request_task

KIND = ExportKind.ACCESS_DATA


def describe(plan: AccessPlan, events: int) -> str:
    """What the file holds, in a sentence for the mail and the artifact."""
    start = plan.window.start.strftime("%Y-%m-%d %H:%M")
    end = plan.window.end.strftime("%Y-%m-%d %H:%M")
    return f"{events:,} access events from {start} to {end} UTC, times shown in {plan.timezone}"


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
    parameters: dict[str, Any] = {
        "requested_by": requested_by,
        "since": since,
        "until": until,
        "assignment_ids": sorted(set(assignment_ids)) if assignment_ids else None,
        "user_ids": sorted(set(user_ids)) if user_ids else None,
        "timezone": timezone,
        "excel": excel,
    }
    previous = find_previous_export(settings, KIND, course_id, request_id, parameters)
    if previous is not None:
        print(f"request {request_id} was completed before as export {previous.export_id}")
        return previous

    request = check_request_task(settings, course_id, requested_by)
    record: ExportRecord | None = None
    try:
        plan = plan_access_export_task(
            settings,
            request.course,
            since=since,
            until=until,
            assignment_ids=parameters["assignment_ids"],
            timezone=timezone,
        )
        record = begin_export(
            settings,
            kind=KIND,
            course_id=course_id,
            course_name=request.course.name,
            requested_by=requested_by,
            request_id=request_id,
            parameters=parameters,
            file_name=f"access-data-{course_id}-{plan.window.end:%Y%m%dT%H%M%SZ}.csv",
        )
        written = write_access_file_task(
            settings,
            record,
            request.course,
            plan,
            assignment_ids=parameters["assignment_ids"],
            user_ids=parameters["user_ids"],
            excel=excel,
        )
        result = publish_export(settings, record, written)
    except Exception as exc:
        fail_export(settings, KIND, request.requester, request.course.name, record, exc, notify)
        raise

    contents = describe(plan, written.counts["events"])
    summarise_export(settings, result, contents)
    if notify:
        send_ready_mail(settings, request.requester, result, contents, request.course.timezone)
    print(f"export {result.export_id} ready: {result.file_url} ({result.size_bytes:,} bytes)")
    return result
