"""The LTI settings CSV (CONTRACT 4.3): a course's launch URLs, in course order."""

from __future__ import annotations

import polars as pl

from course_exports.lake import Course
from course_exports.tabular import safe_csv

LTI_HEADER = ["Unit", "Assignment", "Launch URL", "Resource Link ID"]


def lti_rows(course: Course) -> pl.DataFrame:
    rows = [
        (unit.name, a.name, a.lti.launch_url, a.lti.resource_link_id)
        for unit, a in course.assignments()
        if a.lti is not None
    ]
    return pl.DataFrame(rows, schema=dict.fromkeys(LTI_HEADER, pl.String), orient="row")


def lti_csv(course: Course) -> tuple[bytes, int]:
    """The CSV and its number of rows (the whole course fits in memory: it is one JSON)."""
    rows = lti_rows(course)
    return safe_csv(rows, LTI_HEADER), rows.height
