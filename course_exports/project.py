"""Import Project: one student's workspace back out of a course export, to review it.

The archive is treated as untrusted: it may have been edited, or not be ours at all.
Before a byte is written every entry to extract is checked (no absolute or parent
paths, no links, sizes in proportion to the archive), each file is verified against the
export's manifest while it streams out, and ``project.json`` is written last, so a
refused or failed import leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import stat
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel

from course_exports.course_export import ZIP_MANIFEST
from course_exports.errors import ExportError, InputError, NotFoundError
from course_exports.registry import MANIFEST, ExportKind, ExportRecord, file_path, read_record
from course_exports.storage import Location

PROJECTS = "projects"
PROJECT_JSON = "project.json"
WORKSPACE_DIR = "workspace"
_PROJECT_NAMESPACE = uuid.UUID("0f0e4a77-2a53-4f0b-9d0c-7e1c9b7d2e55")
_CHUNK = 1 << 20


class UnsafeArchiveError(ExportError):
    """The archive holds something an import must not write."""

    def __init__(self, archive: str, problem: str) -> None:
        super().__init__(
            f"{archive}: {problem}", reason="the export file is damaged or was altered"
        )
        self.problem = problem


@dataclass(frozen=True)
class ImportLimits:
    """What an archive may claim before it is refused as a zip bomb."""

    max_entries: int = 500_000
    max_total_bytes: int = 50 * 2**30
    max_ratio: float = 1100.0  # deflate cannot exceed ~1032:1; more means overlap tricks


class ImportedProject(BaseModel):
    project_id: str
    project_url: str
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
    exports.refresh()
    matches = exports.fs.glob(exports.path("*", export_id, MANIFEST))
    if not matches:
        raise NotFoundError(f"export {export_id}")
    course_id = int(posixpath.basename(posixpath.dirname(posixpath.dirname(matches[0]))))
    record = read_record(exports, course_id, export_id)
    if record is None or not record.is_live(datetime.now(UTC)):
        raise NotFoundError(f"export {export_id}", "not ready, or expired")
    if record.kind is not ExportKind.COURSE:
        raise InputError(
            "export_id", f"export {export_id} is a {record.kind} export, not a course zip"
        )
    return record


def safe_relative(path: str) -> bool:
    """A relative POSIX path with no way out of the folder it is written into."""
    if not path or path.startswith("/") or "\\" in path or "\x00" in path:
        return False
    if len(path) > 2 and path[0].isalpha() and path[1] == ":" and path[2] == "/":  # C:/x
        return False
    return all(part not in ("", ".", "..") for part in path.split("/"))


def check_archive(
    infos: list[zipfile.ZipInfo], archive_size: int, name: str, limits: ImportLimits
) -> None:
    """Refuse links, escaping paths and out-of-proportion sizes before extracting anything."""
    if len(infos) > limits.max_entries:
        raise UnsafeArchiveError(name, f"{len(infos):,} entries, more than {limits.max_entries:,}")
    total = sum(i.file_size for i in infos)
    if total > limits.max_total_bytes or total > max(archive_size, 1) * limits.max_ratio:
        raise UnsafeArchiveError(
            name, f"expands to {total:,} bytes from {archive_size:,}: out of proportion"
        )
    for info in infos:
        if not safe_relative(info.filename.rstrip("/")):
            raise UnsafeArchiveError(name, f"entry {info.filename!r} has an unsafe path")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise UnsafeArchiveError(name, f"entry {info.filename!r} is a symbolic link")
        if info.file_size > max(info.compress_size, 1) * limits.max_ratio:
            raise UnsafeArchiveError(
                name,
                f"entry {info.filename!r} expands {info.file_size:,} from {info.compress_size:,} bytes",
            )


def _top(names: list[str]) -> str:
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1:
        raise UnsafeArchiveError("archive", "entries are not under one top folder")
    return tops.pop()


def read_zip_manifest(zf: zipfile.ZipFile, name: str) -> tuple[str, dict[str, Any]]:
    """The top folder and the export's own manifest (sizes were checked with the rest)."""
    top = _top(zf.namelist())
    try:
        return top, json.loads(zf.read(f"{top}/{ZIP_MANIFEST}"))
    except KeyError:
        raise UnsafeArchiveError(name, f"no {ZIP_MANIFEST} in the archive") from None
    except (ValueError, zipfile.BadZipFile) as exc:
        raise UnsafeArchiveError(name, f"{ZIP_MANIFEST} is unreadable ({exc})") from None


@dataclass(frozen=True)
class _Selected:
    assignment: dict[str, Any]
    workspace: dict[str, Any]
    entries: list[dict[str, Any]]


def select_workspace(manifest: dict[str, Any], assignment_id: int, student_id: int) -> _Selected:
    assignment = next(
        (a for a in manifest.get("assignments", []) if a.get("id") == assignment_id), None
    )
    if assignment is None:
        raise NotFoundError(f"assignment {assignment_id} in export {manifest.get('export_id')}")
    workspace = next(
        (
            w
            for w in manifest.get("workspaces", [])
            if w.get("assignment_id") == assignment_id and w.get("user_id") == student_id
        ),
        None,
    )
    if workspace is None:
        raise NotFoundError(
            f"workspace of student {student_id} for assignment {assignment_id} "
            f"in export {manifest.get('export_id')}"
        )
    entries = [
        e
        for e in manifest.get("entries", [])
        if (src := e.get("source"))
        and src.get("assignment_id") == assignment_id
        and src.get("user_id") == student_id
    ]
    return _Selected(assignment, workspace, entries)


def choose_stack(
    stack: str | None, assignment: dict[str, Any], export_stacks: list[dict[str, Any]]
) -> dict[str, str]:
    """The stack given at import, else the one the export recorded for the assignment."""
    if stack is not None:
        stack = stack.strip()
        if not stack:
            raise InputError("stack", "must not be empty")
        known = {s["id"]: s for s in export_stacks if s}
        return {"id": stack, "name": known.get(stack, {}).get("name", stack)}
    recorded = assignment.get("stack")
    if not recorded:
        raise InputError(
            "stack",
            f"assignment {assignment.get('id')} ({assignment.get('name')}) has no stack recorded "
            "in the export; choose one for the import",
        )
    return {"id": str(recorded["id"]), "name": str(recorded.get("name", recorded["id"]))}


def project_id_for(export_id: str, assignment_id: int, student_id: int) -> str:
    """Importing the same workspace again replaces the earlier copy instead of piling up."""
    return uuid.uuid5(_PROJECT_NAMESPACE, f"{export_id}/{assignment_id}/{student_id}").hex


def _copy_verified(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, out: Any, entry: dict[str, Any], name: str
) -> int:
    digest, size = hashlib.sha256(), 0
    with zf.open(info) as src:
        while chunk := src.read(_CHUNK):
            size += len(chunk)
            if size > info.file_size:
                raise UnsafeArchiveError(name, f"entry {info.filename!r} is larger than it says")
            digest.update(chunk)
            out.write(chunk)
    if size != entry["size"] or digest.hexdigest() != entry["sha256"]:
        raise UnsafeArchiveError(name, f"entry {info.filename!r} does not match the manifest")
    return size


def import_workspace(
    exports: Location,
    record: ExportRecord,
    *,
    assignment_id: int,
    student_id: int,
    stack: str | None,
    requested_by: int,
    limits: ImportLimits | None = None,
) -> ImportedProject:
    """Unpack the workspace into ``projects/<project_id>/workspace/``, then ``project.json``."""
    limits = limits or ImportLimits()
    archive = file_path(exports, record)
    name = exports.url_of(archive)
    with exports.fs.open(archive, "rb") as fh, _zip(fh, name) as zf:
        infos = zf.infolist()
        check_archive(infos, record.size_bytes, name, limits)
        top, manifest = read_zip_manifest(zf, name)
        chosen = select_workspace(manifest, assignment_id, student_id)
        project_stack = choose_stack(
            stack, chosen.assignment, [a.get("stack") for a in manifest.get("assignments", [])]
        )
        by_name = {i.filename: i for i in infos}
        plan = list(_plan_files(chosen, top, by_name, name))
        project_id = project_id_for(record.export_id, assignment_id, student_id)
        root = exports.path(PROJECTS, project_id)
        if exports.fs.exists(root):
            exports.fs.rm(root, recursive=True)
        try:
            total = 0
            for info, entry, target in plan:
                path = posixpath.join(root, WORKSPACE_DIR, target)
                exports.fs.makedirs(posixpath.dirname(path), exist_ok=True)
                with exports.fs.open(path, "wb") as out:
                    total += _copy_verified(zf, info, out, entry, name)
            project = ImportedProject(
                project_id=project_id,
                project_url=exports.url_of(root),
                export_id=record.export_id,
                course_id=record.course_id,
                assignment_id=assignment_id,
                assignment_name=str(chosen.assignment.get("name")),
                student_id=student_id,
                username=chosen.workspace.get("username"),
                stack=project_stack,
                files=len(plan),
                bytes=total,
                imported_at=datetime.now(UTC).replace(microsecond=0),
                imported_by=requested_by,
            )
            exports.write_bytes_atomic(
                project.model_dump_json(indent=2).encode(), PROJECTS, project_id, PROJECT_JSON
            )
        except BaseException:
            if exports.fs.exists(root):
                exports.fs.rm(root, recursive=True)
            raise
    return project


def _zip(fh: Any, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UnsafeArchiveError(name, f"not a readable zip ({exc})") from None


def _plan_files(
    chosen: _Selected, top: str, by_name: dict[str, zipfile.ZipInfo], name: str
) -> Iterator[tuple[zipfile.ZipInfo, dict[str, Any], str]]:
    """Every file to extract: its zip entry, its manifest entry and where it goes."""
    seen: set[str] = set()
    for entry in chosen.entries:
        target = str(entry["source"]["path"])
        if not safe_relative(target):
            raise UnsafeArchiveError(name, f"manifest path {target!r} is unsafe")
        if target in seen:
            raise UnsafeArchiveError(name, f"manifest lists {target!r} twice")
        seen.add(target)
        info = by_name.get(f"{top}/{entry['path']}")
        if info is None:
            raise UnsafeArchiveError(
                name, f"manifest entry {entry['path']!r} is not in the archive"
            )
        yield info, entry, target
