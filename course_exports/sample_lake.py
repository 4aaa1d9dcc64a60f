"""A synthetic LMS lake (CONTRACT section 2) for tests, demos and benchmarks.

Everything the LMS would write: the user directory, courses with rosters, student
workspaces and the hive-partitioned access log, full of the awkward data real users
produce (Unicode, quotes, newlines, formula-like names, duplicate and path-hostile
assignment names, odd file names). Output is a pure function of the spec, the seed and
``now``: every random draw comes from numpy generators seeded per stream, so the same
call writes the same bytes.

The log is generated one day at a time with vectorised numpy and written with pyarrow,
so memory stays bounded by one day however many events there are.

    python -m course_exports.sample_lake --url ./var/lake --seed 1 --courses 3
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import ipaddress
import json
import math
import os
import sys
import time
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from course_exports.access_log import ACCESS_LOG_SCHEMA
from course_exports.storage import Location, open_location

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

LAKE_TOP_LEVEL = ("directory", "courses", "workspaces", "access_log")

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
ACCESS_TYPES = ("login", "logout", "project_open", "project_close")
LOGIN, LOGOUT, PROJECT_OPEN, PROJECT_CLOSE = range(4)

FIRST_COURSE_ID = 1001
FIRST_USER_ID = 100_001
FIRST_UNIT_ID = 1
FIRST_ASSIGNMENT_ID = 5001
ASSIGNMENTS_PER_UNIT = 3

# Course sizes follow Zipf-like weights rank**-exponent. 0.8 gives the largest of 100
# courses ~12% of the events; rosters are flatter so the median course is not tiny.
EVENT_SKEW = 0.8
ROSTER_SKEW = 0.5
LEFT_FRACTION = 0.1  # of a course's students who left it during the log
OUTSIDER_FRACTION = 0.2  # extra directory users in no course (default `users`)
OUTSIDER_SESSION_P = 0.002  # sessions by users who were never in any roster
GHOST_ASSIGNMENT_P = 0.002  # project opens of an assignment deleted from course.json
MEAN_PROJECTS_PER_SESSION = 2.0
LOGOUT_P = 0.93  # the rest time out without a logout event
MEAN_EVENT_GAP_S = 8 * 60
SECOND_IP_P = 0.2
IPV6_P = 0.3
WEEKEND_WEIGHT = 0.45
DAY_US = 86_400 * 1_000_000

MISSING_WORKSPACE_P = 0.15
BINARY_FILE_P = 0.2
ZERO_BYTE_FILE_P = 0.04
FILE_SIZE_SIGMA = 1.0
TEXT_BLOCK_BYTES = 64 * 1024
WRITE_CHUNK_BYTES = 1024 * 1024
LEFT_USER_WORKSPACE_P = 0.5
PIPE_FILE_BYTES = 4 * 1024 * 1024
PIPE_BATCH_FILES = 64
PIPE_BATCH_BYTES = 32 * 1024 * 1024


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
    files_per_day: int = 1  # parquet files per day partition


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


# --------------------------------------------------------------------------- names

# (first name, last name, username, email) of the students real data always has.
# Every course's student list starts with these (rotated), so any course with a few
# students holds some and the largest course (1001) holds all of them.
SPECIAL_STUDENTS: tuple[tuple[str, str, str, str], ...] = (
    ("Zoë", "Ørjansen", "zoe.orjansen", "zoe.orjansen@example.edu"),
    ("李", "雷", "li.lei", "li.lei@example.cn"),
    ("Smith, Jr.", "John", "john.smith.jr", "john.smith.jr@example.edu"),
    ('Robert "Bobby"', "O'Tables", "bobby.tables", "bobby+tables@example.edu"),
    ("Multi\nLine", "Name\r\nHere", "multi.line", "multi.line@example.edu"),
    ('=HYPERLINK("http://evil.example","click")', "=1+2", "=cmd", "cmd@example.edu"),
    ("+49 Plus", "-Minus", "+plus", "+plus@example.edu"),
    ("@Alice", "\tTabbed", "@alice", "alice@example.edu"),
    ("-1+1", "\rCarriage", "-minus", "-minus@example.edu"),
    ("Maria", "García", "maria.garcia", "maria.garcia@example.es"),
    ("Maria", "García", "maria.garcia2", "m.garcia@example.es"),
    ("Ana 🌸", "López 🚀", "ana.lopez", "ana.lopez@example.mx"),
    ("محمد", "عبدالله", "mohammed.abdullah", "m.abdullah@example.sa"),
    ("José", "Jose\u0301 Núñez", "jose.nunez", "jose.nunez@example.es"),  # NFD accent
    ("", "Sukarno", "sukarno", "sukarno@example.id"),
)

# fmt: off
FIRST_NAMES = (
    "Alice", "Bob", "Carla", "Dmitri", "Emma", "Farid", "Grace", "Hiroshi", "Ingrid", "Jamal",
    "Kateřina", "Liam", "Mei", "Noah", "Olga", "Pedro", "Quentin", "Rania", "Sven", "Tomás",
    "Uma", "Viktor", "Wen", "Xavier", "Yuki", "Zoë", "Ørjan", "Émile", "Siobhán", "Łukasz",
    "Ahmet", "Björk", "Chidi", "Daniela", "Eun-ji", "Fatima", "Giovanni", "Hannah", "Ivan",
    "Jürgen", "Maria", "John", "Priya", "Sofia", "Lars",
)
LAST_NAMES = (
    "Smith", "Müller", "García", "Nguyen", "Kowalski", "O'Brien", "Jensen", "Rossi", "Novák",
    "Tanaka", "Okafor", "Silva", "Schmidt", "Dubois", "Petrov", "Yılmaz", "Andersson", "Kim",
    "Chen", "Hernández", "van der Berg", "Søndergaard", "Papadopoulos", "Ivanova", "Lefèvre",
    "Khan", "Brown", "Wang", "de la Cruz", "Ó Súilleabháin",
)
# fmt: on
COURSE_NAMES = (
    "Intro to Python",
    'C/C++: Pointers, Memory & "Undefined Behaviour"',
    "Datenbanken & SQL – Grundlagen",
    "算法导论 (Algorithms)",
    "Web Development 101",
    "Machine Learning, Applied",
    "Data Structures",
    "Operating Systems",
)
# The first assignments of every course (rotated): duplicates and names that are
# unusable as folder names as they stand.
SPECIAL_ASSIGNMENT_NAMES = (
    "Homework",
    "Homework",
    "Lab 1/2: Loops *and* more?",
    "../../etc/passwd",
    "Final project...",
    "Übung 3 – Schleifen 🚀  ",
)
# fmt: off
ASSIGNMENT_NAMES = (
    "Quiz 1", "Exercise: Functions", "Homework", "CON", "Recursion", "Sorting", "Mini project",
    "Debugging", "Classes & Objects", "Files and I/O",
)
# fmt: on
BOOK_NAMES = (
    "Python Fundamentals",
    "Think Python, 2nd ed.",
    'SQL: "The Good Parts"',
    "Algorithmen – Eine Einführung",
)
STACKS = (
    {"id": "python-3.12", "name": "Python 3.12 (Ubuntu 24.04)"},
    {"id": "java-21", "name": "Java 21 (Temurin)"},
    {"id": "node-22", "name": "Node.js 22, npm 10"},
    {"id": "cpp-gcc14", "name": "C/C++ (GCC 14)"},
)
# Half-hour and 45-minute offsets catch code that assumes whole-hour zones.
# fmt: off
TIMEZONES = (
    "America/New_York", "Europe/Berlin", "Asia/Kolkata", "Australia/Adelaide",
    "Pacific/Chatham", "UTC",
)
# fmt: on
PROJECT_PATHS = (
    "/home/project",
    "/home/project/main.py",
    "/home/project/src/app.py",
    "/home/project/README.md",
    "/home/project/notes with spaces.txt",
    "/home/project/données/été.csv",
    "/home/project/a/b/c/d/e/f/g/h/deep.txt",
    "/home/project/.gitignore",
    "/home/project/tests/test_main.py",
    "/home/project/index.html",
)
# fmt: off
TEXT_FILE_NAMES = (
    "main.py", "README.md", "src/app.py", "src/utils/helpers.py", "tests/test_main.py",
    "notes with spaces.txt", "données/été.csv", "日本語のメモ.txt", ".gitignore",
    ".config/settings.json", "index.html", "style.css", "Makefile", "notes [draft] v2.txt",
    "src/lib/core/engine/parts/x/y/z/deep_module.py", "emoji 🎉 notes.md", "data/input.csv",
    "Main.java",
)
BINARY_FILE_NAMES = (
    "data/blob.bin", "image.png", "archive.zip", "model.pkl", "report.pdf",
    "assets/photo 1.jpg", "build/a.out",
)
# fmt: on
# The first workspace of every course: one of each awkward kind of file.
# (relative path, "text" | "binary" | "empty")
SPECIAL_WORKSPACE_FILES = (
    (".gitignore", "text"),
    ("notes with spaces.txt", "text"),
    ("données/été 🎉.csv", "text"),
    ("a/b/c/d/e/f/g/h/deep.txt", "text"),
    ("empty.txt", "empty"),
    ("data/random.bin", "binary"),
    ("src/main.py", "text"),
)
# fmt: off
CODE_WORDS = (
    "def", "return", "for", "in", "range", "if", "else", "while", "import", "class", "self",
    "print", "value", "result", "items", "index", "count", "total", "data", "None", "True",
    "False", "append", "len", "sum", "list", "dict", "key", "node", "left", "right", "student",
    "score", "# TODO", "# fixme", "=", "+=", "==", "(", ")",
)
# fmt: on


# --------------------------------------------------------------------------- model


@dataclass(frozen=True)
class _Course:
    index: int
    course_id: int
    teachers: list[int]  # user indices (into _People)
    students: list[int]
    left: list[int]
    assignment_ids: list[int]
    deleted_assignment_ids: list[int]
    never_started: int | None
    document: dict[str, Any]


@dataclass
class _People:
    user_ids: IntArray
    first_names: list[str]
    last_names: list[str]
    usernames: list[str]
    emails: list[str]


def _rng(spec: LakeSpec, *stream: int) -> np.random.Generator:
    # One independent stream per part, so e.g. turning workspaces off leaves the log as is.
    return np.random.default_rng([spec.seed, *stream])


STREAM_PEOPLE, STREAM_COURSES, STREAM_LOG, STREAM_WORKSPACES = range(4)


def _zipf_weights(n: int, exponent: float) -> FloatArray:
    weights = np.arange(1, n + 1, dtype=np.float64) ** -exponent
    return weights / weights.sum()


def _roster_sizes(spec: LakeSpec) -> list[int]:
    weights = _zipf_weights(spec.courses, ROSTER_SKEW)
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

    def build(self) -> _People:
        n = len(self.first)
        # Ids are sparse and not in creation order, like a directory after years of use.
        gaps = self.rng.integers(1, 4, n)
        ids = (FIRST_USER_ID - 1 + np.cumsum(gaps)).astype(np.int64)
        ids = ids[self.rng.permutation(n)]
        return _People(ids, self.first, self.last, self.usernames, self.emails)


@dataclass(frozen=True)
class _Membership:
    """Who is where, as user indices into _People, per course in course order."""

    teachers: list[list[int]]
    students: list[list[int]]
    left: list[list[int]]
    outsiders: list[int]  # in no roster, ever
    never_started: list[int | None]  # per course: a student with no workspace


def _build_people(spec: LakeSpec) -> tuple[_People, _Membership]:
    """Users in the directory and who is in which course: teachers, students, left."""
    rng = _rng(spec, STREAM_PEOPLE)
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


def _build_courses(spec: LakeSpec, membership: _Membership) -> list[_Course]:
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
            _Course(
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


# --------------------------------------------------------------------------- writing


def _open_for_write(lake: Location, path: str, made: set[str]) -> Any:
    # Local folders must exist first; S3 has no folders (and makedirs would list the bucket).
    if lake.is_local:
        parent = path.rsplit("/", 1)[0]
        if parent not in made:
            lake.fs.makedirs(parent, exist_ok=True)
            made.add(parent)
    return lake.fs.open(path, "wb")


def _write_parquet(lake: Location, table: pa.Table, path: str, made: set[str]) -> None:
    with _open_for_write(lake, path, made) as fh:
        pq.write_table(table, fh)


def _write_directory(lake: Location, people: _People, made: set[str]) -> None:
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
    _write_parquet(lake, table, lake.path("directory", "users.parquet"), made)


def _write_course(
    lake: Location, course: _Course, people: _People, rng: np.random.Generator, made: set[str]
) -> None:
    text = json.dumps(course.document, ensure_ascii=False, indent=2) + "\n"
    with _open_for_write(lake, lake.path("courses", course.course_id, "course.json"), made) as fh:
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
    _write_parquet(lake, table, lake.path("courses", course.course_id, "roster.parquet"), made)


# --------------------------------------------------------------------------- access log


class _SegmentSampler:
    """Weighted draws of one item per request from the request's own segment (course).

    All segments share one flat CDF in which segment ``s`` spans ``[s, s + 1]``, so a
    single ``searchsorted`` serves a whole day of sessions across every course.
    """

    def __init__(self, segments: Sequence[FloatArray]) -> None:
        lengths = np.array([len(w) for w in segments], dtype=np.int64)
        if (lengths == 0).any():
            raise ValueError("every segment needs at least one item")
        self.ends = np.cumsum(lengths)
        parts = []
        for s, weights in enumerate(segments):
            cdf = np.cumsum(weights) / weights.sum()
            cdf[-1] = 1.0
            parts.append(s + cdf)
        self.cdf = np.concatenate(parts)

    def sample(self, rng: np.random.Generator, segment: IntArray) -> IntArray:
        u = rng.random(len(segment))
        idx = np.searchsorted(self.cdf, segment + u, side="right").astype(np.int64)
        # s + u can round up to s + 1 for u near 1: stay inside the segment.
        return np.minimum(idx, self.ends[segment] - 1)


@dataclass(frozen=True)
class _LogModel:
    course_ids: IntArray
    course_p: FloatArray
    members: _SegmentSampler  # everyone who ever was in the course (left users too)
    current: _SegmentSampler  # current roster only
    member_user: IntArray  # flat member index -> user index (per sampler, same layout)
    member_leave_day: IntArray  # day index after which the member has no sessions
    current_user: IntArray
    outsiders: IntArray
    assignment_start: IntArray
    assignment_count: IntArray
    assignment_ids: IntArray
    deleted_ids: IntArray  # one per course
    user_ids: IntArray
    ip_pool: pa.Array  # two addresses per user: 2u and 2u + 1
    path_pool: pa.Array
    type_pool: pa.Array


def _ip_pool(rng: np.random.Generator, n_users: int) -> pa.Array:
    n = 2 * n_users
    is_v6 = rng.random(n) < IPV6_P
    v4 = rng.integers(1, 255, (n, 4))
    v6_words = rng.integers(0, 65536, (n, 4))
    addresses = []
    for i in range(n):
        if is_v6[i]:
            # Documentation prefix with a sparse host part, so compressed forms (::) occur.
            w = v6_words[i]
            value = (0x20010DB8 << 96) | (int(w[0]) << 64) | (int(w[1]) << 16) | int(w[2])
            addresses.append(str(ipaddress.IPv6Address(value)))
        else:
            a, b, c, d = (int(x) for x in v4[i])
            addresses.append(f"{a}.{b}.{c}.{d}")
    return pa.array(addresses, pa.string())


def _build_log_model(
    spec: LakeSpec, courses: list[_Course], people: _People, outsiders: list[int]
) -> _LogModel:
    rng = _rng(spec, STREAM_LOG, 0)
    n_users = len(people.user_ids)
    # Some users are far busier than others; teachers log in less than students.
    activity = rng.lognormal(0.0, 1.0, n_users)
    member_weights, current_weights = [], []
    member_user, member_leave, current_user = [], [], []
    for course in courses:
        current = course.teachers + course.students
        everyone = current + course.left
        teacher_damp = np.ones(len(current))
        teacher_damp[: len(course.teachers)] = 0.5
        current_weights.append(activity[current] * teacher_damp)
        member_weights.append(
            activity[everyone] * np.append(teacher_damp, np.ones(len(course.left)))
        )
        current_user.append(current)
        member_user.append(everyone)
        # Students leave somewhere in the middle of the log, so their events are old
        # but some stay inside a 6-month retention window.
        earliest = int(spec.days * 0.3)
        leave = rng.integers(earliest, max(int(spec.days * 0.9), earliest + 1), len(course.left))
        member_leave.append(np.concatenate([np.full(len(current), spec.days), leave]))
    counts = np.array([len(c.assignment_ids) for c in courses], dtype=np.int64)
    return _LogModel(
        course_ids=np.array([c.course_id for c in courses], dtype=np.int64),
        course_p=_zipf_weights(len(courses), EVENT_SKEW),
        members=_SegmentSampler(member_weights),
        current=_SegmentSampler(current_weights),
        member_user=np.concatenate([np.array(u, dtype=np.int64) for u in member_user]),
        member_leave_day=np.concatenate(member_leave).astype(np.int64),
        current_user=np.concatenate([np.array(u, dtype=np.int64) for u in current_user]),
        outsiders=np.array(outsiders, dtype=np.int64),
        assignment_start=np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64),
        assignment_count=counts,
        assignment_ids=np.array([a for c in courses for a in c.assignment_ids], dtype=np.int64),
        deleted_ids=np.array([c.deleted_assignment_ids[0] for c in courses], dtype=np.int64),
        user_ids=people.user_ids,
        ip_pool=_ip_pool(rng, n_users),
        path_pool=pa.array(PROJECT_PATHS, pa.string()),
        type_pool=pa.array(ACCESS_TYPES, pa.string()),
    )


def _session_lengths(rng: np.random.Generator, n_events: int) -> tuple[IntArray, BoolArray]:
    """Events per session (login, open/close pairs, logout) summing to exactly n_events."""
    mean_len = 2 + 2 * MEAN_PROJECTS_PER_SESSION
    lengths_parts: list[IntArray] = []
    logout_parts: list[BoolArray] = []
    total = 0
    while total < n_events:
        n = int((n_events - total) / mean_len * 1.2) + 16
        pairs = rng.geometric(1 / (1 + MEAN_PROJECTS_PER_SESSION), n).astype(np.int64) - 1
        has_logout = rng.random(n) < LOGOUT_P
        lengths_parts.append(1 + 2 * pairs + has_logout)
        logout_parts.append(has_logout)
        total += int(lengths_parts[-1].sum())
    lengths = np.concatenate(lengths_parts)
    has_logout = np.concatenate(logout_parts)
    ends = np.cumsum(lengths)
    n_sessions = int(np.searchsorted(ends, n_events)) + 1
    lengths, has_logout = lengths[:n_sessions].copy(), has_logout[:n_sessions].copy()
    excess = int(ends[n_sessions - 1]) - n_events
    if excess:
        # The log was cut mid-session (the day's quota): that session has no logout yet.
        lengths[-1] -= excess
        has_logout[-1] = False
    return lengths, has_logout


def _day_table(
    rng: np.random.Generator,
    model: _LogModel,
    day_index: int,
    day_start_us: int,
    span_us: int,
    n_events: int,
) -> tuple[pa.Table, IntArray]:
    """One day's events, in session order (not time order), and events per course."""
    lengths, has_logout = _session_lengths(rng, n_events)
    n_sessions = len(lengths)
    course = rng.choice(len(model.course_ids), n_sessions, p=model.course_p).astype(np.int64)

    member = model.members.sample(rng, course)
    user = model.member_user[member]
    gone = model.member_leave_day[member] < day_index
    if gone.any():
        user[gone] = model.current_user[model.current.sample(rng, course[gone])]
    if len(model.outsiders):
        stranger = rng.random(n_sessions) < OUTSIDER_SESSION_P
        user[stranger] = model.outsiders[rng.integers(0, len(model.outsiders), int(stranger.sum()))]
    ip_index = 2 * user + (rng.random(n_sessions) < SECOND_IP_P)

    # Expand sessions to events: position 0 is the login, then open/close pairs.
    first = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    session = np.repeat(np.arange(n_sessions, dtype=np.int64), lengths)
    pos = np.arange(n_events, dtype=np.int64) - first[session]
    is_logout = has_logout[session] & (pos == lengths[session] - 1)
    kind = np.where(pos % 2 == 1, PROJECT_OPEN, PROJECT_CLOSE)
    kind = np.where(is_logout, LOGOUT, kind)
    kind[pos == 0] = LOGIN
    is_project = (kind == PROJECT_OPEN) | (kind == PROJECT_CLOSE)

    # A close refers to the project its open did: draw per event, copy the open's draw.
    ev_course = course[session]
    pick = rng.random(n_events)
    path_pick = rng.integers(0, len(PROJECT_PATHS), n_events)
    ghost = rng.random(n_events) < GHOST_ASSIGNMENT_P
    opener = np.arange(n_events) - (kind == PROJECT_CLOSE)
    pick, path_pick, ghost = pick[opener], path_pick[opener], ghost[opener]
    if len(model.assignment_ids):
        start, count = model.assignment_start[ev_course], model.assignment_count[ev_course]
        slot = np.minimum(start + (pick * count).astype(np.int64), start + count - 1)
        assignment = np.where(ghost, model.deleted_ids[ev_course], model.assignment_ids[slot])
    else:
        assignment = model.deleted_ids[ev_course]

    times = _event_times(rng, lengths, first, session, pos, day_start_us, span_us)
    no_project = ~is_project
    table = pa.Table.from_arrays(
        [
            pa.array(times, pa.timestamp("us", tz="UTC")),
            pa.array(model.user_ids[user[session]], pa.int64()),
            pa.array(model.course_ids[ev_course], pa.int64()),
            pa.array(assignment, pa.int64(), mask=no_project),
            model.type_pool.take(pa.array(kind)),
            model.path_pool.take(pa.array(path_pick, mask=no_project)),
            model.ip_pool.take(pa.array(ip_index[session])),
        ],
        schema=ACCESS_LOG_SCHEMA,
    )
    per_course = np.bincount(ev_course, minlength=len(model.course_ids)).astype(np.int64)
    return table, per_course


def _event_times(
    rng: np.random.Generator,
    lengths: IntArray,
    first: IntArray,
    session: IntArray,
    pos: IntArray,
    day_start_us: int,
    span_us: int,
) -> IntArray:
    """Microsecond timestamps: sessions placed inside [day_start, day_start + span)."""
    gaps = rng.exponential(MEAN_EVENT_GAP_S * 1_000_000, len(session)).astype(np.int64)
    gaps[pos == 0] = 0
    elapsed = np.cumsum(gaps)
    elapsed -= elapsed[first][session]
    duration = elapsed[first + lengths - 1]
    # A session never crosses midnight (or `now`): squeeze the rare long ones.
    squeeze = np.minimum(1.0, (span_us - 1) / np.maximum(duration, 1))
    elapsed = (elapsed * squeeze[session]).astype(np.int64)
    duration = (duration * squeeze).astype(np.int64)
    room = span_us - duration  # >= 1
    start = np.minimum((rng.random(len(lengths)) * room).astype(np.int64), room - 1)
    return day_start_us + start[session] + elapsed


def _day_weights(first_day: date, days: int, last_day_fraction: float) -> FloatArray:
    weekday = np.array([(first_day + timedelta(d)).weekday() for d in range(days)])
    weights = np.where(weekday >= 5, WEEKEND_WEIGHT, 1.0)
    # Usage grows slowly over the term.
    weights = weights * np.linspace(0.8, 1.2, days)
    # The last day is only partly over; give it at least an hour's share.
    weights[-1] *= max(last_day_fraction, 1 / 24)
    return weights / weights.sum()


def _epoch_us(moment: datetime) -> int:
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _write_access_log(
    lake: Location, spec: LakeSpec, model: _LogModel, now: datetime, made: set[str]
) -> tuple[IntArray, int]:
    rng = _rng(spec, STREAM_LOG, 1)
    last_day = now.date()
    first_day = last_day - timedelta(days=spec.days - 1)
    now_us = _epoch_us(now)
    last_start_us = _epoch_us(datetime(last_day.year, last_day.month, last_day.day, tzinfo=UTC))
    fraction = (now_us - last_start_us) / DAY_US
    per_day = rng.multinomial(spec.events, _day_weights(first_day, spec.days, fraction))
    per_course = np.zeros(len(model.course_ids), dtype=np.int64)
    written_days = 0
    for d, n_events in enumerate(per_day.tolist()):
        if n_events == 0:
            continue
        day = first_day + timedelta(days=d)
        day_start_us = last_start_us - (spec.days - 1 - d) * DAY_US
        # On today's partition nothing happens after `now`.
        span_us = DAY_US if day != last_day else min(DAY_US, now_us - last_start_us + 1)
        table, counts = _day_table(rng, model, d, day_start_us, span_us, n_events)
        per_course += counts
        parts = min(spec.files_per_day, n_events)
        bounds = np.linspace(0, n_events, parts + 1).astype(np.int64)
        for k in range(parts):
            chunk = table.slice(int(bounds[k]), int(bounds[k + 1] - bounds[k]))
            path = lake.path("access_log", f"event_date={day.isoformat()}", f"part-{k}.parquet")
            _write_parquet(lake, chunk, path, made)
        written_days += 1
    return per_course, written_days


# --------------------------------------------------------------------------- workspaces


def _text_block(rng: np.random.Generator) -> bytes:
    """Code-like ASCII text, generated once and sliced for every text file (compressible)."""
    words = np.array(CODE_WORDS)
    out = io.StringIO()
    size = 0
    while size < TEXT_BLOCK_BYTES:
        indent = "    " * int(rng.integers(0, 4))
        line = (
            indent + " ".join(words[rng.integers(0, len(words), int(rng.integers(2, 12)))]) + "\n"
        )
        out.write(line)
        size += len(line)
    return out.getvalue().encode("ascii")[:TEXT_BLOCK_BYTES]


@dataclass
class _WorkspaceWriter:
    """Writes workspace files; on object stores small files go up in concurrent batches.

    One PUT at a time would make tens of thousands of files take many minutes on S3;
    ``fs.pipe`` of a batch runs its uploads concurrently (s3fs is async underneath).
    Memory is bounded by the batch, large files are streamed.
    """

    lake: Location
    rng: np.random.Generator
    block: bytes
    made: set[str]
    files: int = 0
    written_bytes: int = 0
    pending: dict[str, bytes] = field(default_factory=dict)
    pending_bytes: int = 0

    def write(self, path: str, kind: str, size: int) -> None:
        if not self.lake.is_local and size <= PIPE_FILE_BYTES:
            self.pending[path] = b"".join(self._chunks(kind, size))
            self.pending_bytes += size
            if len(self.pending) >= PIPE_BATCH_FILES or self.pending_bytes >= PIPE_BATCH_BYTES:
                self.flush()
        else:
            with _open_for_write(self.lake, path, self.made) as fh:
                for chunk in self._chunks(kind, size):
                    fh.write(chunk)
        self.files += 1
        self.written_bytes += size

    def flush(self) -> None:
        if self.pending:
            self.lake.fs.pipe(self.pending)
        self.pending = {}
        self.pending_bytes = 0

    def _chunks(self, kind: str, size: int) -> Iterator[bytes | memoryview]:
        if kind == "binary":
            remaining = size
            while remaining:
                n = min(remaining, WRITE_CHUNK_BYTES)
                yield self.rng.bytes(n)
                remaining -= n
        elif kind == "text":
            # Slices of one shared block, starting anywhere: compressible, never stored twice.
            view = memoryview(self.block)
            offset = int(self.rng.integers(0, len(self.block)))
            remaining = size
            while remaining:
                n = min(remaining, len(view) - offset)
                yield view[offset : offset + n]
                remaining -= n
                offset = 0


def _file_size(rng: np.random.Generator, mean: int) -> int:
    if rng.random() < ZERO_BYTE_FILE_P or mean <= 0:
        return 0
    mu = math.log(mean / (1 - ZERO_BYTE_FILE_P)) - FILE_SIZE_SIGMA**2 / 2
    return max(1, round(float(rng.lognormal(mu, FILE_SIZE_SIGMA))))


def _workspace_files(rng: np.random.Generator, spec: LakeSpec) -> list[tuple[str, str, int]]:
    """(relative path, kind, size) of one ordinary workspace."""
    n = max(1, int(rng.poisson(spec.files_per_workspace)))
    text_order = rng.permutation(len(TEXT_FILE_NAMES)).tolist()
    binary_order = rng.permutation(len(BINARY_FILE_NAMES)).tolist()
    files = []
    for k in range(n):
        if rng.random() < BINARY_FILE_P:
            name = BINARY_FILE_NAMES[binary_order.pop()] if binary_order else f"data/extra_{k}.bin"
            kind = "binary"
        else:
            name = TEXT_FILE_NAMES[text_order.pop()] if text_order else f"src/extra_{k}.py"
            kind = "text"
        files.append((name, kind, _file_size(rng, spec.file_bytes)))
    return files


def _write_workspaces(
    lake: Location, spec: LakeSpec, courses: list[_Course], people: _People, made: set[str]
) -> tuple[int, int, dict[int, list[int]]]:
    block = _text_block(_rng(spec, STREAM_WORKSPACES, 0))
    files = total_bytes = 0
    without: dict[int, list[int]] = {}
    for course in courses:
        rng = _rng(spec, STREAM_WORKSPACES, 1, course.index)
        writer = _WorkspaceWriter(lake, rng, block, made)
        never = course.never_started
        without[course.course_id] = [] if never is None else [int(people.user_ids[never])]
        for a_pos, aid in enumerate(course.assignment_ids):
            for s_pos, user in enumerate(course.students + course.left):
                uid = int(people.user_ids[user])
                root = lake.path("workspaces", course.course_id, aid, uid)
                if a_pos == 0 and s_pos == 0:
                    for rel, kind in SPECIAL_WORKSPACE_FILES:
                        size = 0 if kind == "empty" else max(1, spec.file_bytes)
                        writer.write(f"{root}/{rel}", kind, size)
                    continue
                if user == never:
                    continue
                skip_p = (
                    LEFT_USER_WORKSPACE_P if s_pos >= len(course.students) else MISSING_WORKSPACE_P
                )
                if rng.random() < skip_p:
                    continue
                for rel, kind, size in _workspace_files(rng, spec):
                    writer.write(f"{root}/{rel}", kind, size)
        writer.flush()
        files += writer.files
        total_bytes += writer.written_bytes
    return files, total_bytes, without


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
    existing = [name for name in LAKE_TOP_LEVEL if lake.exists(name)]
    if not existing:
        return
    if not overwrite:
        raise FileExistsError(
            f"{lake.url} already holds {', '.join(existing)}; pass overwrite=True to replace them"
        )
    for name in existing:
        lake.fs.rm(lake.path(name), recursive=True)
    lake.refresh()


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
    made: set[str] = set()
    people, membership = _build_people(spec)
    courses = _build_courses(spec, membership)
    _write_directory(lake, people, made)
    roster_rng = _rng(spec, STREAM_COURSES)
    for course in courses:
        _write_course(lake, course, people, roster_rng, made)
    model = _build_log_model(spec, courses, people, membership.outsiders)
    per_course, days = _write_access_log(lake, spec, model, now, made)
    files = total_bytes = 0
    without: dict[int, list[int]] = {}
    if spec.workspaces:
        files, total_bytes, without = _write_workspaces(lake, spec, courses, people, made)

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


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_now(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_INT_FLAGS = (
    "seed", "courses", "students", "teachers", "assignments", "events", "days",
    "files_per_workspace", "file_bytes", "files_per_day",
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    defaults = LakeSpec()
    parser = argparse.ArgumentParser(
        prog="python -m course_exports.sample_lake",
        description="Write a synthetic LMS lake (CONTRACT section 2).",
    )
    parser.add_argument("--url", default=os.environ.get("COURSE_EXPORT_LAKE_URL", "./var/lake"))
    parser.add_argument(
        "--s3-endpoint-url", default=os.environ.get("COURSE_EXPORT_S3_ENDPOINT_URL") or None
    )
    parser.add_argument("--now", type=_parse_now, default=None, help="default: current UTC time")
    parser.add_argument("--tiny", action="store_true", help="start from tiny_lake_spec()")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing lake")
    for name in _INT_FLAGS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=None,
            help=f"default: {getattr(defaults, name)}",
        )
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--workspaces", type=_parse_bool, nargs="?", const=True, default=None)
    parser.add_argument("--no-workspaces", dest="workspaces", action="store_false")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    base = tiny_lake_spec() if args.tiny else LakeSpec()
    overrides = {
        name: getattr(args, name)
        for name in (*_INT_FLAGS, "users", "workspaces")
        if getattr(args, name) is not None
    }
    spec = dataclasses.replace(base, **overrides)
    now = args.now or datetime.now(UTC)
    lake = open_location(args.url, s3_endpoint_url=args.s3_endpoint_url)
    started = time.perf_counter()
    try:
        summary = generate_lake(lake, spec, now=now, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    largest = summary.course_ids[0]
    print(f"sample lake written to {lake.url} in {elapsed:.1f} s")
    print(
        f"  courses:    {len(summary.course_ids)} ({', '.join(map(str, summary.course_ids[:8]))}"
        f"{', ...' if len(summary.course_ids) > 8 else ''})"
    )
    print(
        f"  events:     {summary.events:,} over {summary.days} days up to {now.isoformat()}; "
        f"largest course {largest}: {summary.events_per_course[largest]:,}"
    )
    print(f"  workspaces: {summary.workspace_files:,} files, {summary.workspace_bytes:,} bytes")
    print(f"  teacher of {largest}: {summary.teachers[largest][:1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
