"""Survey of the exports root: every export and project folder, manifest and upload."""

from __future__ import annotations

import posixpath
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

from pydantic import BaseModel, ValidationError

from course_exports.errors import LakeDataError
from course_exports.export_records import MANIFEST, ExportRecord, read_record
from course_exports.project import PROJECT_JSON, PROJECTS
from course_exports.retention.steps import ProjectStamp, StoredFile
from course_exports.storage import Entry, Location

_ID_RE = re.compile(r"[0-9a-f]{32}")
_COURSE_RE = re.compile(r"[1-9][0-9]*")


_MANIFEST_READERS = 16


class ExportFolder(BaseModel):
    """``<course_id>/<export_id>/``: its files and what its manifest said."""

    course_id: int
    export_id: str
    path: str
    files: list[StoredFile]
    record: ExportRecord | None = None
    #: Why the manifest could not be used (the folder is then left alone).
    damaged: str | None = None


class ProjectFolder(BaseModel):
    project_id: str
    path: str
    files: list[StoredFile]
    stamp: ProjectStamp | None = None
    damaged: str | None = None


class PendingUpload(BaseModel):
    """An S3 multipart upload not completed nor aborted."""

    path: str  # bucket/key
    upload_id: str
    initiated: datetime
    folder: str  # the export or project folder it writes into


class ExportsSurvey(BaseModel):
    root: str
    exports: list[ExportFolder]
    projects: list[ProjectFolder]
    uploads: list[PendingUpload]
    #: ``<course>/.<name>`` files of the lifecycle (leases, job marks, their temporary
    #: files), beside the course's export folders.
    marks: list[StoredFile] = []


def stored_file(location: Location, entry: Entry) -> StoredFile:
    return StoredFile(path=location.path(entry.path), size=entry.size, modified=entry.mtime)


def find_files(location: Location, folder: str) -> list[StoredFile]:
    """Every file under ``folder`` (a backend name, as the purge's models hold them)."""
    return [stored_file(location, e) for e in location.iter_files(location.relative(folder))]


def _owner(location: Location, path: str) -> tuple[str, str] | None:
    """``("export", "<course>/<export>")`` or ``("project", "<id>")`` for a path of ours."""
    try:
        parts = location.relative(path).split("/")
    except ValueError:
        return None
    if len(parts) < 3 or not _ID_RE.fullmatch(parts[1]):
        return None
    if parts[0] == PROJECTS:
        return "project", parts[1]
    if _COURSE_RE.fullmatch(parts[0]):
        return "export", f"{parts[0]}/{parts[1]}"
    return None


def survey_exports(exports: Location) -> ExportsSurvey:
    """Every export and project folder from one recursive listing, with its manifest."""
    export_files: dict[str, list[StoredFile]] = {}
    project_files: dict[str, list[StoredFile]] = {}
    marks: list[StoredFile] = []
    for stored in find_files(exports, exports.root):
        owner = _owner(exports, stored.path)
        if owner is None:
            if is_course_mark(exports, stored.path):
                marks.append(stored)
            continue  # anything else is not ours to judge
        kind, key = owner
        target = export_files if kind == "export" else project_files
        target.setdefault(key, []).append(stored)
    folders = [_export_folder(exports, key, files) for key, files in sorted(export_files.items())]
    projects = [
        ProjectFolder(project_id=key, path=exports.path(PROJECTS, key), files=files)
        for key, files in sorted(project_files.items())
    ]
    # One GET per manifest: concurrent, because on S3 each is a round trip.
    with ThreadPoolExecutor(_MANIFEST_READERS) as pool:
        folders = list(pool.map(lambda f: _read_manifest(exports, f), folders))
        projects = list(pool.map(lambda p: _read_stamp(exports, p), projects))
    return ExportsSurvey(
        root=exports.root,
        exports=folders,
        projects=projects,
        uploads=list_uploads(exports),
        marks=marks,
    )


def is_course_mark(location: Location, path: str) -> bool:
    """``<course>/.<name>``: a lease, a job's done mark, or a temporary file of either."""
    try:
        parts = location.relative(path).split("/")
    except ValueError:
        return False
    return (
        len(parts) == 2 and _COURSE_RE.fullmatch(parts[0]) is not None and parts[1].startswith(".")
    )


def _export_folder(exports: Location, key: str, files: list[StoredFile]) -> ExportFolder:
    course, export_id = key.split("/")
    return ExportFolder(
        course_id=int(course),
        export_id=export_id,
        path=exports.path(course, export_id),
        files=files,
    )


def _has(files: list[StoredFile], folder: str, name: str) -> bool:
    return any(f.path == posixpath.join(folder, name) for f in files)


def _read_manifest(exports: Location, folder: ExportFolder) -> ExportFolder:
    if not _has(folder.files, folder.path, MANIFEST):
        return folder
    try:
        record = read_record(exports, folder.course_id, folder.export_id)
    except LakeDataError as exc:
        return folder.model_copy(update={"damaged": str(exc)})
    if record is not None and (record.course_id, record.export_id) != (
        folder.course_id,
        folder.export_id,
    ):
        # A manifest copied from elsewhere would point the purge at another folder.
        problem = f"manifest names export {record.course_id}/{record.export_id}"
        return folder.model_copy(update={"damaged": f"{folder.path}: {problem}"})
    return folder.model_copy(update={"record": record})


def _read_stamp(exports: Location, project: ProjectFolder) -> ProjectFolder:
    if not _has(project.files, project.path, PROJECT_JSON):
        return project
    try:
        raw = exports.read_bytes(exports.relative(project.path), PROJECT_JSON)
    except FileNotFoundError:
        return project  # removed since the listing; judged as an unfinished import
    try:
        stamp = ProjectStamp.model_validate_json(raw)
    except ValidationError as exc:
        problem = f"not a valid {PROJECT_JSON} ({exc.error_count()} problems)"
        return project.model_copy(update={"damaged": f"{project.path}: {problem}"})
    return project.model_copy(update={"stamp": stamp})


def list_uploads(exports: Location) -> list[PendingUpload]:
    """Unfinished multipart uploads into our export and project folders (S3 only)."""
    uploads: list[PendingUpload] = []
    for upload in exports.pending_uploads():
        path = exports.path(upload.path)
        owner = _owner(exports, path)
        if owner is None:
            continue
        kind, key = owner
        folder = exports.path(PROJECTS, key) if kind == "project" else exports.path(key)
        uploads.append(
            PendingUpload(
                path=path, upload_id=upload.upload_id, initiated=upload.initiated, folder=folder
            )
        )
    return uploads
