import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from course_exports import lake
from course_exports.errors import LakeDataError, NotFoundError, PermissionDeniedError
from course_exports.storage import Location, open_location

ROOT = Path(__file__).resolve().parent.parent

COURSE = {
    "id": 1042,
    "name": "Intro to Python",
    "timezone": "America/New_York",
    "units": [
        {
            "id": 7,
            "name": "Week 1",
            "assignments": [
                {
                    "id": 501,
                    "name": "Hello World",
                    "book": None,
                    "stack": {"id": "python-3.12", "name": "Python 3.12"},
                    "lti": {
                        "launch_url": "https://lms.example/lti/501",
                        "resource_link_id": "a501",
                    },
                },
                {"id": 502, "name": "Ch. 2", "book": "Python Fundamentals"},
            ],
        }
    ],
}


@pytest.fixture
def root(tmp_path: Path) -> Location:
    (tmp_path / "courses/1042").mkdir(parents=True)
    (tmp_path / "courses/1042/course.json").write_text(json.dumps(COURSE))
    pq.write_table(
        pa.table({"user_id": pa.array([1, 2], pa.int64()), "role": ["Teacher", "Student"]}),
        tmp_path / "courses/1042/roster.parquet",
    )
    (tmp_path / "directory").mkdir()
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([1, 2, 3], pa.int64()),
                "username": ["t", "s", "x"],
                "email": ["t@x", "s@x", "x@x"],
                "first_name": ["Tea", "Stu", "Ex"],
                "last_name": ["Cher", "Dent", "It"],
            }
        ),
        tmp_path / "directory/users.parquet",
    )
    return open_location(str(tmp_path))


def test_course_and_labels(root: Location) -> None:
    course = lake.read_course(root, 1042)
    assert course.assignment_ids() == [501, 502]
    assert course.assignment_labels().rows() == [(501, "Hello World"), (502, "Python Fundamentals")]
    assert course.units[0].assignments[1].stack is None


def test_unknown_course(root: Location) -> None:
    with pytest.raises(NotFoundError, match="course 9"):
        lake.read_course(root, 9)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"id": 1042}), "name"),
        (json.dumps({**COURSE, "id": 1}), "expected 1042"),
        (
            json.dumps({**COURSE, "units": [{"id": 1, "name": "u", "assignments": [{"id": "x"}]}]}),
            "units.0",
        ),
    ],
)
def test_damaged_course_json(root: Location, text: str, problem: str) -> None:
    Path(root.path("courses/1042/course.json")).write_text(text)
    with pytest.raises(LakeDataError, match=problem) as err:
        lake.read_course(root, 1042)
    assert err.value.path.endswith("courses/1042/course.json")


def test_roster_checks(root: Location) -> None:
    path = root.path("courses/1042/roster.parquet")
    pq.write_table(pa.table({"user_id": ["1"], "role": ["Teacher"]}), path)
    with pytest.raises(LakeDataError, match="'user_id' is string, expected int64"):
        lake.read_roster(root, 1042)
    pq.write_table(pa.table({"user_id": pa.array([1], pa.int64())}), path)
    with pytest.raises(LakeDataError, match="missing column 'role'"):
        lake.read_roster(root, 1042)
    pq.write_table(pa.table({"user_id": pa.array([1], pa.int64()), "role": ["Admin"]}), path)
    with pytest.raises(LakeDataError, match="unknown role 'Admin'"):
        lake.read_roster(root, 1042)
    Path(path).write_bytes(b"PAR1garbage")
    with pytest.raises(LakeDataError, match="not a readable parquet file"):
        lake.read_roster(root, 1042)


def test_users_must_be_unique(root: Location) -> None:
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([1, 1], pa.int64()),
                **{c: ["a", "b"] for c in ("username", "email", "first_name", "last_name")},
            }
        ),
        root.path("directory/users.parquet"),
    )
    with pytest.raises(LakeDataError, match="user_id 1 is not unique"):
        lake.read_users(root)


def test_directory_is_reparsed_only_when_its_bytes_change(root: Location) -> None:
    first = lake.read_users(root)
    assert lake.read_users(root) is first  # same bytes: the frame parsed last
    pq.write_table(
        pa.table(
            {
                "user_id": pa.array([1, 9], pa.int64()),
                **{c: ["a", "b"] for c in ("username", "email", "first_name", "last_name")},
            }
        ),
        root.path("directory/users.parquet"),
    )
    changed = lake.read_users(root)
    assert changed["user_id"].to_list() == [1, 9]
    # A damaged directory is refused even right after a good one was read.
    Path(root.path("directory/users.parquet")).write_bytes(b"PAR1 not really")
    with pytest.raises(LakeDataError, match="not a readable parquet file"):
        lake.read_users(root)


def test_a_roster_is_reparsed_only_when_its_bytes_change(root: Location) -> None:
    first = lake.read_roster(root, 1042)
    assert lake.read_roster(root, 1042) is first
    path = root.path("courses/1042/roster.parquet")
    pq.write_table(pa.table({"user_id": [1, 1], "role": ["Teacher", "Student"]}), path)
    with pytest.raises(LakeDataError, match="listed twice"):
        lake.read_roster(root, 1042)  # checked again: never the frame of other bytes
    pq.write_table(pa.table({"user_id": [1, 5], "role": ["Teacher", "Student"]}), path)
    assert lake.read_roster(root, 1042)["user_id"].to_list() == [1, 5]
    # A handful of tables are kept, the oldest dropped first: memory stays bounded.
    for course_id in range(2000, 2010):
        target = Path(root.path(f"courses/{course_id}/roster.parquet"))
        target.parent.mkdir(parents=True)
        pq.write_table(pa.table({"user_id": [course_id], "role": ["Teacher"]}), target)
        assert lake.read_roster(root, course_id)["user_id"].to_list() == [course_id]
    assert len(lake._PARSED) == lake._PARSED_KEPT
    Path(root.path("directory/users.parquet")).unlink()
    with pytest.raises(LakeDataError, match="file is missing"):
        lake.read_users(root)


def test_require_teacher(root: Location) -> None:
    course = lake.read_course(root, 1042)
    roster, users = lake.read_roster(root, 1042), lake.read_users(root)
    assert lake.require_teacher(course, roster, users, 1).email == "t@x"
    with pytest.raises(PermissionDeniedError, match="user 2 is a Student"):
        lake.require_teacher(course, roster, users, 2)
    with pytest.raises(PermissionDeniedError, match="user 3 is not in the roster"):
        lake.require_teacher(course, roster, users, 3)


def test_roster_strings_may_be_large_or_dictionary_encoded(root: Location) -> None:
    """pandas writes ``category`` columns dictionary-encoded, and some writers use
    large_string: both are strings to the exports."""
    path = root.path("courses/1042/roster.parquet")
    roles = pa.array(["Teacher", "Student"]).dictionary_encode()
    extra = pa.array(["x", "y"], pa.large_string())
    pq.write_table(
        pa.table({"user_id": pa.array([1, 2], pa.int64()), "role": roles, "note": extra}), path
    )
    roster = lake.read_roster(root, 1042)
    assert roster.columns == ["user_id", "role"]
    assert roster.schema["role"] == pl.String
    assert roster.rows() == [(1, "Teacher"), (2, "Student")]
    large = pa.array(["Teacher", "Student"], pa.large_string())
    pq.write_table(pa.table({"user_id": pa.array([1, 2], pa.int64()), "role": large}), path)
    assert lake.read_roster(root, 1042).rows() == [(1, "Teacher"), (2, "Student")]


def test_course_export_does_not_load_pyarrow() -> None:
    """pyarrow costs ~130 MB of memory: the course export reads the lake with Polars."""
    code = (
        "import sys; import flows.export_course, tasks.course_export; "
        "sys.exit('pyarrow' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0
