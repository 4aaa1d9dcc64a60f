"""export-course: the whole course (data and every workspace) as one zip behind a link."""

from __future__ import annotations

from course_exports.course_export import top_folder
from course_exports.export_records import ExportKind, ExportResult
from course_exports.settings import load_settings
from flows.hooks import export_flow
from flows.parameters import COURSE_ID, REQUEST_ID, REQUESTED_BY, PositiveId, param
from tasks.course_export import write_course_file_task
from tasks.export import claim_export, conclude, exporting, publish_export
from tasks.request import export_request

KIND = ExportKind.COURSE


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
    request = export_request(
        KIND,
        course_id,
        requested_by,
        request_id,
        notify=notify,
        assignment_ids=assignment_ids,
        student_ids=student_ids,
    )
    checked, claim = claim_export(settings, request)
    if not claim.writes:
        return conclude(settings, request, checked, claim)

    with exporting(settings, request, checked, claim) as export:
        record = export.name_file(f"{top_folder(checked.course, export.record.created_at)}.zip")
        written = write_course_file_task(
            settings,
            record,
            checked.course,
            assignment_ids=request.selection["assignment_ids"],
            student_ids=request.selection["student_ids"],
            heartbeat=export,
        )
        result = publish_export(settings, request, checked, export, written)
    return result
