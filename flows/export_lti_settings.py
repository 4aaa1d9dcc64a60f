"""export-lti-settings: a course's LTI launch URLs as a CSV behind a link."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from course_exports.registry import ExportKind, ExportRecord, ExportResult
from course_exports.settings import load_settings
from flows.hooks import export_flow
from flows.parameters import COURSE_ID, REQUEST_ID, REQUESTED_BY, PositiveId
from tasks.export import (
    begin_export,
    fail_export,
    find_previous_export,
    publish_export,
    summarise_export,
)
from tasks.lti import write_lti_csv
from tasks.request import check_request_task

KIND = ExportKind.LTI_SETTINGS


@export_flow(
    KIND,
    name="export-lti-settings",
    flow_run_name="lti-settings · course {course_id}",
    description="The course's LTI launch URLs and resource link ids as a CSV.",
)
def export_lti_settings(
    course_id: PositiveId = COURSE_ID,
    requested_by: PositiveId = REQUESTED_BY,
    request_id: str | None = REQUEST_ID,
) -> ExportResult:
    settings = load_settings()
    parameters: dict[str, Any] = {"requested_by": requested_by}
    previous = find_previous_export(settings, KIND, course_id, request_id, parameters)
    if previous is not None:
        return previous

    request = check_request_task(settings, course_id, requested_by)
    record: ExportRecord | None = None
    try:
        created = datetime.now(UTC).replace(microsecond=0)
        record = begin_export(
            settings,
            kind=KIND,
            course_id=course_id,
            course_name=request.course.name,
            requested_by=requested_by,
            request_id=request_id,
            parameters=parameters,
            file_name=f"lti-settings-{course_id}-{created:%Y%m%dT%H%M%SZ}.csv",
            now=created,
        )
        written = write_lti_csv(settings, record, request.course)
        result = publish_export(settings, record, written)
    except Exception as exc:
        fail_export(settings, KIND, request.requester, request.course.name, record, exc, False)
        raise
    summarise_export(
        settings, result, f"LTI settings of {written.counts['assignments']:,} assignments"
    )
    return result
