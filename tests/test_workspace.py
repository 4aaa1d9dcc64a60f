"""Naming workspaces inside the zip: safe on every OS, readable, unique (plain functions)."""

from __future__ import annotations

import io
import json
import os
import re
import unicodedata
import zipfile
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given
from hypothesis import settings as examples
from hypothesis import strategies as st

from course_exports.errors import InputError, LakeDataError
from course_exports.lake import Assignment, Course, Unit
from course_exports.storage import open_location
from course_exports.text import BIDI_CONTROLS
from course_exports.workspace import (
    _PLAIN,
    MAX_NAME,
    UniqueNames,
    WorkspacePlan,
    _cleaned,
    check_selection,
    list_workspace_files,
    listing_line,
    plan_workspaces,
    safe_name,
)
from course_exports.zipstream import ZipStreamWriter

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


@given(st.text(alphabet="aZ09._- é/\u202e", max_size=12))
def test_plain_names_take_the_shortcut_only_where_the_rules_keep_them(name: str) -> None:
    # safe_name returns a plain name as it is, without the rules: they must agree.
    if _PLAIN.fullmatch(name):
        assert _cleaned(name, "_", MAX_NAME) == name
    assert safe_name(name) == safe_name(name + "\u202e")  # the slow path: same answer


@given(st.text(), st.text(), st.integers(0, 2**40))
def test_a_listing_line_is_the_json_of_its_fields(rel: str, path: str, size: int) -> None:
    try:
        expected = json.dumps([rel, path, size], ensure_ascii=False).encode()
    except UnicodeEncodeError:  # lone surrogates: refused by the listing before this
        return
    assert listing_line(rel, path, size) == expected


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


# -- bidi controls and lengths (issue 8.10); properties of the naming ------------------------

BIDI = sorted(BIDI_CONTROLS)


def test_bidi_controls_are_stripped_from_names() -> None:
    assert safe_name("report\u202egpj.exe") == "reportgpj.exe"
    assert safe_name("\u2066\u2067\u2068\u2069a\u202a\u202b\u202c\u202d") == "a"
    assert safe_name("\u202e") == "_"  # nothing left: the fallback
    result = plan((501, 7, "cod\u202egpj.exe", 1), (501, 7, "\u2067dir/x.py", 1))
    assert {f.arcname for f in result.files()} == {
        "Homework/sam/codgpj.exe",
        "Homework/sam/dir/x.py",
    }


def test_clash_suffixes_keep_names_within_the_limit() -> None:
    names = UniqueNames()
    long = "é" * (MAX_NAME // 2)  # exactly MAX_NAME bytes
    first, second, third = (names.claim(long, suffix="123456") for _ in range(3))
    assert first == long
    assert second.endswith(" (123456)") and third.endswith(" (2)")
    files = UniqueNames()
    clashes = [files.claim("x" * 116 + ".txt") for _ in range(12)]
    assert clashes[1].endswith(" (2).txt") and clashes[11].endswith(" (12).txt")
    for name in [second, third, *clashes]:
        assert_portable(name)
    assert len({n.casefold() for n in [first, second, third]}) == 3
    assert len({n.casefold() for n in clashes}) == 12


#: Any text, heavy in what file systems and zip readers give a meaning to.
name_text = st.text(
    alphabet=st.one_of(
        st.sampled_from(list('/\\.:*?"<>| \t\r\n\x00\x7f\x85\u2028') + BIDI),
        st.sampled_from(list("aAbBßſKkÅåΣσς")),  # letters case folding merges
        st.characters(),
    ),
    max_size=150,
)


def assert_clean(component: str) -> None:
    assert_portable(component)
    assert not set(component) & BIDI_CONTROLS, component
    assert not any(unicodedata.category(ch) in ("Cc", "Zl", "Zp") for ch in component)


@given(name_text)
def test_safe_name_of_anything_is_clean(name: str) -> None:
    assert_clean(safe_name(name))


@given(st.lists(name_text, max_size=30), st.integers(min_value=1, max_value=10**12))
def test_claimed_names_are_clean_and_unique_under_case_folding(
    names: list[str], suffix: int
) -> None:
    taken = UniqueNames()
    claimed = [taken.claim(safe_name(n), suffix=str(suffix)) for n in names]
    assert len({c.casefold() for c in claimed}) == len(claimed)
    for name in claimed:
        assert_clean(name)


# What a listing can hold: UTF-8 (a local name that is not UTF-8 is refused, see below).
_UNDECODABLE = re.compile(r"[\ud800-\udfff]")


def _listable(name: str) -> bool:
    return bool(name) and not _UNDECODABLE.search(name)


listed_name = name_text.filter(_listable)
source_paths = st.lists(
    st.lists(listed_name, min_size=1, max_size=4).map("/".join),
    min_size=1,
    max_size=25,
    unique=True,
)


@examples(deadline=None, max_examples=150)
@given(source_paths)
def test_file_names_round_trip_through_a_real_zip(sources: list[str]) -> None:
    result = plan(*[(501, 7, source, 1) for source in sources])
    files = list(result.files())
    arcnames = [f.arcname for f in files]
    assert sorted(f.source for f in files) == sorted(sources)  # every file, original kept
    lowered = [a.casefold() for a in arcnames]
    assert len(set(lowered)) == len(lowered)
    folders = {a.rsplit("/", 1)[0].casefold() for a in arcnames}
    assert not set(lowered) & folders  # no file where a folder of that name is
    for arcname in arcnames:
        for part in arcname.split("/"):
            assert_clean(part)
    out = io.BytesIO()
    writer = ZipStreamWriter(out)
    for arcname in arcnames:
        writer.add_bytes(arcname, b"x")
    writer.close()
    with zipfile.ZipFile(io.BytesIO(out.getvalue())) as archive:
        assert archive.namelist() == arcnames
        assert archive.testzip() is None


def test_a_local_file_name_that_is_not_utf8_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "lake" / "workspaces" / "1042" / "501" / "7"
    folder.mkdir(parents=True)
    (folder / "ok.py").write_bytes(b"x")
    with open(os.path.join(os.fsencode(folder), b"caf\xe9.py"), "wb") as fh:
        fh.write(b"x")  # Latin-1, as an old tool may have written it
    lake = open_location(str(tmp_path / "lake"))
    with pytest.raises(LakeDataError, match="not valid UTF-8"):
        list(list_workspace_files(lake, 1042))
