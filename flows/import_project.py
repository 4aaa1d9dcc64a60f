"""import-project: one student's workspace from a course export, ready to review."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from pydantic import Field

from course_exports.project import ImportedProject
from course_exports.settings import load_settings
from tasks.project import check_reviewer, find_export, summarise_import, unpack_workspace


@flow(
    name="import-project",
    flow_run_name="import · export {export_id} · student {student_id}",
    description="Unpack one student's workspace from a course export, with the chosen stack.",
    persist_result=True,
    result_serializer="json",
    log_prints=True,
)
def import_project(
    export_id: Annotated[
        str, Field(title="Export ID", description="The course export to take the workspace from")
    ],
    assignment_id: Annotated[int, Field(title="Assignment ID", gt=0)],
    student_id: Annotated[int, Field(title="Student (user ID)", gt=0)],
    stack: Annotated[
        str | None,
        Field(
            title="Stack",
            description="Stack id to open the project with (default: the one the export recorded)",
        ),
    ] = None,
    *,
    requested_by: Annotated[
        int,
        Field(
            title="Requested by (user ID)",
            description="LMS user id of the reviewer; must be a Teacher of the export's course",
            gt=0,
        ),
    ],
) -> ImportedProject:
    settings = load_settings()
    record = find_export(settings, export_id)
    check_reviewer(settings, record, requested_by)
    imported = unpack_workspace(settings, record, assignment_id, student_id, stack, requested_by)
    summarise_import(imported)
    print(f"imported {imported.files} files into {imported.project_url}")
    return imported
