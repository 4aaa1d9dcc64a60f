"""The sample lake generator writes exactly CONTRACT section 2, deterministically, nastily."""

from __future__ import annotations

import json
import zlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from course_exports.access_log import ACCESS_LOG_SCHEMA
from course_exports.storage import open_location
from sample_lake import LakeSpec, LakeSummary, generate_lake, tiny_lake_spec
from sample_lake.__main__ import main

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
FORMULA_STARTS = ("=", "+", "-", "@")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LakeSummary]:
    root = tmp_path_factory.mktemp("lake")
    summary = generate_lake(open_location(str(root)), tiny_lake_spec(), now=NOW)
    return root, summary


@pytest.fixture(scope="module")
def users(tiny: tuple[Path, LakeSummary]) -> pa.Table:
    return pq.read_table(tiny[0] / "directory" / "users.parquet")


@pytest.fixture(scope="module")
def log(tiny: tuple[Path, LakeSummary]) -> pa.Table:
    """Every log file, with the partition day each row came from."""
    tables = []
    for path in sorted((tiny[0] / "access_log").glob("*/*.parquet")):
        table = pq.read_table(path)
        day = path.parent.name.removeprefix("event_date=")
        tables.append(table.append_column("partition", pa.array([day] * len(table))))
    return pa.concat_tables(tables)


def course_doc(root: Path, course_id: int) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        (root / "courses" / str(course_id) / "course.json").read_text()
    )
    return doc


def assignments(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for unit in doc["units"] for a in unit["assignments"]]


def roster(root: Path, course_id: int) -> pa.Table:
    return pq.read_table(root / "courses" / str(course_id) / "roster.parquet")


# ---------------------------------------------------------------- layout and types


def test_directory_schema_and_unique_keys(users: pa.Table) -> None:
    assert users.schema == pa.schema(
        [
            ("user_id", pa.int64()),
            ("username", pa.string()),
            ("email", pa.string()),
            ("first_name", pa.string()),
            ("last_name", pa.string()),
        ]
    )
    assert pc.count_distinct(users["user_id"]).as_py() == len(users)
    assert pc.count_distinct(users["username"]).as_py() == len(users)


def test_top_level_layout(tiny: tuple[Path, LakeSummary]) -> None:
    root, summary = tiny
    assert sorted(p.name for p in root.iterdir()) == [
        "access_log",
        "courses",
        "directory",
        "workspaces",
    ]
    assert sorted(int(p.name) for p in (root / "courses").iterdir()) == [1001, 1002, 1003, 1004]
    assert sorted(summary.course_ids) == [1001, 1002, 1003, 1004]
    for course_id in summary.course_ids:
        assert sorted(p.name for p in (root / "courses" / str(course_id)).iterdir()) == [
            "course.json",
            "roster.parquet",
        ]


def test_rosters_have_teachers_and_students(
    tiny: tuple[Path, LakeSummary], users: pa.Table
) -> None:
    root, summary = tiny
    directory = set(users["user_id"].to_pylist())
    for course_id in summary.course_ids:
        table = roster(root, course_id)
        assert table.schema == pa.schema([("user_id", pa.int64()), ("role", pa.string())])
        assert set(table["role"].to_pylist()) == {"Teacher", "Student"}
        assert set(table["user_id"].to_pylist()) <= directory
        teachers = [r["user_id"] for r in table.to_pylist() if r["role"] == "Teacher"]
        assert sorted(teachers) == sorted(summary.teachers[course_id])
    # Roles are per course: a teacher of 1001 is a student of 1002.
    teacher = summary.teachers[1001][0]
    in_1002 = {r["user_id"]: r["role"] for r in roster(root, 1002).to_pylist()}
    assert in_1002[teacher] == "Student"


def test_course_json_shape(tiny: tuple[Path, LakeSummary]) -> None:
    root, summary = tiny
    all_ids: list[int] = []
    for course_id in summary.course_ids:
        doc = course_doc(root, course_id)
        assert doc["id"] == course_id
        assert isinstance(doc["name"], str)
        for unit in doc["units"]:
            assert isinstance(unit["id"], int) and isinstance(unit["name"], str)
        for a in assignments(doc):
            assert isinstance(a["id"], int) and isinstance(a["name"], str)
            assert set(a) <= {"id", "name", "book", "stack", "lti"}
            if a.get("stack") is not None:
                assert set(a["stack"]) == {"id", "name"}
            if a.get("lti") is not None:
                assert set(a["lti"]) == {"launch_url", "resource_link_id"}
        all_ids += [a["id"] for a in assignments(doc)]
    assert len(all_ids) == len(set(all_ids)) == 4 * 6
    timezones = [course_doc(root, c) for c in (1001, 1002, 1003, 1004)]
    assert timezones[0]["timezone"] == "America/New_York"
    assert "timezone" not in timezones[1]
    assert timezones[3]["timezone"] is None


def test_log_schema_and_partition_days(log: pa.Table, tiny: tuple[Path, LakeSummary]) -> None:
    root, summary = tiny
    for path in (root / "access_log").glob("*/*.parquet"):
        assert pq.read_schema(path).remove_metadata() == ACCESS_LOG_SCHEMA
    days = pc.strftime(log["event_time"], format="%Y-%m-%d").to_pylist()
    assert days == log["partition"].to_pylist()
    assert len(log) == summary.events == sum(summary.events_per_course.values()) == 3_000
    assert summary.days == len({*days})
    assert max(log["event_time"].to_pylist()) <= NOW
    assert min(log["event_time"].to_pylist()) >= datetime(2026, 5, 13, tzinfo=UTC)
    # Two files a day, and more than six months of log for the retention purge.
    assert len(list((root / "access_log").glob("*/part-1.parquet"))) > 100
    assert NOW - min(log["event_time"].to_pylist()) > timedelta(days=190)


def test_login_logout_have_no_assignment_or_path(log: pa.Table) -> None:
    rows = log.select(["access_type", "assignment_id", "project_path"]).to_pylist()
    kinds = {r["access_type"] for r in rows}
    assert kinds == {"login", "logout", "project_open", "project_close"}
    for r in rows:
        if r["access_type"] in ("login", "logout"):
            assert r["assignment_id"] is None and r["project_path"] is None
        else:
            assert r["assignment_id"] is not None
            assert r["project_path"].startswith("/home/project")


def test_events_reference_the_course(log: pa.Table, tiny: tuple[Path, LakeSummary]) -> None:
    root, summary = tiny
    for course_id in summary.course_ids:
        known = {a["id"] for a in assignments(course_doc(root, course_id))}
        rows = log.filter(pc.equal(log["course_id"], course_id))
        used = set(rows["assignment_id"].drop_null().to_pylist())
        assert used - known <= set(summary.deleted_assignment_ids[course_id])
        assert len(used & known) == len(known)
    ips = set(log["ip"].to_pylist())
    assert any(":" in ip for ip in ips) and any("." in ip for ip in ips)


def test_left_users_and_outsiders(
    log: pa.Table, users: pa.Table, tiny: tuple[Path, LakeSummary]
) -> None:
    root, summary = tiny
    directory = set(users["user_id"].to_pylist())
    assert set(log["user_id"].to_pylist()) <= directory
    in_any_roster: set[int] = set()
    for course_id in summary.course_ids:
        members = set(roster(root, course_id)["user_id"].to_pylist())
        in_any_roster |= members
        left = set(summary.left_users[course_id])
        assert left and left <= directory and not left & members
        active = set(log.filter(pc.equal(log["course_id"], course_id))["user_id"].to_pylist())
        assert active & left, f"no events of users who left {course_id}"
    assert set(summary.outsiders) <= directory
    assert not set(summary.outsiders) & in_any_roster


# ---------------------------------------------------------------- nasty data


def test_nasty_user_names(users: pa.Table, tiny: tuple[Path, LakeSummary]) -> None:
    root, _ = tiny
    students = set(roster(root, 1001)["user_id"].to_pylist())
    rows = [r for r in users.to_pylist() if r["user_id"] in students]
    names = [r["first_name"] + " " + r["last_name"] for r in rows]
    text = "\n".join(names)
    for needle in ("Zoë", "李", "Ø", "🌸", ",", '"', "\n", "\r", "\t"):
        assert needle in text, needle
    for start in FORMULA_STARTS:
        assert any(n.startswith(start) for n in names), start
        assert any(r["username"].startswith(start) for r in rows), start
    assert len(names) > len(set(names)), "expected two students with the same name"
    assert any(r["first_name"] == "" for r in rows)


def test_nasty_assignment_names(tiny: tuple[Path, LakeSummary]) -> None:
    root, summary = tiny
    for course_id in summary.course_ids:
        items = assignments(course_doc(root, course_id))
        names = [a["name"] for a in items]
        assert len(names) > len(set(names)), "expected a repeated assignment name"
        joined = "".join(names)
        for needle in ("/", "..", ":", "*", "?"):
            assert needle in joined
        assert any(n.endswith(".") for n in names) and any(n.endswith(" ") for n in names)
        for key in ("book", "stack", "lti"):
            assert any(a.get(key) for a in items), key
            assert any(key in a and a[key] is None for a in items), key
            assert any(key not in a for a in items), key


def test_nasty_workspaces(tiny: tuple[Path, LakeSummary]) -> None:
    root, summary = tiny
    for course_id in summary.course_ids:
        base = root / "workspaces" / str(course_id)
        students = [
            r["user_id"] for r in roster(root, course_id).to_pylist() if r["role"] == "Student"
        ]
        for student in summary.students_without_workspaces[course_id]:
            assert student in students
            assert not list(base.glob(f"*/{student}"))
        files = [p for p in base.rglob("*") if p.is_file()]
        rel = [p.relative_to(base).parts[2:] for p in files]  # below <assignment>/<user>/
        assert any(p.stat().st_size == 0 for p in files)
        assert any(len(parts) >= 9 for parts in rel), "8+ folders deep"
        assert any(" " in parts[-1] for parts in rel)
        assert any(not "/".join(parts).isascii() for parts in rel)
        assert any(parts[-1].startswith(".") for parts in rel)
        # A student with an assignment and no workspace for it (missing, never empty).
        present = {(p.parts[0], p.parts[1]) for p in (f.relative_to(base) for f in files)}
        assignment_dirs = {p.name for p in base.iterdir()}
        assert len(present) < len(assignment_dirs) * len(students)
    files = [p for p in (root / "workspaces").rglob("*") if p.is_file() and p.stat().st_size > 200]
    ratios = [len(zlib.compress(p.read_bytes())) / p.stat().st_size for p in files]
    assert any(r < 0.5 for r in ratios), "compressible text"
    assert any(r > 0.95 for r in ratios), "incompressible binary"
    assert summary.workspace_files == len(
        [p for p in (root / "workspaces").rglob("*") if p.is_file()]
    )
    assert summary.workspace_bytes == sum(
        p.stat().st_size for p in (root / "workspaces").rglob("*") if p.is_file()
    )


# ---------------------------------------------------------------- determinism and scale


def test_same_seed_same_bytes(tmp_path: Path, tiny: tuple[Path, LakeSummary]) -> None:
    spec = replace(tiny_lake_spec(), workspaces=False)
    summary = generate_lake(open_location(str(tmp_path)), spec, now=NOW)
    first, _ = tiny
    for rel in (
        "directory/users.parquet",
        "courses/1001/course.json",
        "courses/1003/roster.parquet",
        "access_log/event_date=2026-11-02/part-1.parquet",
        "access_log/event_date=2026-11-28/part-0.parquet",
    ):
        assert (tmp_path / rel).read_bytes() == (first / rel).read_bytes(), rel
    # Turning workspaces off changes nothing else.
    assert summary.events_per_course == tiny[1].events_per_course


def test_other_seed_other_data(tmp_path: Path, users: pa.Table) -> None:
    spec = replace(tiny_lake_spec(), seed=8, workspaces=False, days=3)
    generate_lake(open_location(str(tmp_path)), spec, now=NOW)
    other = pq.read_table(tmp_path / "directory" / "users.parquet")
    assert other["user_id"].to_pylist() != users["user_id"].to_pylist()


def test_course_sizes_are_skewed(tmp_path: Path) -> None:
    spec = LakeSpec(courses=100, students=4, events=60_000, days=3, workspaces=False)
    summary = generate_lake(open_location(str(tmp_path)), spec, now=NOW)
    counts = list(summary.events_per_course.values())
    assert counts == sorted(counts, reverse=True)
    assert summary.course_ids[0] == 1001
    share = counts[0] / summary.events
    assert 0.10 <= share <= 0.15
    assert counts[0] > 8 * counts[len(counts) // 2]


def test_one_course_gets_everything(tmp_path: Path) -> None:
    spec = LakeSpec(courses=1, students=3, events=500, days=2, workspaces=False)
    summary = generate_lake(open_location(str(tmp_path)), spec, now=NOW)
    assert summary.events_per_course == {1001: 500}
    assert summary.days == 2


def test_refuses_to_overwrite_unless_asked(tmp_path: Path) -> None:
    lake = open_location(str(tmp_path))
    spec = LakeSpec(courses=1, students=2, events=50, days=1, workspaces=False)
    generate_lake(lake, spec, now=NOW)
    with pytest.raises(FileExistsError):
        generate_lake(lake, spec, now=NOW)
    generate_lake(lake, replace(spec, days=2), now=NOW, overwrite=True)
    assert len(list((tmp_path / "access_log").iterdir())) == 2


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = str(tmp_path / "lake")
    argv = ["--url", url, "--seed", "3", "--courses", "2", "--students", "3", "--events", "400"]
    argv += ["--days", "5", "--workspaces", "false", "--now", "2026-11-28T12:00:00Z"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "400" in out and url in out
    assert not (tmp_path / "lake" / "workspaces").exists()
    assert len(list((tmp_path / "lake" / "access_log").iterdir())) == 5
    assert main([*argv, "--no-workspaces"]) == 2  # exists already
