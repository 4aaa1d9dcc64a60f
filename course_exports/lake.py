"""Reading what the LMS writes (CONTRACT section 2): course, roster, users.

Every reader validates what it reads and names the file in its error, so damaged data
stops a run instead of turning into a quietly wrong export.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import polars as pl
from pydantic import BaseModel, ConfigDict, ValidationError

from course_exports.errors import InputError, LakeDataError, NotFoundError, PermissionDeniedError
from course_exports.storage import Location

ROLES = ("Teacher", "Student")
USER_COLUMNS: dict[str, type[pl.DataType]] = {
    "user_id": pl.Int64,
    "username": pl.String,
    "email": pl.String,
    "first_name": pl.String,
    "last_name": pl.String,
}
ROSTER_COLUMNS: dict[str, type[pl.DataType]] = {"user_id": pl.Int64, "role": pl.String}
# Dictionary-encoded strings (pandas' category) are still strings.
_STRING_LIKE = (pl.String, pl.Categorical, pl.Enum)


class _Model(BaseModel):
    # The LMS may add keys we do not know yet; that is not damage.
    model_config = ConfigDict(extra="ignore", frozen=True)


class Stack(_Model):
    id: str
    name: str


class Lti(_Model):
    launch_url: str
    resource_link_id: str


class Assignment(_Model):
    id: int
    name: str
    book: str | None = None
    stack: Stack | None = None
    lti: Lti | None = None

    @property
    def label(self) -> str:
        """How exports name it: the book's name when it has one."""
        return self.book or self.name


class Unit(_Model):
    id: int
    name: str
    assignments: list[Assignment] = []


class Course(_Model):
    id: int
    name: str
    timezone: str | None = None
    units: list[Unit] = []

    def assignments(self) -> Iterator[tuple[Unit, Assignment]]:
        """Every assignment with its unit, in course order."""
        for unit in self.units:
            for assignment in unit.assignments:
                yield unit, assignment

    def assignment_ids(self) -> list[int]:
        return [a.id for _, a in self.assignments()]

    def assignment_labels(self) -> pl.DataFrame:
        """``assignment_id, label`` for joining onto access events."""
        rows = [(a.id, a.label) for _, a in self.assignments()]
        return pl.DataFrame(
            {"assignment_id": [r[0] for r in rows], "label": [r[1] for r in rows]},
            schema={"assignment_id": pl.Int64, "label": pl.String},
        )


@dataclass(frozen=True)
class Person:
    """A user as mail and manifests need them."""

    user_id: int
    username: str
    email: str
    first_name: str
    last_name: str

    @property
    def display_name(self) -> str:
        full = f"{self.first_name} {self.last_name}".strip()
        return full or self.username


def check_assignment_ids(course: Course, assignment_ids: Sequence[int] | None) -> None:
    """Refuse assignment ids that are not the course's (``None`` selects them all)."""
    if assignment_ids is None:
        return
    unknown = sorted(set(assignment_ids) - set(course.assignment_ids()))
    if unknown:
        raise InputError(
            "assignment_ids",
            f"{', '.join(map(str, unknown))} not in course {course.id} ({course.name})",
        )


def course_path(course_id: int, name: str) -> str:
    """A course file's path relative to the lake."""
    return f"courses/{course_id}/{name}"


def read_course(lake: Location, course_id: int) -> Course:
    """The course's ``course.json``; NotFoundError when the course does not exist."""
    path = course_path(course_id, "course.json")
    try:
        raw = lake.read_bytes(path)
    except FileNotFoundError:
        raise NotFoundError(f"course {course_id}", f"no {lake.url_for(path)}") from None
    try:
        course = Course.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise LakeDataError(lake.url_for(path), f"not valid JSON ({exc})") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "document"
        raise LakeDataError(lake.url_for(path), f"{where}: {err['msg']}") from None
    if course.id != course_id:
        raise LakeDataError(
            lake.url_for(path), f"holds course id {course.id}, expected {course_id}"
        )
    return course


def _type_name(dtype: pl.DataType | type[pl.DataType]) -> str:
    """``int64``, ``string``...: how parquet tools name a column's type in an error."""
    return str(dtype).lower()


def _read_lake_file(lake: Location, path: str) -> bytes:
    try:
        return lake.read_bytes(path)
    except FileNotFoundError:
        raise LakeDataError(lake.url_for(path), "file is missing") from None


def _parse_table(url: str, data: bytes, columns: dict[str, type[pl.DataType]]) -> pl.DataFrame:
    """The named columns of a small parquet table, type-checked against ``columns``.

    Read with Polars alone: pyarrow would add ~130 MB to every process that exports a
    course, for tables of a few thousand rows. From bytes read once: Polars reads a file
    object whole anyway, for its schema as for its data.
    """
    try:
        schema = pl.read_parquet_schema(io.BytesIO(data))
        for name, expected in columns.items():
            if name not in schema:
                raise LakeDataError(url, f"missing column {name!r}")
            actual = schema[name]
            if expected is pl.String and isinstance(actual, _STRING_LIKE):
                continue
            if actual != expected:
                raise LakeDataError(
                    url,
                    f"column {name!r} is {_type_name(actual)}, expected {_type_name(expected)}",
                )
        frame = pl.read_parquet(io.BytesIO(data), columns=list(columns))
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise LakeDataError(url, f"not a readable parquet file ({exc})") from None
    return frame.with_columns(
        pl.col(name).cast(pl.String) for name, dtype in columns.items() if dtype is pl.String
    )


def read_roster(lake: Location, course_id: int) -> pl.DataFrame:
    """``user_id, role`` of the course's current members."""
    return _read_checked(lake, course_path(course_id, "roster.parquet"), _checked_roster)


def _checked_roster(url: str, data: bytes) -> pl.DataFrame:
    frame = _parse_table(url, data, ROSTER_COLUMNS)
    bad = frame.filter(~pl.col("role").is_in(ROLES) | pl.col("role").is_null())
    if bad.height:
        raise LakeDataError(url, f"unknown role {bad['role'][0]!r} for user {bad['user_id'][0]}")
    if frame["user_id"].null_count():
        raise LakeDataError(url, "user_id has nulls")
    dupes = frame.filter(pl.col("user_id").is_duplicated())
    if dupes.height:
        raise LakeDataError(url, f"user {dupes['user_id'][0]} is listed twice")
    return frame


def read_users(lake: Location) -> pl.DataFrame:
    """The platform directory: ``user_id, username, email, first_name, last_name``.

    The directory can be the whole platform's (200,000 users: 30-50 ms to parse and
    check) and one export reads it twice (the requester's check, then the CSV's names).
    """
    return _read_checked(lake, "directory/users.parquet", _checked_users)


def _checked_users(url: str, data: bytes) -> pl.DataFrame:
    frame = _parse_table(url, data, USER_COLUMNS)
    if frame["user_id"].null_count():
        raise LakeDataError(url, "user_id has nulls")
    if frame["user_id"].n_unique() != frame.height:
        dupe = frame.filter(pl.col("user_id").is_duplicated())["user_id"][0]
        raise LakeDataError(url, f"user_id {dupe} is not unique")
    return frame


def _read_checked(
    lake: Location, path: str, check: Callable[[str, bytes], pl.DataFrame]
) -> pl.DataFrame:
    """``check(url, bytes)`` of the table at ``path``, or the frame it gave for the very
    same bytes.

    An export reads the directory and its roster twice (the request's check, then the
    CSV's names and roles): the bytes are fetched every time, so the frame is never
    stale, but parsed and checked once (~5-40 ms). The last few tables are kept.
    """
    url = lake.url_for(path)
    data = _read_lake_file(lake, path)
    found = _PARSED.pop(url, None)
    frame = found[1] if found is not None and found[0] == data else check(url, data)
    _PARSED[url] = (data, frame)  # the most recent last
    while len(_PARSED) > _PARSED_KEPT:
        del _PARSED[next(iter(_PARSED))]
    return frame


#: Tables parsed last (URL -> their bytes and frame), oldest first.
_PARSED: dict[str, tuple[bytes, pl.DataFrame]] = {}
_PARSED_KEPT = 4


def person(users: pl.DataFrame, user_id: int) -> Person | None:
    row = users.filter(pl.col("user_id") == user_id)
    if not row.height:
        return None
    rec = row.row(0, named=True)
    return Person(
        user_id=user_id,
        username=rec["username"] or "",
        email=rec["email"] or "",
        first_name=rec["first_name"] or "",
        last_name=rec["last_name"] or "",
    )


def require_teacher(
    course: Course, roster: pl.DataFrame, users: pl.DataFrame, requested_by: int
) -> Person:
    """The requester, if they are a Teacher of the course; refuse anyone else."""
    role = roster.filter(pl.col("user_id") == requested_by)["role"]
    if not role.len() or role[0] != "Teacher":
        what = "is not in the roster" if not role.len() else f"is a {role[0]}"
        raise PermissionDeniedError(
            f"user {requested_by} {what} of course {course.id} ({course.name}); "
            "only a Teacher of the course may request its exports"
        )
    who = person(users, requested_by)
    if who is None:
        raise PermissionDeniedError(
            f"user {requested_by} is a Teacher of course {course.id} but is not in the "
            "platform directory, so there is no address to send the export to"
        )
    return who
