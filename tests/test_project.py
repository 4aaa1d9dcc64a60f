"""Import Project treats the archive as untrusted: hostile zips are refused, nothing written."""

from __future__ import annotations

import hashlib
import io
import json
import stat
import zipfile
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from course_exports import registry
from course_exports.errors import InputError, NotFoundError
from course_exports.project import ImportLimits, UnsafeArchiveError, import_workspace
from course_exports.registry import ExportKind, ExportRecord
from course_exports.storage import Location, open_location

TOP = "Course (7) 2026-11-28 120000 UTC"
STACK = {"id": "python-3.12", "name": "Python 3.12"}


def manifest(entries: list[dict[str, Any]], stack: dict[str, str] | None = STACK) -> bytes:
    return json.dumps(
        {
            "export_id": "x",
            "assignments": [{"id": 5, "name": "Loops", "stack": stack}],
            "workspaces": [{"assignment_id": 5, "user_id": 9, "username": "ana"}],
            "entries": entries,
        }
    ).encode()


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


GOOD = {"main.py": b"print('hi')\n", "data/empty.txt": b"", "notes with space.md": b"# n\n"}


def good_files() -> list[tuple[str, bytes]]:
    return [(f"workspaces/Loops/ana/{name}", data) for name, data in GOOD.items()]


def build(
    files: list[tuple[str, bytes]],
    entries: list[dict[str, Any]] | None = None,
    tweak: Callable[[zipfile.ZipFile], None] | None = None,
) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files:
            zf.writestr(f"{TOP}/{name}", data)
        if tweak:
            tweak(zf)
        listed = entries if entries is not None else [entry(n, d) for n, d in files]
        zf.writestr(f"{TOP}/manifest.json", manifest(listed))
    return buffer.getvalue()


def publish(exports: Location, data: bytes) -> ExportRecord:
    record = registry.begin_export(
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
    with registry.open_export_file(exports, record) as out:
        out.write(data)
    return registry.publish(exports, record, size_bytes=out.size, sha256=out.sha256, counts={})


@pytest.fixture
def exports(tmp_path: Path) -> Location:
    return open_location(str(tmp_path / "exports"))


def run(exports: Location, data: bytes, **options: Any) -> Any:
    return import_workspace(
        exports,
        publish(exports, data),
        assignment_id=options.pop("assignment_id", 5),
        student_id=options.pop("student_id", 9),
        stack=options.pop("stack", None),
        requested_by=1,
        **options,
    )


def nothing_imported(exports: Location) -> bool:
    return not Path(exports.path("projects")).exists() or not any(
        Path(exports.path("projects")).rglob("*")
    )


def test_good_archive_round_trip(exports: Location) -> None:
    project = run(exports, build(good_files()))
    root = Path(project.project_url)
    got = {
        p.relative_to(root / "workspace").as_posix(): p.read_bytes()
        for p in (root / "workspace").rglob("*")
        if p.is_file()
    }
    assert got == GOOD
    assert json.loads((root / "project.json").read_text())["stack"] == STACK
    assert project.files == 3


def test_names_are_restored_from_the_manifest(exports: Location) -> None:
    data = b"x = 1\n"
    archive = build(
        [("workspaces/Loops/ana/a_b.py", data)],
        [entry("workspaces/Loops/ana/a_b.py", data, source="a:b.py")],
    )
    root = Path(run(exports, archive).project_url)
    assert (root / "workspace" / "a:b.py").read_bytes() == data


@pytest.mark.parametrize(
    "source", ["../../etc/cron.d/evil", "/etc/passwd", "a/../../x", "C:/evil", "a\\..\\b", ""]
)
def test_zip_slip_through_the_manifest_is_refused(exports: Location, source: str) -> None:
    data = b"boom"
    archive = build(
        [("workspaces/Loops/ana/x", data)],
        [entry("workspaces/Loops/ana/x", data, source=source)],
    )
    with pytest.raises(UnsafeArchiveError, match="unsafe"):
        run(exports, archive)
    assert nothing_imported(exports)


@pytest.mark.parametrize("name", ["../evil.txt", "/abs.txt"])
def test_escaping_entry_names_are_refused(exports: Location, name: str) -> None:
    def add(zf: zipfile.ZipFile) -> None:
        zf.writestr(zipfile.ZipInfo(name), b"x")

    with pytest.raises(UnsafeArchiveError):
        run(exports, build(good_files(), tweak=add))
    assert nothing_imported(exports)


def test_symbolic_links_are_refused(exports: Location) -> None:
    def add(zf: zipfile.ZipFile) -> None:
        info = zipfile.ZipInfo(f"{TOP}/workspaces/Loops/ana/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")

    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        run(exports, build(good_files(), tweak=add))
    assert nothing_imported(exports)


def test_zip_bombs_are_refused(exports: Location) -> None:
    zeros = b"\0" * (4 * 2**20)
    bomb = build([(f"workspaces/Loops/ana/z{i}", zeros) for i in range(8)])
    assert len(bomb) < 200_000  # 32 MB of zeros in a few dozen KB
    with pytest.raises(UnsafeArchiveError, match="out of proportion"):
        run(exports, bomb, limits=ImportLimits(max_ratio=100))
    with pytest.raises(UnsafeArchiveError, match="out of proportion"):
        run(exports, bomb, limits=ImportLimits(max_total_bytes=16 * 2**20))
    with pytest.raises(UnsafeArchiveError, match="entries"):
        run(exports, bomb, limits=ImportLimits(max_entries=5))
    assert nothing_imported(exports)


def test_tampered_file_is_refused_and_the_partial_import_removed(exports: Location) -> None:
    files = good_files()
    entries = [entry(n, d) for n, d in files]
    entries[-1]["sha256"] = "0" * 64  # the last file no longer matches
    with pytest.raises(UnsafeArchiveError, match="does not match the manifest"):
        run(exports, build(files, entries))
    assert nothing_imported(exports)


def test_not_a_zip(exports: Location) -> None:
    with pytest.raises(UnsafeArchiveError, match="not a readable zip"):
        run(exports, b"PK\x03\x04 certainly not a zip")


def test_missing_workspace_and_missing_stack(exports: Location) -> None:
    with pytest.raises(NotFoundError, match="student 10"):
        run(exports, build(good_files()), student_id=10)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, data in good_files():
            zf.writestr(f"{TOP}/{name}", data)
        zf.writestr(
            f"{TOP}/manifest.json",
            manifest([entry(n, d) for n, d in good_files()], stack=None),
        )
    with pytest.raises(InputError, match="choose one"):
        run(exports, buffer.getvalue())
    assert run(exports, buffer.getvalue(), stack="java-21").stack == {
        "id": "java-21",
        "name": "java-21",
    }
