"""export-lti-settings: a course's LTI launch URLs as a CSV behind a link."""

from __future__ import annotations

from course_exports.export_records import ExportKind, ExportResult
from course_exports.settings import load_settings
from flows.hooks import export_flow
from flows.parameters import COURSE_ID, REQUEST_ID, REQUESTED_BY, PositiveId
from tasks.export import claim_export, conclude, exporting, publish_export
from tasks.lti import write_lti_csv
from tasks.request import export_request

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
    request = export_request(KIND, course_id, requested_by, request_id)
    checked, claim = claim_export(settings, request)
    if not claim.writes:
        return conclude(settings, request, checked, claim)

    with exporting(settings, request, checked, claim) as export:
        record = export.name_file(
            f"lti-settings-{course_id}-{export.record.created_at:%Y%m%dT%H%M%SZ}.csv"
        )
        written = write_lti_csv(settings, record, checked.course)
        result = publish_export(settings, request, checked, export, written)
    return result
