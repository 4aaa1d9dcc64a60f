"""The course zip's own names: its top folder (and so the zip's file name)."""

from __future__ import annotations

import io
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given
from hypothesis import strategies as st

from course_exports import course_export
from course_exports.course_export import small_files_ahead, top_folder, write_course_zip
from course_exports.export_records import ExportKind, ExportRecord, ExportStatus
from course_exports.lake import Assignment, Course, Unit
from course_exports.storage import open_location
from course_exports.text import BIDI_CONTROLS
from course_exports.workspace import MAX_NAME, list_workspace_files, plan_workspaces
from course_exports.zipstream import SMALL_AVERAGE_BYTES

CREATED = datetime(2026, 11, 28, 18, 17, 0, tzinfo=UTC)
TAIL = " (1042) 2026-11-28 181700 UTC"


def test_top_folder_names_course_id_and_time() -> None:
    assert top_folder(Course(id=1042, name="Intro to Python"), CREATED) == f"Intro to Python{TAIL}"
    assert top_folder(Course(id=1042, name=" ../\u202e"), CREATED) == f".._{TAIL}"
    assert top_folder(Course(id=1042, name=""), CREATED) == f"course{TAIL}"


def test_a_long_course_name_is_cut_not_the_id_and_time() -> None:
    for name in ("Einführung in die Programmierung " * 10, "x" * 300, "🐍" * 100):
        folder = top_folder(Course(id=1042, name=name), CREATED)
        assert folder.endswith(TAIL), folder
        assert len(folder.encode()) <= MAX_NAME
        assert name.startswith(folder.removesuffix(TAIL))


@given(st.text())
def test_top_folder_of_any_course_name(name: str) -> None:
    folder = top_folder(Course(id=1042, name=name), CREATED)
    assert folder.endswith(TAIL) and len(folder.encode()) <= MAX_NAME
    assert "/" not in folder and "\\" not in folder and ".." not in folder.split("/")
    assert not set(folder) & BIDI_CONTROLS


def test_the_zip_expects_the_small_files_its_plan_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Workspace 7 holds 30 small files, workspace 8 two large ones: the pipeline is told
    # of the 30 (so packers start at the first small batch of a course of many), and
    # the zip is whole either way.
    homework = Assignment(id=501, name="Homework")
    course = Course(id=1042, name="Intro", units=[Unit(id=1, name="W", assignments=[homework])])
    for user, count, size in ((7, 30, 100), (8, 2, 2 * SMALL_AVERAGE_BYTES)):
        folder = tmp_path / "lake" / "workspaces" / "1042" / "501" / str(user)
        folder.mkdir(parents=True)
        for index in range(count):
            (folder / f"f{index}.txt").write_bytes(b"x" * size)
    lake = open_location(str(tmp_path / "lake"))
    roster = pl.DataFrame({"user_id": [7, 8], "role": ["Student", "Student"]})
    users = pl.DataFrame(
        {
            "user_id": [7, 8],
            "username": ["sam", "kim"],
            "email": ["s@x", "k@x"],
            "first_name": ["S", "K"],
            "last_name": ["S", "K"],
        }
    )
    plan = plan_workspaces(list_workspace_files(lake, 1042), course, roster, users)
    assert small_files_ahead(plan) == 30
    told: list[int] = []
    stream_entries = course_export.stream_entries

    def spy(*args: Any, **options: Any) -> Any:
        told.append(options["small_files_ahead"])
        return stream_entries(*args, **options)

    monkeypatch.setattr(course_export, "stream_entries", spy)
    record = ExportRecord(
        export_id="e" * 32, course_id=1042, course_name="Intro", kind=ExportKind.COURSE,
        status=ExportStatus.PENDING, requested_by=1, file_name="c.zip", file_url="",
        created_at=CREATED, expires_at=CREATED + timedelta(days=7),
    )  # fmt: skip
    out = io.BytesIO()
    write_course_zip(
        out, lake, record=record, course=course, course_json=b"{}", roster=roster, users=users,
        plan=plan,
    )  # fmt: skip
    assert told == [30]
    with zipfile.ZipFile(out) as archive:
        assert archive.testzip() is None
        assert len(archive.namelist()) == 32 + 3  # course.json, roster.csv, manifest
