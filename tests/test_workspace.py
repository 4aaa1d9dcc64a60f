"""Naming workspaces inside the zip: safe on every OS, readable, unique (plain functions)."""

from __future__ import annotations

import unicodedata

import polars as pl
import pytest

from course_exports.errors import InputError
from course_exports.lake import Assignment, Course, Unit
from course_exports.workspace import (
    MAX_NAME,
    UniqueNames,
    WorkspacePlan,
    check_selection,
    plan_workspaces,
    safe_name,
)

WINDOWS_FORBIDDEN = set('<>:"/\\|?*') | {chr(c) for c in range(32)} | {"\x7f"}


def assert_portable(component: str) -> None:
    """What Windows, macOS and Linux all accept as one path component."""
    assert component not in ("", ".", "..")
    assert not WINDOWS_FORBIDDEN & set(component), component
    assert component == component.rstrip(". "), component
    assert component == unicodedata.normalize("NFC", component)
    assert len(component.encode()) <= MAX_NAME
    assert component.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL", "COM1", "LPT9"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Übung 1 – Schleifen 🐍", "Übung 1 – Schleifen 🐍"),  # readable names stay as they are
        ("  padded  ", "padded"),
        ('a/b\\c:d*e?f"g<h>i|j', "a_b_c_d_e_f_g_h_i_j"),
        ("tab\there\x00nul\x7f", "tab_here_nul_"),
        ("..", "_"),
        (".", "_"),
        ("", "_"),
        ("   ", "_"),
        ("trailing dots...", "trailing dots"),
        ("dots and spaces . .", "dots and spaces"),
        ("CON", "_CON"),
        ("con.txt", "_con.txt"),
        ("lpt1.log", "_lpt1.log"),
        ("COM10", "COM10"),  # only COM1-COM9 are devices
        ("e\u0301t\u00e9", "\u00e9t\u00e9"),  # NFC: macOS's decomposed é and Linux's agree
    ],
)
def test_safe_name(name: str, expected: str) -> None:
    assert safe_name(name) == expected
    assert_portable(safe_name(name))


def test_safe_name_fallback_and_length() -> None:
    assert safe_name("..", "assignment 7") == "assignment 7"
    long = safe_name("é" * 300)
    assert len(long.encode()) <= MAX_NAME
    assert long == "é" * (MAX_NAME // 2)  # cut on a character boundary, not mid-UTF-8
    assert safe_name("x" * 119 + ".yz") == "x" * 119  # cutting never leaves a trailing dot


def test_unique_names_fold_case_and_prefer_the_given_suffix() -> None:
    names = UniqueNames()
    assert names.claim("Homework", suffix="501") == "Homework"
    assert names.claim("homework", suffix="502") == "homework (502)"
    assert names.claim("HOMEWORK", suffix="502") == "HOMEWORK (502) (2)"
    files = UniqueNames()
    assert [files.claim(n) for n in ("main.py", "Main.py", "MAIN.PY", "archive.tar.gz")] == [
        "main.py",
        "Main (2).py",
        "MAIN (3).PY",
        "archive.tar.gz",
    ]


# -- plans -----------------------------------------------------------------------------

COURSE = Course(
    id=1042,
    name="Intro",
    units=[
        Unit(
            id=1,
            name="Week 1",
            assignments=[
                Assignment(id=501, name="Homework"),
                Assignment(id=502, name="homework"),
                Assignment(id=503, name="../../etc"),
            ],
        )
    ],
)
ROSTER = pl.DataFrame(
    {"user_id": [1, 7, 8, 9], "role": ["Teacher", "Student", "Student", "Student"]}
)
USERS = pl.DataFrame(
    {
        "user_id": [1, 7, 8, 10],
        "username": ["teacher", "sam", "Sam", "gone"],
        "email": ["t@x", "s@x", "S@x", "g@x"],
        "first_name": ["T", "S", "S", "G"],
        "last_name": ["T", "S", "S", "G"],
    }
)


def listing(*rows: tuple[int, int, str, int]) -> list[tuple[int, int, str, str, int]]:
    return [(a, u, rel, f"/lake/workspaces/1042/{a}/{u}/{rel}", size) for a, u, rel, size in rows]


def plan(*rows: tuple[int, int, str, int], **selection: list[int]) -> WorkspacePlan:
    return plan_workspaces(listing(*rows), COURSE, ROSTER, USERS, **selection)  # type: ignore[arg-type]


def test_every_arcname_is_portable_and_unique_under_case_folding() -> None:
    result = plan(
        (501, 7, "src/Main.py", 10),
        (501, 7, "src/main.py", 11),
        (501, 7, "SRC/util.py", 12),
        (501, 7, "notes", 1),  # a file and a folder of one name: S3 allows it, disks do not
        (501, 7, "notes/a.txt", 2),
        (501, 7, "aux.py", 3),
        (501, 7, "what?.txt", 4),
        (501, 7, "deep/" * 30 + "leaf.txt", 5),
        (501, 8, "src/Main.py", 6),
        (502, 7, "x.py", 7),
        (503, 9, "x.py", 8),
        (501, 10, "left.py", 9),  # left the course: still exported, no role
    )
    arcnames = [f.arcname for f in result.files()]
    assert len({a.casefold() for a in arcnames}) == len(arcnames)
    folders_and_files = {a.rsplit("/", 1)[0] for a in arcnames}
    assert not {a.casefold() for a in arcnames} & {f.casefold() for f in folders_and_files}
    for arcname in arcnames:
        for part in arcname.split("/"):
            assert_portable(part)
    by_source = {(f.assignment_id, f.user_id, f.source): f for f in result.files()}
    # sorted, "SRC" comes first; "src" may not merge into it on Windows or macOS
    assert by_source[(501, 7, "SRC/util.py")].arcname == "Homework/sam (7)/SRC/util.py"
    assert by_source[(501, 7, "src/Main.py")].arcname == "Homework/sam (7)/src (2)/Main.py"
    assert by_source[(501, 7, "src/main.py")].arcname == "Homework/sam (7)/src (2)/main (2).py"
    assert by_source[(501, 7, "notes")].arcname == "Homework/sam (7)/notes"
    assert by_source[(501, 7, "notes/a.txt")].arcname == "Homework/sam (7)/notes (2)/a.txt"
    assert by_source[(501, 7, "aux.py")].arcname == "Homework/sam (7)/_aux.py"
    assert by_source[(501, 7, "what?.txt")].arcname == "Homework/sam (7)/what_.txt"
    # two usernames that differ by case: the one sorted second gets its user id
    assert by_source[(501, 8, "src/Main.py")].arcname == "Homework/Sam/src/Main.py"
    # two assignment names that differ by case, and one that tries to climb out
    assert result.assignment_folders == {501: "Homework", 502: "homework (502)", 503: ".._.._etc"}
    assert by_source[(503, 9, "x.py")].arcname == ".._.._etc/user 9/x.py"  # not in the directory
    assert by_source[(501, 10, "left.py")].arcname == "Homework/gone/left.py"
    roles = {(w.assignment_id, w.user_id): w.role for w in result.workspaces}
    assert roles[(501, 10)] == "" and roles[(501, 7)] == "Student"
    # the original paths are kept for the manifest, so an import restores them exactly
    assert {f.source for f in result.files()} >= {"src/main.py", "what?.txt", "notes/a.txt"}


def test_order_counts_and_sizes() -> None:
    result = plan(
        (502, 7, "b.py", 2), (501, 8, "z.py", 3), (501, 7, "b.py", 4), (501, 7, "a.py", 5)
    )
    assert [f.arcname for f in result.files()] == [
        "Homework/Sam/z.py",  # by username, then user id
        "Homework/sam (7)/a.py",
        "Homework/sam (7)/b.py",
        "homework (502)/sam/b.py",
    ]
    assert [(w.folder, w.files, w.bytes) for w in result.workspaces] == [
        ("Homework/Sam", 1, 3),
        ("Homework/sam (7)", 2, 9),
        ("homework (502)/sam", 1, 2),
    ]
    assert result.total_bytes == 14


def test_selection_and_removed_assignments() -> None:
    rows = [(501, 7, "a.py", 1), (501, 8, "a.py", 1), (502, 7, "a.py", 1), (999, 7, "a.py", 1)]
    everything = plan(*rows)
    assert {f.assignment_id for f in everything.files()} == {501, 502}  # 999 is not in course.json
    chosen = plan(*rows, assignment_ids=[502], student_ids=[7, 8])
    assert [(f.assignment_id, f.user_id) for f in chosen.files()] == [(502, 7)]
    assert chosen.assignment_folders == {502: "homework"}  # no clash left to resolve
    assert list(plan(*rows, student_ids=[9]).files()) == []


def test_selection_is_checked_against_the_course() -> None:
    check_selection(COURSE, ROSTER, [501], [7, 8])
    with pytest.raises(InputError, match="assignment_ids: 777 not in course 1042"):
        check_selection(COURSE, ROSTER, [501, 777], None)
    with pytest.raises(InputError, match="student_ids: 1, 10 not a Student of course 1042"):
        check_selection(COURSE, ROSTER, None, [1, 7, 10])
