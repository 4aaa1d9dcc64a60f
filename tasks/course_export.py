"""The course export's write step: plan the workspaces, then pack the zip."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Sequence
from typing import BinaryIO, cast
from uuid import UUID

from prefect.artifacts import create_progress_artifact, update_progress_artifact

from course_exports import course_export, registry, workspace
from course_exports.export_records import ExportRecord
from course_exports.heartbeat import Heartbeat
from course_exports.lake import Course, read_roster, read_users
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
    stores numbers) and a Prefect progress artifact from a thread of its own, at most
    every few seconds: each update is an API call, and the zip's writer (the thread that
    reports) must never wait on the API, or a slow server would stall the pipeline."""

    def __init__(
        self, plan: WorkspacePlan, heartbeat: Heartbeat | None, every_s: float = 3.0
    ) -> None:
        self.heartbeat = heartbeat
        self.total_files = plan.file_count
        self.total_bytes = max(plan.total_bytes, 1)
        self.every_s = every_s
        self._latest = (0, 0)
        self._sent = (0, 0)
        self._stop = threading.Event()
        artifact = create_progress_artifact(progress=0.0, description=self._describe(0, 0))
        self.artifact_id = cast(UUID, artifact)  # sync context: never a coroutine
        self._thread = threading.Thread(target=self._run, name="zip-progress", daemon=True)
        self._thread.start()

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
        self._latest = (files, done)  # one assignment: the reporter reads it whole

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            with contextlib.suppress(Exception):  # progress is best effort, never a failure
                self._send()

    def _send(self) -> None:
        latest = self._latest
        if latest == self._sent:
            return
        files, done = latest
        update_progress_artifact(
            artifact_id=self.artifact_id,
            progress=min(100.0, 100.0 * done / self.total_bytes),
            description=self._describe(files, done),
        )
        self._sent = latest

    def close(self, files: int | None = None, done: int | None = None) -> None:
        """Stop the reporter; with counts, report them as the last word."""
        self._stop.set()
        self._thread.join()
        if files is not None and done is not None:
            self(files, done)
            self._send()


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
    try:
        with registry.open_export_file(settings.exports(), record) as out:
            stats = course_export.export_course_zip(
                cast(BinaryIO, out),  # HashingWriter is a write-only binary stream
                lake,
                record=record,
                course=course,
                plan=plan,
                on_progress=progress,
            )
    except BaseException:
        progress.close()
        raise
    progress.close(stats.files, plan.total_bytes)
    counts = {
        "assignments": stats.assignments,
        "workspaces": stats.workspaces,
        "files": stats.files,
        "bytes_uncompressed": stats.bytes_in,
    }
    return WrittenFile(out.size, out.sha256, counts)


def write_course_file(
    settings: Settings,
    record: ExportRecord,
    course: Course,
    *,
    assignment_ids: Sequence[int] | None,
    student_ids: Sequence[int] | None,
    heartbeat: Heartbeat | None = None,
) -> WrittenFile:
    """Plan (a selection the course does not have is refused before a byte is written),
    then pack: one step, as the other exports' write steps are, since each task run
    costs the flow tens of ms and the server its events (issue 10); a retry plans again
    from a fresh listing."""
    plan = plan_course_export(
        settings, course, assignment_ids=assignment_ids, student_ids=student_ids
    )
    return pack_course_zip(settings, record, course, plan, heartbeat)


write_course_file_task = io_task("write-course-zip", timeout_seconds=6 * 3600, delays=(10, 60))(
    write_course_file
)
