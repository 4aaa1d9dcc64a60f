"""Steps of the course export: plan the workspaces, pack the zip."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import BinaryIO, cast
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from course_exports import course_export, registry, workspace
from course_exports.lake import Course, read_roster, read_users
from course_exports.lifecycle import Heartbeat
from course_exports.registry import ExportRecord
from course_exports.settings import Settings
from course_exports.workspace import WorkspacePlan
from tasks.export import WrittenFile
from tasks.retry import io_task


def plan_course_export(
    settings: Settings,
    course: Course,
    *,
    assignment_ids: Sequence[int] | None,
    student_ids: Sequence[int] | None,
) -> WorkspacePlan:
    """Check the selection, then list the course's workspaces once and name every file."""
    lake = settings.lake()
    roster = read_roster(lake, course.id)
    workspace.check_selection(course, roster, assignment_ids, student_ids)
    return workspace.plan_workspaces(
        workspace.list_workspace_files(lake, course.id),
        course,
        roster,
        read_users(lake),
        assignment_ids=assignment_ids,
        student_ids=student_ids,
    )


class _Progress:
    """Feeds the export's manifest (through the lifecycle's heartbeat, every call: it only
    stores numbers) and a Prefect progress artifact, at most every few seconds (each is an
    API call)."""

    def __init__(
        self, plan: WorkspacePlan, heartbeat: Heartbeat | None, every_s: float = 3.0
    ) -> None:
        self.heartbeat = heartbeat
        self.total_files = plan.file_count
        self.total_bytes = max(plan.total_bytes, 1)
        self.every_s = every_s
        self.last = 0.0
        artifact = create_progress_artifact(progress=0.0, description=self._describe(0, 0))
        self.artifact_id = cast(UUID, artifact)  # sync context: never a coroutine

    def _describe(self, files: int, done: int) -> str:
        return (
            f"{files:,} of {self.total_files:,} files, "
            f"{done / 1e6:,.1f} of {self.total_bytes / 1e6:,.1f} MB packed"
        )

    def __call__(self, files: int, done: int) -> None:
        if self.heartbeat is not None:
            self.heartbeat.update(
                files_done=files,
                files_total=self.total_files,
                bytes_done=done,
                bytes_total=self.total_bytes,
            )
        now = time.monotonic()
        if now - self.last < self.every_s and files < self.total_files:
            return
        self.last = now
        update_progress_artifact(
            artifact_id=self.artifact_id,
            progress=min(100.0, 100.0 * done / self.total_bytes),
            description=self._describe(files, done),
        )


def pack_course_zip(
    settings: Settings,
    record: ExportRecord,
    course: Course,
    plan: WorkspacePlan,
    heartbeat: Heartbeat | None = None,
) -> WrittenFile:
    """Stream the zip into the exports storage; the reads and the upload overlap."""
    lake = settings.lake()
    progress = _Progress(plan, heartbeat)
    with registry.open_export_file(settings.exports(), record) as out:
        stats = course_export.write_course_zip(
            cast(BinaryIO, out),  # HashingWriter is a write-only binary stream
            lake,
            record=record,
            course=course,
            course_json=lake.read_bytes("courses", course.id, "course.json"),
            roster=read_roster(lake, course.id),
            users=read_users(lake),
            plan=plan,
            on_progress=progress,
        )
    progress(stats.files, plan.total_bytes)
    counts = {
        "assignments": stats.assignments,
        "workspaces": stats.workspaces,
        "files": stats.files,
        "bytes_uncompressed": stats.bytes_in,
    }
    return WrittenFile(out.size, out.sha256, counts)


plan_course_export_task = io_task("plan-workspaces", timeout_seconds=1800)(plan_course_export)
pack_course_zip_task = io_task("pack-course-zip", timeout_seconds=6 * 3600, delays=(10, 60))(
    pack_course_zip
)
