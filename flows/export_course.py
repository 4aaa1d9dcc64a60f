"""export-course: the whole course (data and every workspace) as one zip behind a link."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from course_exports.course_export import top_folder
from course_exports.humanize import human_size
from course_exports.registry import ExportKind, ExportRecord, ExportResult
from course_exports.settings import load_settings
from course_exports.workspace import WorkspacePlan
from flows.hooks import export_flow
from flows.parameters import COURSE_ID, REQUEST_ID, REQUESTED_BY, PositiveId, param
from tasks.concurrency import one_export_per_course
from tasks.course_export import pack_course_zip_task, plan_course_export_task
from tasks.export import (
    begin_export,
    fail_export,
    find_previous_export,
    publish_export,
    summarise_export,
)
from tasks.mail import send_ready_mail
from tasks.request import check_request_task

KIND = ExportKind.COURSE


def describe(plan: WorkspacePlan) -> str:
    """What the zip holds, in a sentence for the mail and the artifact."""
    return (
        f"course data, roster and {len(plan.workspaces):,} student workspaces "
        f"({plan.file_count:,} files, {human_size(plan.total_bytes)} before compression) "
        f"of {len(plan.assignment_folders):,} assignments"
    )


@export_flow(
    KIND,
    name="export-course",
    flow_run_name="course-zip · course {course_id}",
    description="The course's data and every student's workspace as one zip, mailed as a link.",
)
def export_course(
    course_id: PositiveId = COURSE_ID,
    requested_by: PositiveId = REQUESTED_BY,
    request_id: str | None = REQUEST_ID,
    assignment_ids: list[PositiveId] | None = param(
        "Assignments", "Only these assignment ids (default: all)", None
    ),
    student_ids: list[PositiveId] | None = param(
        "Students", "Only these students' workspaces (default: all)", None
    ),
    notify: bool = param("Mail the requester", "Send the link by mail when it is ready", True),
) -> ExportResult:
    settings = load_settings()
    parameters: dict[str, Any] = {
        "requested_by": requested_by,
        "assignment_ids": sorted(set(assignment_ids)) if assignment_ids else None,
        "student_ids": sorted(set(student_ids)) if student_ids else None,
    }
    previous = find_previous_export(settings, KIND, course_id, request_id, parameters)
    if previous is not None:
        print(f"request {request_id} was completed before as export {previous.export_id}")
        return previous

    request = check_request_task(settings, course_id, requested_by)
    course = request.course
    record: ExportRecord | None = None
    try:
        with one_export_per_course(course_id):
            plan = plan_course_export_task(
                settings,
                course,
                assignment_ids=parameters["assignment_ids"],
                student_ids=parameters["student_ids"],
            )
            created = datetime.now(UTC).replace(microsecond=0)
            record = begin_export(
                settings,
                kind=KIND,
                course_id=course_id,
                course_name=course.name,
                requested_by=requested_by,
                request_id=request_id,
                parameters=parameters,
                file_name=f"{top_folder(course, created)}.zip",
                now=created,
            )
            written = pack_course_zip_task(settings, record, course, plan)
            result = publish_export(settings, record, written)
    except Exception as exc:
        fail_export(settings, KIND, request.requester, course.name, record, exc, notify)
        raise

    contents = describe(plan)
    summarise_export(settings, result, contents)
    if notify:
        send_ready_mail(settings, request.requester, result, contents, course.timezone)
    print(f"export {result.export_id} ready: {result.file_url} ({result.size_bytes:,} bytes)")
    return result
