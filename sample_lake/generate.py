"""generate_lake: the whole lake from a spec, the same bytes for the same spec and now."""

from __future__ import annotations

from datetime import UTC, datetime

from course_exports.storage import Location
from sample_lake.access_log import build_log_model, write_access_log
from sample_lake.people import build_courses, build_people
from sample_lake.spec import STREAM_COURSES, LakeSpec, LakeSummary, rng_for
from sample_lake.tables import write_course, write_directory
from sample_lake.workspaces import write_workspaces

LAKE_TOP_LEVEL = ("directory", "courses", "workspaces", "access_log")

# --------------------------------------------------------------------------- entry points


def _check_spec(spec: LakeSpec) -> None:
    problems = [
        name for name in ("courses", "students", "days", "files_per_day") if getattr(spec, name) < 1
    ]
    problems += [
        name
        for name in ("teachers", "assignments", "events", "files_per_workspace", "file_bytes")
        if getattr(spec, name) < 0
    ]
    if problems:
        raise ValueError(f"invalid lake spec: {', '.join(problems)} out of range")


def _clear_or_refuse(lake: Location, overwrite: bool) -> None:
    existing = [name for name in LAKE_TOP_LEVEL if name in lake.list_names()]
    if not existing:
        return
    if not overwrite:
        raise FileExistsError(
            f"{lake.url} already holds {', '.join(existing)}; pass overwrite=True to replace them"
        )
    for name in existing:
        lake.delete_tree(name)


def generate_lake(
    lake: Location, spec: LakeSpec, *, now: datetime, overwrite: bool = False
) -> LakeSummary:
    """Write a whole sample lake under ``lake``; same spec and ``now`` give the same bytes.

    Refuses (FileExistsError) to write over an existing lake unless ``overwrite``, which
    first deletes ``directory/``, ``courses/``, ``workspaces/`` and ``access_log/``.
    A naive ``now`` is taken as UTC.
    """
    _check_spec(spec)
    now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
    _clear_or_refuse(lake, overwrite)
    people, membership = build_people(spec)
    courses = build_courses(spec, membership)
    write_directory(lake, people)
    roster_rng = rng_for(spec, STREAM_COURSES)
    for course in courses:
        write_course(lake, course, people, roster_rng)
    model = build_log_model(spec, courses, people, membership.outsiders)
    per_course, days = write_access_log(lake, spec, model, now)
    files = total_bytes = 0
    without: dict[int, list[int]] = {}
    if spec.workspaces:
        files, total_bytes, without = write_workspaces(lake, spec, courses, people)

    def ids(users: list[int]) -> list[int]:
        return [int(people.user_ids[u]) for u in users]

    events_per_course = {
        int(cid): int(n) for cid, n in zip(model.course_ids, per_course, strict=True)
    }
    order = sorted(events_per_course, key=lambda cid: (-events_per_course[cid], cid))
    return LakeSummary(
        course_ids=order,
        events=int(per_course.sum()),
        events_per_course={cid: events_per_course[cid] for cid in order},
        workspace_files=files,
        workspace_bytes=total_bytes,
        days=days,
        teachers={c.course_id: ids(c.teachers) for c in courses},
        left_users={c.course_id: ids(c.left) for c in courses},
        outsiders=ids(membership.outsiders),
        students_without_workspaces=without,
        deleted_assignment_ids={c.course_id: list(c.deleted_assignment_ids) for c in courses},
    )
