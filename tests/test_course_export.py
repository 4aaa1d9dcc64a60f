"""The course zip's own names: its top folder (and so the zip's file name)."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from course_exports.course_export import top_folder
from course_exports.lake import Course
from course_exports.text import BIDI_CONTROLS
from course_exports.workspace import MAX_NAME

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
