"""Course zips made by hand for the import tests: good ones, and ways to damage them.

An archive is built for one export id (the manifest names it), so tests reserve the
export first and build its bytes from the id: ``run(exports, archive(good_files()))``.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from course_exports import registry
from course_exports.export_records import ExportKind, ExportRecord
from course_exports.project import ImportedProject, import_workspace
from course_exports.storage import Location

TOP = "Course (7) 2026-11-28 120000 UTC"
STACK = {"id": "python-3.12", "name": "Python 3.12"}
GOOD = {"main.py": b"print('hi')\n", "data/empty.txt": b"", "notes with space.md": b"# n\n"}

#: Makes an archive's bytes for an export id.
Archive = Callable[[str], bytes]


def good_files() -> list[tuple[str, bytes]]:
    return [(f"workspaces/Loops/ana/{name}", data) for name, data in GOOD.items()]


def entry(path: str, data: bytes, source: str | None = None) -> dict[str, Any]:
    return {
        "path": path,
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "source": {
            "assignment_id": 5,
            "user_id": 9,
            "path": path.split("/", 3)[-1] if source is None else source,
        },
    }


def manifest(
    export_id: str, entries: list[dict[str, Any]], stack: dict[str, str] | None = STACK
) -> dict[str, Any]:
    ours = [
        e for e in entries if isinstance(e, dict) and (e.get("source") or {}).get("user_id") == 9
    ]
    return {
        "format": 1,
        "export_id": export_id,
        "assignments": [{"id": 5, "name": "Loops", "stack": stack}],
        "workspaces": [{"assignment_id": 5, "user_id": 9, "username": "ana", "files": len(ours)}],
        "entries": entries,
    }


def build(
    export_id: str,
    files: list[tuple[str, bytes]],
    entries: list[dict[str, Any]] | None = None,
    *,
    tweak: Callable[[zipfile.ZipFile], None] | None = None,
    edit: Callable[[dict[str, Any]], Any] | None = None,
    manifest_bytes: bytes | None = None,
    compression: int = zipfile.ZIP_DEFLATED,
    stack: dict[str, str] | None = STACK,
) -> bytes:
    """A course zip: ``files`` under the top folder, then ``manifest.json`` listing
    ``entries`` (by default every file), as ``edit`` leaves the document."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in files:
            zf.writestr(f"{TOP}/{name}", data)
        if tweak:
            tweak(zf)
        listed = entries if entries is not None else [entry(n, d) for n, d in files]
        document = manifest(export_id, listed, stack)
        if edit is not None:
            document = edit(document)
        if manifest_bytes is None:
            manifest_bytes = json.dumps(document).encode()
        zf.writestr(f"{TOP}/manifest.json", manifest_bytes)
    return buffer.getvalue()


def archive(files: list[tuple[str, bytes]], *args: Any, **options: Any) -> Archive:
    return lambda export_id: build(export_id, files, *args, **options)


def reserve(exports: Location) -> ExportRecord:
    return registry.begin_export(
        exports,
        kind=ExportKind.COURSE,
        course_id=7,
        course_name="Course",
        requested_by=1,
        request_id=None,
        parameters={},
        file_name="course.zip",
        ttl=timedelta(days=7),
    )


def publish(exports: Location, record: ExportRecord, data: bytes) -> ExportRecord:
    """The export made ready with ``data`` as its file (the record's sha256 is data's)."""
    with registry.open_export_file(exports, record) as out:
        out.write(data)
    return registry.publish(exports, record, size_bytes=out.size, sha256=out.sha256, counts={})


def import_(exports: Location, record: ExportRecord, **options: Any) -> ImportedProject:
    return import_workspace(
        exports,
        record,
        assignment_id=options.pop("assignment_id", 5),
        student_id=options.pop("student_id", 9),
        stack=options.pop("stack", None),
        requested_by=1,
        **options,
    )


def run(exports: Location, make: Archive | bytes, **options: Any) -> ImportedProject:
    """Publish an export made of ``make``'s bytes and import ana's workspace from it."""
    record = reserve(exports)
    data = make if isinstance(make, bytes) else make(record.export_id)
    return import_(exports, publish(exports, record, data), **options)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (an absent root is empty)."""
    if not root.exists():
        return {}
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def nothing_imported(exports: Location) -> bool:
    return not snapshot(Path(exports.path("projects")))


def workspace_files(project: ImportedProject) -> dict[str, bytes]:
    """The files of the copy the project's ``project.json`` names."""
    root = Path(project.project_url)
    committed = json.loads((root / "project.json").read_text())["workspace"]
    return snapshot(root / committed)
