"""Step of the LTI settings export: write the CSV."""

from __future__ import annotations

from course_exports import registry
from course_exports.export_records import ExportRecord
from course_exports.lake import Course
from course_exports.lti import lti_csv
from course_exports.settings import Settings
from tasks.export import WrittenFile
from tasks.retry import io_task


@io_task("write-lti-csv", timeout_seconds=300)
def write_lti_csv(settings: Settings, record: ExportRecord, course: Course) -> WrittenFile:
    data, rows = lti_csv(course)
    with registry.open_export_file(settings.exports(), record) as out:
        out.write(data)
    return WrittenFile(out.size, out.sha256, {"assignments": rows})
