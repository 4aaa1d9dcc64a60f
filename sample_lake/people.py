"""Users, rosters and courses: who is where, drawn from seeded numpy streams."""

from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import Any

import numpy as np

from sample_lake.names import (
    ASSIGNMENT_NAMES,
    BOOK_NAMES,
    COURSE_NAMES,
    FIRST_NAMES,
    LAST_NAMES,
    SPECIAL_ASSIGNMENT_NAMES,
    SPECIAL_STUDENTS,
    STACKS,
    TIMEZONES,
)
from sample_lake.spec import STREAM_PEOPLE, FloatArray, IntArray, LakeSpec, rng_for

FIRST_COURSE_ID = 1001
FIRST_USER_ID = 100_001
FIRST_UNIT_ID = 1
FIRST_ASSIGNMENT_ID = 5001
ASSIGNMENTS_PER_UNIT = 3

LEFT_FRACTION = 0.1  # of a course's students who left it during the log
OUTSIDER_FRACTION = 0.2  # extra directory users in no course (default `users`)

# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class SampleCourse:
    index: int
    course_id: int
    teachers: list[int]  # user indices (into People)
    students: list[int]
    left: list[int]
    assignment_ids: list[int]
    deleted_assignment_ids: list[int]
    never_started: int | None
    document: dict[str, Any]


@dataclass
class People:
    user_ids: IntArray
    first_names: list[str]
    last_names: list[str]
    usernames: list[str]
    emails: list[str]


def zipf_weights(n: int, exponent: float) -> FloatArray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


def _roster_sizes(spec: LakeSpec) -> list[int]:
    weights = zipf_weights(spec.courses, spec.roster_skew)
    return [max(1, round(spec.students * spec.courses * w)) for w in weights]


def _ascii_slug(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    kept = "".join(c for c in decomposed.lower() if c.isascii() and c.isalnum())
    return kept or "user"


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}{n}"
    taken.add(candidate)
    return candidate


class _PeopleBuilder:
    """Hands out user indices and names in a fixed order (so ids follow the seed)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.first: list[str] = []
        self.last: list[str] = []
        self.usernames: list[str] = []
        self.emails: list[str] = []
        self.taken: set[str] = set()

    def add_special(self, template: tuple[str, str, str, str]) -> int:
        first, last, username, email = template
        unique = _unique(username, self.taken)
        if unique != username:  # the same template in another course: keep emails unique
            local, domain = email.rsplit("@", 1)
            email = f"{local}{unique[len(username) :]}@{domain}"
        return self._append(first, last, unique, email)

    def add_regular(self, n: int, *, domain: str = "example.edu") -> list[int]:
        firsts = self.rng.integers(0, len(FIRST_NAMES), n)
        lasts = self.rng.integers(0, len(LAST_NAMES), n)
        added = []
        for f, ln in zip(firsts.tolist(), lasts.tolist(), strict=True):
            first, last = FIRST_NAMES[f], LAST_NAMES[ln]
            username = _unique(f"{_ascii_slug(first)}.{_ascii_slug(last)}", self.taken)
            added.append(self._append(first, last, username, f"{username}@{domain}"))
        return added

    def _append(self, first: str, last: str, username: str, email: str) -> int:
        self.first.append(first)
        self.last.append(last)
        self.usernames.append(username)
        self.emails.append(email)
        return len(self.first) - 1

    def build(self) -> People:
        n = len(self.first)
        # Ids are sparse and not in creation order, like a directory after years of use.
        gaps = self.rng.integers(1, 4, n)
        ids = (FIRST_USER_ID - 1 + np.cumsum(gaps)).astype(np.int64)
        ids = ids[self.rng.permutation(n)]
        return People(ids, self.first, self.last, self.usernames, self.emails)


@dataclass(frozen=True)
class _Membership:
    """Who is where, as user indices into People, per course in course order."""

    teachers: list[list[int]]
    students: list[list[int]]
    left: list[list[int]]
    outsiders: list[int]  # in no roster, ever
    never_started: list[int | None]  # per course: a student with no workspace


def build_people(spec: LakeSpec) -> tuple[People, _Membership]:
    """Users in the directory and who is in which course: teachers, students, left."""
    rng = rng_for(spec, STREAM_PEOPLE)
    builder = _PeopleBuilder(rng)
    sizes = _roster_sizes(spec)
    teachers: list[list[int]] = []
    students: list[list[int]] = []
    left: list[list[int]] = []
    never_started: list[int | None] = []
    for c, size in enumerate(sizes):
        teachers.append(builder.add_regular(spec.teachers, domain="staff.example.edu"))
        n_special = min(size, len(SPECIAL_STUDENTS))
        specials = [
            builder.add_special(SPECIAL_STUDENTS[(c + k) % len(SPECIAL_STUDENTS)])
            for k in range(n_special)
        ]
        regulars = builder.add_regular(size - n_special)
        students.append(specials + regulars)
        # A student who never opened anything: no workspace directory at all.
        never_started.append(regulars[-1] if regulars else specials[-1] if size >= 2 else None)
        left.append(builder.add_regular(max(1, round(LEFT_FRACTION * size))))
    if spec.courses >= 2 and teachers[0]:
        # A teacher of one course who is a student in another: roles are per course.
        students[1].append(teachers[0][0])
    in_rosters = len(builder.first)
    total = (
        spec.users if spec.users is not None else math.ceil(in_rosters * (1 + OUTSIDER_FRACTION))
    )
    if total < in_rosters:
        raise ValueError(f"users={total} is too few: the rosters alone need {in_rosters}")
    outsiders = builder.add_regular(total - in_rosters)
    return builder.build(), _Membership(teachers, students, left, outsiders, never_started)


def _assignment_document(spec: LakeSpec, c: int, j: int, aid: int) -> dict[str, Any]:
    names = SPECIAL_ASSIGNMENT_NAMES
    if j < len(names):
        name = names[(j + c) % len(names)]
    else:
        name = ASSIGNMENT_NAMES[(j - len(names) + c) % len(ASSIGNMENT_NAMES)]
    doc: dict[str, Any] = {"id": aid, "name": name}
    # Each optional key cycles through present / null / absent, offset per key, so any
    # course with three or more assignments has every combination the contract allows.
    book_state, stack_state, lti_state = (j % 3, (j + 1) % 3, (j + 2) % 3)
    if book_state == 0:
        doc["book"] = BOOK_NAMES[(j // 3 + c) % len(BOOK_NAMES)]
    elif book_state == 1:
        doc["book"] = None
    if stack_state == 0:
        doc["stack"] = dict(STACKS[(j + c) % len(STACKS)])
    elif stack_state == 1:
        doc["stack"] = None
    if lti_state == 0:
        if j % 2:
            # A URL with commas and a quoted link id tests CSV quoting of the LTI export.
            doc["lti"] = {
                "launch_url": f"https://lms.example/lti/launch?assignment={aid}&tags=a,b",
                "resource_link_id": f'rl-{aid}-"x"',
            }
        else:
            doc["lti"] = {
                "launch_url": f"https://lms.example/lti/launch/{aid}",
                "resource_link_id": f"a{aid}",
            }
    elif lti_state == 1:
        doc["lti"] = None
    return doc


def build_courses(spec: LakeSpec, membership: _Membership) -> list[SampleCourse]:
    courses = []
    next_unit, next_assignment = FIRST_UNIT_ID, FIRST_ASSIGNMENT_ID
    for c in range(spec.courses):
        course_id = FIRST_COURSE_ID + c
        units: list[dict[str, Any]] = []
        assignment_ids: list[int] = []
        for j in range(spec.assignments):
            if j % ASSIGNMENTS_PER_UNIT == 0:
                units.append({"id": next_unit, "name": f"Week {len(units) + 1}", "assignments": []})
                next_unit += 1
            units[-1]["assignments"].append(_assignment_document(spec, c, j, next_assignment))
            assignment_ids.append(next_assignment)
            next_assignment += 1
        # An assignment deleted after students opened it: the log keeps its id.
        deleted = [next_assignment]
        next_assignment += 1
        if c == 0:
            units.append({"id": next_unit, "name": "Extra material", "assignments": []})
            next_unit += 1
        name = COURSE_NAMES[c % len(COURSE_NAMES)]
        if c >= len(COURSE_NAMES):
            name = f"{name} ({c // len(COURSE_NAMES) + 1})"
        document: dict[str, Any] = {"id": course_id, "name": name}
        if c == 3:
            document["timezone"] = None
        elif c != 1:
            document["timezone"] = TIMEZONES[c % len(TIMEZONES)]
        document["units"] = units
        courses.append(
            SampleCourse(
                index=c,
                course_id=course_id,
                teachers=membership.teachers[c],
                students=membership.students[c],
                left=membership.left[c],
                assignment_ids=assignment_ids,
                deleted_assignment_ids=deleted,
                never_started=membership.never_started[c],
                document=document,
            )
        )
    return courses
