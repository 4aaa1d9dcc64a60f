"""Writing the lake's small files: the directory, course.json and rosters."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from course_exports.storage import Location
from sample_lake.people import People, SampleCourse

USERS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("username", pa.string()),
        ("email", pa.string()),
        ("first_name", pa.string()),
        ("last_name", pa.string()),
    ]
)
ROSTER_SCHEMA = pa.schema([("user_id", pa.int64()), ("role", pa.string())])

# --------------------------------------------------------------------------- writing


def open_for_write(lake: Location, path: str) -> Any:
    """A new file at ``path`` (a :meth:`Location.path`) that appears once written."""
    return lake.open_write(lake.relative(path))


def write_parquet(
    lake: Location,
    table: pa.Table,
    path: str,
    *,
    row_group_size: int | None = None,
) -> None:
    with open_for_write(lake, path) as fh:
        pq.write_table(table, fh, row_group_size=row_group_size)


def write_directory(lake: Location, people: People) -> None:
    table = pa.Table.from_arrays(
        [
            pa.array(people.user_ids, pa.int64()),
            pa.array(people.usernames, pa.string()),
            pa.array(people.emails, pa.string()),
            pa.array(people.first_names, pa.string()),
            pa.array(people.last_names, pa.string()),
        ],
        schema=USERS_SCHEMA,
    )
    write_parquet(lake, table, lake.path("directory", "users.parquet"))


def write_course(
    lake: Location, course: SampleCourse, people: People, rng: np.random.Generator
) -> None:
    text = json.dumps(course.document, ensure_ascii=False, indent=2) + "\n"
    with open_for_write(lake, lake.path("courses", course.course_id, "course.json")) as fh:
        fh.write(text.encode("utf-8"))
    members = np.array(course.teachers + course.students, dtype=np.int64)
    roles = ["Teacher"] * len(course.teachers) + ["Student"] * len(course.students)
    order = rng.permutation(len(members))  # the LMS keeps no particular order
    table = pa.Table.from_arrays(
        [
            pa.array(people.user_ids[members[order]], pa.int64()),
            pa.array([roles[i] for i in order.tolist()], pa.string()),
        ],
        schema=ROSTER_SCHEMA,
    )
    write_parquet(lake, table, lake.path("courses", course.course_id, "roster.parquet"))
