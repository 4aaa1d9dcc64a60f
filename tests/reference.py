"""Independent references: CONTRACT 4.2 computed the slow, obvious way, in plain Python.

Kept apart from the engine on purpose (pyarrow rows, the csv module, zoneinfo), so a test
comparing the two catches a mistake in either.
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pyarrow.parquet as pq

from course_exports.access_log import ACCESS_TYPE_LABELS, CSV_HEADER, AccessWindow


def _null_first(value: Any) -> tuple[int, Any]:
    return (0, 0) if value is None else (1, value)


def _guard(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value[0] in "=+-@\t\r" else value


def reference_csv(
    root: str,
    *,
    course_id: int,
    window: AccessWindow,
    assignments: dict[int, str],
    roster: dict[int, str],
    users: list[tuple[int, str | None, str | None, str | None, str | None]],
    assignment_ids: Sequence[int] | None = None,
    user_ids: Sequence[int] | None = None,
    timezone: str = "UTC",
    excel: bool = False,
) -> bytes:
    """CONTRACT 4.2 the slow, obvious way: every row of every file, in Python."""
    directory = {u[0]: u[1:] for u in users}
    zone = ZoneInfo(timezone)
    rows = []
    for path in sorted(glob.glob(os.path.join(root, "access_log", "*", "*.parquet"))):
        for row in pq.read_table(path).to_pylist():
            if row["course_id"] != course_id:
                continue
            if not window.start <= row["event_time"] < window.end:
                continue
            if assignment_ids is not None and row["assignment_id"] not in assignment_ids:
                continue
            if user_ids is not None and row["user_id"] not in user_ids:
                continue
            rows.append(row)
    rows.sort(
        key=lambda r: (
            r["event_time"],
            _null_first(r["user_id"]),
            _null_first(r["access_type"]),
            _null_first(r["assignment_id"]),
            _null_first(r["project_path"]),
            _null_first(r["ip"]),
        )
    )
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\r\n")
    writer.writerow(CSV_HEADER.split(","))
    for row in rows:
        username, email, first, last = directory.get(row["user_id"], (None,) * 4)
        local = row["event_time"].astimezone(zone).replace(microsecond=0)
        session = row["access_type"] in ("login", "logout")
        label = None if session else assignments.get(row["assignment_id"])
        writer.writerow(
            [
                _guard(username),
                _guard(email),
                _guard(first),
                _guard(last),
                local.isoformat(),
                ACCESS_TYPE_LABELS[row["access_type"]],
                _guard(label),
                _guard(roster.get(row["user_id"])),
                _guard(row["project_path"]),
                _guard(row["ip"]),
            ]
        )
    data = text.getvalue().encode("utf-8")
    return b"\xef\xbb\xbf" + data if excel else data


def lake_reference_csv(lake: Path, course_id: int, window: AccessWindow, **filters: Any) -> bytes:
    """The reference over a whole lake folder: names, roles and labels read from its files."""
    course = json.loads((lake / "courses" / str(course_id) / "course.json").read_text())
    assignments = {
        a["id"]: a.get("book") or a["name"]
        for unit in course.get("units") or []
        for a in unit.get("assignments") or []
    }
    roster = {
        r["user_id"]: r["role"]
        for r in pq.read_table(lake / "courses" / str(course_id) / "roster.parquet").to_pylist()
    }
    users = [
        (u["user_id"], u["username"], u["email"], u["first_name"], u["last_name"])
        for u in pq.read_table(lake / "directory" / "users.parquet").to_pylist()
    ]
    return reference_csv(
        str(lake),
        course_id=course_id,
        window=window,
        assignments=assignments,
        roster=roster,
        users=users,
        **filters,
    )
