"""Who asks for what: the course and the requester, checked before anything is written."""

from __future__ import annotations

from dataclasses import dataclass

from course_exports.lake import (
    Course,
    Person,
    read_course,
    read_roster,
    read_users,
    require_teacher,
)
from course_exports.settings import Settings
from tasks.retry import io_task


@dataclass(frozen=True)
class CourseRequest:
    course: Course
    requester: Person


def check_request(settings: Settings, course_id: int, requested_by: int) -> CourseRequest:
    lake = settings.lake()
    course = read_course(lake, course_id)
    requester = require_teacher(
        course, read_roster(lake, course_id), read_users(lake), requested_by
    )
    return CourseRequest(course, requester)


check_request_task = io_task(
    "check-request",
    task_run_name="check requester {requested_by} of course {course_id}",
    timeout_seconds=300,
)(check_request)
