"""What to generate (:class:`LakeSpec`) and what was written (:class:`LakeSummary`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

#: Independent random streams, so e.g. turning workspaces off leaves the log as is.
STREAM_PEOPLE, STREAM_COURSES, STREAM_LOG, STREAM_WORKSPACES = range(4)


class LogLayout(StrEnum):
    """How a day's events are laid out in parquet files; the events are the same in each.

    The contract allows any number of files a day in any order, and LMSs differ: each
    layout is one a real lake has, and the export must give the same CSV on all of them.
    """

    #: ``files_per_day`` files, rows in session order (not time order), one row group each.
    PARTS = "parts"
    #: One file a day with one row group, rows shuffled: the issue's "no particular order".
    DAILY_UNSORTED = "daily-unsorted"
    #: One file per hour of events (up to 24 a day), each in session order.
    HOURLY = "hourly"
    #: One file a day sorted by course and time, in small row groups.
    COURSE_SORTED = "course-sorted"


#: Rows per row group of the course-sorted layout: small, so a course's rows are found
#: from row-group statistics.
COURSE_SORTED_ROW_GROUP = 8_192


@dataclass(frozen=True)
class LakeSpec:
    """What to generate. Defaults make a small lake in well under a minute."""

    seed: int = 1
    courses: int = 3
    students: int = 30  # students per course (average; courses vary in size)
    teachers: int = 2  # teachers per course
    assignments: int = 6  # assignments per course
    events: int = 20_000  # total access events over all courses and days
    days: int = 200  # the log spans this many UTC days ending at `now`'s day
    files_per_workspace: int = 4  # average files per workspace
    file_bytes: int = 4_000  # average file size (bytes)
    workspaces: bool = True  # write workspaces at all
    # platform users in directory (default: enough for all rosters + 20% extra who
    # belong to no course)
    users: int | None = None
    files_per_day: int = 1  # parquet files per day partition (layout PARTS)
    layout: LogLayout = LogLayout.PARTS
    # Course sizes follow Zipf-like weights rank**-skew. 0.8 gives the largest of 100
    # courses ~12% of the events; 1.0 gives the largest of 2,000 courses ~12% and the
    # median ~0.012% (the uneven lake of issue 10). Rosters are flatter, so the median
    # course is not tiny.
    event_skew: float = 0.8
    roster_skew: float = 0.5


@dataclass(frozen=True)
class LakeSummary:
    """What was written, plus the special users tests and demos look for."""

    course_ids: list[int]  # ids of the courses written, largest course (most events) first
    events: int
    events_per_course: dict[int, int]
    workspace_files: int
    workspace_bytes: int
    days: int  # day partitions written (days with at least one event)
    # per course: its teachers (roster order), good `requested_by` values
    teachers: dict[int, list[int]] = field(default_factory=dict)
    # per course: students who left it (in the directory and the log, not in the roster)
    left_users: dict[int, list[int]] = field(default_factory=dict)
    # users in the directory who were never in any roster (a few have events)
    outsiders: list[int] = field(default_factory=list)
    # per course: roster students with no workspace for any assignment
    students_without_workspaces: dict[int, list[int]] = field(default_factory=dict)
    # per course: assignment ids the log mentions that course.json no longer has
    deleted_assignment_ids: dict[int, list[int]] = field(default_factory=dict)


def tiny_lake_spec() -> LakeSpec:
    """A lake for unit tests: generates in a fraction of a second, every nasty case in it.

    Course 1001 is the largest and holds every special student; 1002 has no timezone
    key, 1004 a null one; 200 days reach past a 6-month retention; two files a day.
    """
    return LakeSpec(
        seed=7,
        courses=4,
        students=14,
        teachers=2,
        assignments=6,
        events=3_000,
        days=200,
        files_per_workspace=2,
        file_bytes=1_500,
        files_per_day=2,
    )


def issue_lake_spec(
    layout: LogLayout = LogLayout.DAILY_UNSORTED, events: int = 30_000_000
) -> LakeSpec:
    """The lake of issue 10: 2,000 courses of very uneven size, 200,000 users, 180 days.

    The largest course holds about 12% of the events (3.7 M of 30 M), the median about
    0.012% (3,700). No workspaces: it is for the access log.
    """
    return LakeSpec(
        seed=20260630,
        courses=2_000,
        students=85,
        teachers=2,
        assignments=6,
        events=events,
        days=180,
        workspaces=False,
        users=200_000,
        layout=layout,
        event_skew=1.0,
        roster_skew=0.5,
    )


def rng_for(spec: LakeSpec, *stream: int) -> np.random.Generator:
    """The generator of one stream (see ``STREAM_*``) of this spec's seed."""
    return np.random.default_rng([spec.seed, *stream])
