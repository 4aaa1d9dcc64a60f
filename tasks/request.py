"""Who asks for what: the request, and its course and requester checked before anything
is written."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import polars as pl
from prefect.context import FlowRunContext
from prefect.runtime import flow_run

from course_exports.errors import InputError
from course_exports.export_records import ExportKind, ExportRequest
from course_exports.lake import (
    Course,
    Person,
    check_assignment_ids,
    read_course,
    read_roster,
    read_users,
    require_teacher,
)
from course_exports.lifecycle import request_selection
from course_exports.settings import Settings
from course_exports.workspace import check_selection
from tasks.mail import send_failure_mail
from tasks.retry import io_task


@dataclass(frozen=True)
class CourseRequest:
    course: Course
    requester: Person


def export_request(
    kind: ExportKind,
    course_id: int,
    requested_by: int,
    request_id: str | None,
    *,
    notify: bool = False,
    **selection: Any,
) -> ExportRequest:
    """The request a flow run serves: its parameters, and the run (so a rescheduled or
    retried run finds the export it claimed)."""
    run_id = flow_run.get_id()
    return ExportRequest(
        kind=kind,
        course_id=course_id,
        requested_by=requested_by,
        request_id=request_id,
        selection=request_selection(**selection),
        notify=notify,
        flow_run_id=str(run_id) if run_id else None,
        requested_at=_requested_at(),
    )


def _requested_at() -> datetime:
    """When the run was created (the LMS's request, or the admin's click), not when it
    started: a run that waited in a queue is still a request made back then."""
    context = FlowRunContext.get()
    created = context.flow_run.created if context is not None and context.flow_run else None
    return created.astimezone(UTC) if created is not None else datetime.now(UTC)


def check_request(settings: Settings, request: ExportRequest) -> CourseRequest:
    """The course exists, the requester is one of its teachers, and what they selected is
    part of it: refused here (InputError, PermissionDeniedError, NotFoundError), a request
    leaves nothing behind. A teacher who asked for mail hears why their selection was
    refused."""
    lake = settings.lake()
    course = read_course(lake, request.course_id)
    roster = read_roster(lake, request.course_id)
    requester = require_teacher(course, roster, read_users(lake), request.requested_by)
    try:
        _check_selection(settings, request, course, roster)
    except InputError as exc:
        if request.notify:
            send_failure_mail.fn(settings, requester, course.name, request.kind, exc.reason)
        raise
    return CourseRequest(course, requester)


def _check_selection(
    settings: Settings, request: ExportRequest, course: Course, roster: pl.DataFrame
) -> None:
    selection = request.selection
    if request.kind is ExportKind.COURSE:
        check_selection(
            course, roster, selection.get("assignment_ids"), selection.get("student_ids")
        )
    elif request.kind is ExportKind.ACCESS_DATA:
        # Imported here: the access log's package loads pyarrow (~65 MB), which the
        # course zip's process (500,000 files in < 300 MB) must not carry for nothing.
        from course_exports.access_log import parse_timezone
        from tasks.access_log import access_window

        parse_timezone(selection.get("timezone"))
        check_assignment_ids(course, selection.get("assignment_ids"))
        since, until = (_instant(selection.get(name)) for name in ("since", "until"))
        access_window(settings, since, until)


def _instant(value: str | None) -> datetime | None:
    # The selection holds canonical JSON values: a datetime is its str().
    return None if value is None else datetime.fromisoformat(value)


check_request_task = io_task("check-request", timeout_seconds=300)(check_request)
