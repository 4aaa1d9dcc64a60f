"""Import Project: one student's workspace back out of a course export, to review it.

The archive is untrusted (:mod:`course_exports.export_reader` proves it before a byte of
it is used). A project lives at ``projects/<project_id>/``::

    project.json                       the commit point: which copy is the project
    workspace-<time>-<hex>/<files...>  one import's copy of the workspace

An import writes a new copy beside the current one, verifies every file of it, then
writes ``project.json`` naming it (one atomic write, on S3 too), and only then deletes
the copy it replaced. So a refused or failed re-import leaves the earlier project as it
was, and readers that go through ``project.json`` never see half a copy. There is no
rename on S3: the pointer is what makes the switch atomic on both backends.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel, ValidationError

from course_exports.errors import InputError, NotFoundError
from course_exports.export_reader import (
    ExportArchive,
    ImportLimits,
    ManifestAssignment,
    ManifestEntry,
    ManifestStack,
    ManifestWorkspace,
    UnsafeArchiveError,
    quoted,
    safe_relative,
)
from course_exports.export_records import MANIFEST, ExportKind, ExportRecord, read_record
from course_exports.registry import file_path
from course_exports.storage import Location, ObjectTooLargeError

__all__ = [
    "PROJECTS",
    "PROJECT_JSON",
    "ImportLimits",
    "ImportedProject",
    "UnsafeArchiveError",
    "find_export",
    "import_workspace",
]

PROJECTS = "projects"
PROJECT_JSON = "project.json"
#: Copies of a workspace are ``workspace-<UTC time>-<8 hex>``; ``workspace`` is the one
#: folder of projects imported before copies were versioned.
WORKSPACE_DIR = "workspace"
_COPY_RE = re.compile(r"workspace(?:-(\d{8}T\d{6}Z)-[0-9a-f]{8})?")
#: A copy no project.json names and older than this is what a crashed import left.
STALE_COPY = timedelta(days=1)
MAX_PROJECT_JSON = 2**20
_PROJECT_NAMESPACE = uuid.UUID("0f0e4a77-2a53-4f0b-9d0c-7e1c9b7d2e55")
log = logging.getLogger(__name__)


class ImportedProject(BaseModel):
    project_id: str
    project_url: str
    #: The folder under the project holding its files (read it from project.json).
    workspace: str = WORKSPACE_DIR
    workspace_url: str = ""
    export_id: str
    course_id: int
    assignment_id: int
    assignment_name: str
    student_id: int
    username: str | None
    stack: dict[str, str]
    files: int
    bytes: int
    imported_at: datetime
    imported_by: int


def find_export(exports: Location, export_id: str) -> ExportRecord:
    """The ready course export with this id, wherever its course is."""
    if not export_id or any(c not in "0123456789abcdef" for c in export_id) or len(export_id) != 32:
        raise InputError("export_id", f"{export_id!r} is not an export id (32 hex digits)")
    course_ids = [
        int(name)
        for name in exports.list_names()
        if name.isdigit() and exports.exists(name, export_id, MANIFEST)
    ]
    if not course_ids:
        raise NotFoundError(f"export {export_id}")
    record = read_record(exports, course_ids[0], export_id)
    if record is None or not record.is_live(datetime.now(UTC)):
        raise NotFoundError(f"export {export_id}", "not ready, or expired")
    if record.kind is not ExportKind.COURSE:
        raise InputError(
            "export_id", f"export {export_id} is a {record.kind} export, not a course zip"
        )
    return record


@dataclass(frozen=True)
class _Selected:
    assignment: ManifestAssignment
    workspace: ManifestWorkspace
    entries: list[ManifestEntry]


def select_workspace(
    assignments: list[ManifestAssignment],
    workspaces: list[ManifestWorkspace],
    entries: list[ManifestEntry],
    *,
    export_id: str,
    assignment_id: int,
    student_id: int,
) -> _Selected:
    assignment = next((a for a in assignments if a.id == assignment_id), None)
    if assignment is None:
        raise NotFoundError(f"assignment {assignment_id} in export {export_id}")
    workspace = next(
        (w for w in workspaces if (w.assignment_id, w.user_id) == (assignment_id, student_id)),
        None,
    )
    if workspace is None:
        raise NotFoundError(
            f"workspace of student {student_id} for assignment {assignment_id} "
            f"in export {export_id}"
        )
    return _Selected(assignment, workspace, entries)


def choose_stack(
    stack: str | None, assignment: ManifestAssignment, export_stacks: list[ManifestStack | None]
) -> dict[str, str]:
    """The stack given at import, else the one the export recorded for the assignment."""
    if stack is not None:
        stack = stack.strip()
        if not stack:
            raise InputError("stack", "must not be empty")
        known = {s.id: s for s in export_stacks if s}
        name = known[stack].name if stack in known else None
        return {"id": stack, "name": name or stack}
    recorded = assignment.stack
    if recorded is None:
        raise InputError(
            "stack",
            f"assignment {assignment.id} ({quoted(assignment.name)}) has no stack recorded "
            "in the export; choose one for the import",
        )
    return {"id": recorded.id, "name": recorded.name or recorded.id}


def project_id_for(export_id: str, assignment_id: int, student_id: int) -> str:
    """Importing the same workspace again replaces the earlier copy instead of piling up."""
    return uuid.uuid5(_PROJECT_NAMESPACE, f"{export_id}/{assignment_id}/{student_id}").hex


def plan_files(chosen: _Selected, name: str) -> list[tuple[ManifestEntry, str]]:
    """Every file to extract with where it goes, refused if two would collide (the same
    path twice, or one file's path a folder of another's)."""
    targets: dict[str, ManifestEntry] = {}
    for entry in chosen.entries:
        assert entry.source is not None  # kept only when it names this workspace
        target = entry.source.path
        if not safe_relative(target):
            raise UnsafeArchiveError(name, f"manifest path {quoted(target)} is unsafe")
        if target in targets:
            raise UnsafeArchiveError(name, f"manifest lists {quoted(target)} twice")
        targets[target] = entry
    folders = {
        target.rsplit("/", i)[0] for target in targets for i in range(1, target.count("/") + 1)
    }
    for target in targets:
        if target in folders:
            raise UnsafeArchiveError(
                name, f"manifest lists {quoted(target)} as a file and as a folder"
            )
    if len(targets) != chosen.workspace.files:
        raise UnsafeArchiveError(
            name,
            f"the workspace lists {chosen.workspace.files:,} files, "
            f"the manifest has {len(targets):,} entries for it",
        )
    return [(entry, target) for target, entry in targets.items()]


def new_copy_name(now: datetime) -> str:
    return f"{WORKSPACE_DIR}-{now.astimezone(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def import_workspace(
    exports: Location,
    record: ExportRecord,
    *,
    assignment_id: int,
    student_id: int,
    stack: str | None,
    requested_by: int,
    limits: ImportLimits | None = None,
    now: datetime | None = None,
) -> ImportedProject:
    """Unpack the workspace into a new copy under ``projects/<project_id>/``, verify it,
    commit it with ``project.json``, then remove the copy it replaced."""
    moment = (now or datetime.now(UTC)).replace(microsecond=0)
    archive_path = file_path(exports, record)
    project_id = project_id_for(record.export_id, assignment_id, student_id)
    copy = new_copy_name(moment)

    with (
        exports.open_seekable(archive_path) as raw,
        ExportArchive(raw, record, exports.url_for(archive_path), limits or ImportLimits()) as zf,
    ):
        manifest = zf.manifest(assignment_id, student_id)
        chosen = select_workspace(
            manifest.assignments,
            manifest.workspaces,
            manifest.entries,
            export_id=record.export_id,
            assignment_id=assignment_id,
            student_id=student_id,
        )
        project_stack = choose_stack(
            stack, chosen.assignment, [a.stack for a in manifest.assignments]
        )
        plan = plan_files(chosen, zf.name)
        try:
            total = 0
            for entry, target in plan:
                with exports.open_write(PROJECTS, project_id, copy, target) as out:
                    total += zf.copy_entry(entry.path, entry, out)
            project = ImportedProject(
                project_id=project_id,
                project_url=exports.url_for(PROJECTS, project_id),
                workspace=copy,
                workspace_url=exports.url_for(PROJECTS, project_id, copy),
                export_id=record.export_id,
                course_id=record.course_id,
                assignment_id=assignment_id,
                assignment_name=chosen.assignment.name,
                student_id=student_id,
                username=chosen.workspace.username,
                stack=project_stack,
                files=len(plan),
                bytes=total,
                imported_at=moment,
                imported_by=requested_by,
            )
            # Read as late as possible: an import that committed meanwhile is replaced too.
            previous = committed_copy(exports, project_id)
            # The commit: from here on the project is the new copy.
            exports.write_bytes_atomic(
                project.model_dump_json(indent=2).encode(), PROJECTS, project_id, PROJECT_JSON
            )
        except BaseException:
            _remove_quietly(exports, project_id, copy)
            raise
    remove_replaced_copies(exports, project_id, keep=copy, replaced=previous, now=moment)
    return project


class _Pointer(BaseModel):
    workspace: str = WORKSPACE_DIR


def committed_copy(exports: Location, project_id: str) -> str | None:
    """The copy ``project.json`` names now, if it is readable."""
    try:
        raw = exports.read_bytes(PROJECTS, project_id, PROJECT_JSON, max_bytes=MAX_PROJECT_JSON)
        return _Pointer.model_validate_json(raw).workspace
    except FileNotFoundError:
        return None
    except (ObjectTooLargeError, ValidationError) as exc:
        log.warning(
            "project %s: unreadable %s, its copies go once stale (%s)",
            project_id,
            PROJECT_JSON,
            type(exc).__name__,
        )
        return None


def remove_replaced_copies(
    exports: Location, project_id: str, *, keep: str, replaced: str | None, now: datetime
) -> None:
    """Delete the copy the commit replaced, and copies crashed imports left (unnamed and
    older than :data:`STALE_COPY`); never one another import may still be writing."""
    for name in exports.list_names(PROJECTS, project_id):
        match = _COPY_RE.fullmatch(name)
        if match is None or name == keep:
            continue
        stamp = match.group(1)
        stale = (
            stamp is None
            or datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC) < now - STALE_COPY
        )
        if name == replaced or stale:
            _remove_quietly(exports, project_id, name)


def _remove_quietly(exports: Location, project_id: str, copy: str) -> None:
    """Best effort: a copy no project.json names is harmless, and goes once stale."""
    try:
        exports.delete_tree(PROJECTS, project_id, copy)
    except Exception as exc:  # the import's own outcome is what to report
        log.warning("project %s: could not remove %s: %s", project_id, copy, exc)
