"""import-project: one student's workspace from a course export, ready to review."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.runtime import flow_run

from course_exports.project import ImportedProject
from course_exports.settings import load_settings
from course_exports.text import one_line
from flows.parameters import PositiveId, param
from tasks.project import check_reviewer, find_export, summarise_import, unpack_workspace


def run_name() -> str:
    """``import · export <id> · student <id>``. The export id is free text until the flow
    checks it, and a run name is shown (and logged) as it is: one line, cut short."""
    parameters: dict[str, Any] = flow_run.parameters
    export_id = one_line(parameters.get("export_id", ""), limit=40)
    return f"import · export {export_id} · student {parameters.get('student_id')}"


@flow(
    name="import-project",
    flow_run_name=run_name,
    description="Unpack one student's workspace from a course export, with the chosen stack.",
    persist_result=True,
    result_serializer="json",
    log_prints=True,
)
def import_project(
    export_id: str = param("Export ID", "The course export to take the workspace from"),
    assignment_id: PositiveId = param("Assignment ID", "The assignment whose workspace to import"),
    student_id: PositiveId = param("Student (user ID)", "The student whose workspace to import"),
    stack: str | None = param(
        "Stack", "Stack id to open the project with (default: the one the export recorded)", None
    ),
    requested_by: PositiveId = param(
        "Requested by (user ID)", "LMS user id of the reviewer; a Teacher of the export's course"
    ),
) -> ImportedProject:
    settings = load_settings()
    record = find_export(settings, export_id)
    check_reviewer(settings, record, requested_by)
    imported = unpack_workspace(settings, record, assignment_id, student_id, stack, requested_by)
    summarise_import(imported)
    print(f"imported {imported.files} files into {one_line(imported.workspace_url, limit=400)}")
    return imported
