"""What goes into a course zip (CONTRACT 4.1) and in which order.

Layout, all under one top folder named after the course and the export time::

    <top>/course.json         the LMS's course.json, byte for byte
    <top>/roster.csv          who is in the course (spreadsheet-safe)
    <top>/workspaces/<assignment folder>/<student folder>/<files...>
    <top>/manifest.json       every entry's path, size and sha256; ids, times, counts,
                              stacks, and each file's original workspace path

The manifest is written last because it holds the checksums of everything before it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from json.encoder import encode_basestring as _json_string  # C; ensure_ascii=False's
from typing import Any, BinaryIO

import polars as pl

from course_exports.export_records import ExportRecord
from course_exports.lake import Course, read_roster, read_users
from course_exports.storage import Location
from course_exports.tabular import safe_csv
from course_exports.workspace import MAX_NAME, WorkspaceFile, WorkspacePlan, safe_name
from course_exports.zipstream import (
    DEFAULT_LEVEL,
    SMALL_AVERAGE_BYTES,
    DeferredEntry,
    Source,
    WrittenEntry,
    ZipStreamWriter,
    stream_entries,
)

ZIP_MANIFEST = "manifest.json"
WINDOW_BYTES = 16 * 2**20
ZIP_FORMAT = 1
ROSTER_HEADER = ["User ID", "Username", "Email", "First Name", "Last Name", "Role"]


def top_folder(course: Course, created: datetime) -> str:
    """``Intro to Python (1042) 2026-11-28 181700 UTC``: readable, sortable, safe. A long
    course name is cut, never the id and time that make the name unique."""
    tail = f" ({course.id}) {created:%Y-%m-%d %H%M%S} UTC"
    return safe_name(course.name, "course", limit=MAX_NAME - len(tail)) + tail


def roster_csv(roster: pl.DataFrame, users: pl.DataFrame) -> bytes:
    """The roster with names, Teachers first, then by username."""
    frame = (
        roster.join(users, on="user_id", how="left")
        .sort(pl.col("role") != "Teacher", pl.col("username"), pl.col("user_id"), nulls_last=True)
        .select(
            pl.col("user_id").cast(pl.String),
            "username",
            "email",
            "first_name",
            "last_name",
            "role",
        )
    )
    return safe_csv(frame, ROSTER_HEADER)


class _LakeFile:
    """How one workspace file is read: one small object per file, cheaper than the two
    ``functools.partial`` it replaces (100,000 tiny files make a microsecond show)."""

    __slots__ = ("lake", "path", "size")

    def __init__(self, lake: Location, path: str, size: int) -> None:
        self.lake, self.path, self.size = lake, path, size

    def open(self) -> BinaryIO:
        return self.lake.open_read(self.path)

    def read(self) -> bytes:
        return self.lake.read_file(self.path, self.size)


def workspace_sources(
    lake: Location, top: str, plan: WorkspacePlan, sent: deque[WorkspaceFile]
) -> Iterator[Source]:
    """A source per file; each file also goes to ``sent``, so the entries coming out of
    the pipeline (in the same order) can be matched with where they came from."""
    prefix = f"{top}/workspaces/"
    for file in plan.files():
        sent.append(file)
        where = _LakeFile(lake, file.path, file.size)
        yield Source(
            prefix + file.arcname,
            file.size,
            where.open,
            None,
            where.read,
            lake.shared_path(file.path),
        )


def manifest_header(
    record: ExportRecord,
    course: Course,
    plan: WorkspacePlan,
) -> dict[str, Any]:
    """The zip's own manifest but its entries: who, when, what was selected, counts,
    assignments (with their stack) and workspaces (with owner and role)."""
    assignments = [
        {
            "id": a.id,
            "name": a.name,
            "book": a.book,
            "unit": {"id": unit.id, "name": unit.name},
            "folder": f"workspaces/{plan.assignment_folders[a.id]}",
            "stack": a.stack.model_dump() if a.stack else None,
        }
        for unit, a in course.assignments()
        if a.id in plan.assignment_folders
    ]
    workspaces = [
        {
            "assignment_id": w.assignment_id,
            "user_id": w.user_id,
            "username": w.username,
            "role": w.role or None,
            "folder": f"workspaces/{w.folder}",
            "files": w.files,
            "bytes": w.bytes,
        }
        for w in plan.workspaces
    ]
    return {
        "format": ZIP_FORMAT,
        "export_id": record.export_id,
        "kind": str(record.kind),
        "course": {"id": course.id, "name": course.name, "timezone": course.timezone},
        "created_at": record.created_at.isoformat(),
        "expires_at": record.expires_at.isoformat(),
        "requested_by": record.requested_by,
        "selection": record.parameters,
        "counts": {
            "assignments": len(assignments),
            "workspaces": len(workspaces),
            "files": plan.file_count,
            "bytes": plan.total_bytes,
        },
        "assignments": assignments,
        "workspaces": workspaces,
    }


def manifest_chunks(header: dict[str, Any], entry_lines: Iterable[bytes]) -> Iterator[bytes]:
    """The manifest as indented JSON, its ``entries`` one compact line each, in pieces:
    the entries come from the spill, so the manifest is never whole in memory."""
    yield json.dumps(header, indent=2, ensure_ascii=False).removesuffix("\n}").encode()
    yield b',\n  "entries": ['
    separator = b"\n    "
    for line in entry_lines:
        yield separator + line
        separator = b",\n    "
    yield b"\n  ]\n}\n"


def entry_line(entry: WrittenEntry, top: str, file: WorkspaceFile | None) -> bytes:
    """One manifest entry: its path in the zip, size and sha256, and for a workspace file
    where it came from (so an import restores the original name). The same line as
    ``json.dumps`` of the dict would give, formatted directly: a line per file adds up."""
    path = _json_string(entry.arcname.removeprefix(f"{top}/"))
    line = f'{{"path": {path}, "size": {entry.size}, "sha256": "{entry.sha256}"'
    if file is not None:
        line += (
            f', "source": {{"assignment_id": {file.assignment_id}, "user_id": {file.user_id}, '
            f'"path": {_json_string(file.source)}}}'
        )
    return (line + "}").encode()


def _local_time(moment: datetime) -> tuple[int, int, int, int, int, int]:
    """Zip timestamps carry no zone; unzip shows them as local time, so store UTC's."""
    return (moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second)


@dataclass(frozen=True)
class CourseZipStats:
    entries: int
    files: int
    workspaces: int
    assignments: int
    bytes_in: int


def small_files_ahead(plan: WorkspacePlan) -> int:
    """The files of workspaces whose files average under the packers' line: what the
    zip's pipeline can expect to pack in processes (it starts them at once if many)."""
    return sum(w.files for w in plan.workspaces if w.bytes < w.files * SMALL_AVERAGE_BYTES)


def write_course_zip(
    out: BinaryIO,
    lake: Location,
    *,
    record: ExportRecord,
    course: Course,
    course_json: bytes,
    roster: pl.DataFrame,
    users: pl.DataFrame,
    plan: WorkspacePlan,
    on_progress: Callable[[int, int], None] | None = None,
    read_workers: int | None = None,
    compress_workers: int = 2,
    small_file_processes: int | None = None,
    level: int = DEFAULT_LEVEL,
) -> CourseZipStats:
    """Stream the whole course zip into ``out`` (never seeks; memory bounded by the window)."""
    top = top_folder(course, record.created_at)
    writer = ZipStreamWriter(out, level=level, date_time=_local_time(record.created_at))
    header = manifest_header(record, course, plan)
    sent: deque[WorkspaceFile] = deque()

    def entry_lines() -> Iterator[bytes]:
        """Every entry's manifest line, as each entry is written: pulling them drives
        the zip, so the manifest is hashed and deflated while the files are packed."""
        for name, data in (("course.json", course_json), ("roster.csv", roster_csv(roster, users))):
            yield entry_line(writer.add_bytes(f"{top}/{name}", data), top, None)
        for entry in stream_entries(
            writer,
            workspace_sources(lake, top, plan, sent),
            read_workers=read_workers or lake.parallel_reads,
            # 16 MB in flight already keeps both cores busy (measured: the same MB/s as 64
            # MB), and memory is what a worker running several exports runs out of first.
            window_bytes=WINDOW_BYTES,
            compress_workers=compress_workers,
            small_file_processes=small_file_processes,
            small_files_ahead=small_files_ahead(plan),
            on_progress=on_progress,
        ):
            yield entry_line(entry, top, sent.popleft())

    # The manifest goes last (it holds every entry's checksum) but is made as they are
    # written; only its deflated bytes wait, on disk: 500,000 files add up.
    with DeferredEntry(f"{top}/{ZIP_MANIFEST}", level=level) as manifest:
        for chunk in manifest_chunks(header, entry_lines()):
            manifest.write(chunk)
        manifest.write_to(writer)
    writer.close()
    return CourseZipStats(
        entries=writer.entry_count,
        files=writer.entry_count - 3,  # course.json, roster.csv, the manifest
        workspaces=len(plan.workspaces),
        assignments=len(plan.assignment_folders),
        bytes_in=plan.total_bytes,
    )


def export_course_zip(
    out: BinaryIO,
    lake: Location,
    *,
    record: ExportRecord,
    course: Course,
    plan: WorkspacePlan,
    **options: Any,
) -> CourseZipStats:
    """``write_course_zip`` with the course's own data read from the lake: what the flow
    (and the benchmarks, which must measure the same thing) run."""
    return write_course_zip(
        out,
        lake,
        record=record,
        course=course,
        course_json=lake.read_bytes("courses", course.id, "course.json"),
        roster=read_roster(lake, course.id),
        users=read_users(lake),
        plan=plan,
        **options,
    )
