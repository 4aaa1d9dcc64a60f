"""Steps of Import Project: find the export, check the reviewer, unpack the workspace."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact
from prefect.tasks import task

from course_exports import project
from course_exports.export_records import ExportRecord
from course_exports.lake import Person, read_course, read_roster, read_users, require_teacher
from course_exports.project import ImportedProject
from course_exports.settings import Settings
from course_exports.text import markdown_text
from tasks.retry import io_task


@io_task("find-export", timeout_seconds=120)
def find_export(settings: Settings, export_id: str) -> ExportRecord:
    return project.find_export(settings.exports(), export_id)


@io_task("check-reviewer", timeout_seconds=300)
def check_reviewer(settings: Settings, record: ExportRecord, requested_by: int) -> Person:
    """Only a Teacher of the export's course may open a student's work from it."""
    lake = settings.lake()
    course = read_course(lake, record.course_id)
    return require_teacher(course, read_roster(lake, course.id), read_users(lake), requested_by)


@io_task("unpack-workspace", timeout_seconds=3600, delays=(5, 30))
def unpack_workspace(
    settings: Settings,
    record: ExportRecord,
    assignment_id: int,
    student_id: int,
    stack: str | None,
    requested_by: int,
) -> ImportedProject:
    return project.import_workspace(
        settings.exports(),
        record,
        assignment_id=assignment_id,
        student_id=student_id,
        stack=stack,
        requested_by=requested_by,
    )


@task(name="summarise-import")
def summarise_import(imported: ImportedProject) -> None:
    # Names come from the archive and the lake: escaped, so none can forge a link or a row.
    student = markdown_text(imported.username or imported.student_id)
    create_markdown_artifact(
        key=f"import-course-{imported.course_id}",
        description=f"project {imported.project_id}",
        markdown=(
            f"# Imported {student}'s workspace\n\n"
            f"| | |\n|---|---|\n"
            f"| assignment | {markdown_text(imported.assignment_name)} ({imported.assignment_id}) |\n"
            f"| student | {markdown_text(imported.username)} ({imported.student_id}) |\n"
            f"| stack | {markdown_text(imported.stack['name'])} ({markdown_text(imported.stack['id'])}) |\n"
            f"| files | {imported.files:,} ({imported.bytes:,} bytes) |\n"
            f"| project | {markdown_text(imported.project_url, limit=400)} |\n"
            f"| files in | {markdown_text(imported.workspace)} |\n"
            f"| from export | {imported.export_id} of course {imported.course_id} |\n"
        ),
    )
