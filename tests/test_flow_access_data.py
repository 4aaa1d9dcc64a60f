"""export-access-data through Prefect, on a local lake: output, dedupe, refusals."""

from __future__ import annotations

import csv
import email
import hashlib
import io
from datetime import UTC, datetime, timedelta
from email.policy import default as default_policy
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from flowkit import LocalSite, assert_failed_tombstone
from reference import lake_reference_csv

from course_exports.access_log import AccessWindow, retention_cutoff
from course_exports.errors import (
    ConflictError,
    InputError,
    LakeDataError,
    NotFoundError,
    PermissionDeniedError,
)
from course_exports.lake import read_roster
from course_exports.storage import open_location
from flows.export_access_data import export_access_data

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]


def window_of(result_details: dict[str, str]) -> AccessWindow:
    return AccessWindow(
        datetime.fromisoformat(result_details["window_start"]),
        datetime.fromisoformat(result_details["window_end"]),
    )


def test_csv_matches_the_reference_and_the_retention(site: LocalSite) -> None:
    result = export_access_data(course_id=site.course, requested_by=site.teacher)
    assert result.status == "ready" and result.kind == "access-data"
    window = window_of(result.details)
    # the window is exactly the 6-month retention ending when the export ran
    assert window.start == retention_cutoff(window.end, 6)
    assert abs(window.end - datetime.now(UTC)) < timedelta(minutes=5)
    data = Path(result.file_url).read_bytes()
    assert data == lake_reference_csv(site.lake, site.course, window)
    records = list(csv.reader(io.StringIO(data.decode(), newline="")))
    assert result.counts["events"] == len(records) - 1 > 100
    assert result.size_bytes == len(data)
    assert result.sha256 == hashlib.sha256(data).hexdigest()
    assert result.download_url.startswith("http://127.0.0.1:8765/d/")
    assert site.mails() == []  # notify defaults to False for access data


def test_filters_timezone_and_excel(site: LocalSite) -> None:
    roster = read_roster(open_location(str(site.lake)), site.course)
    students = roster.filter(pl.col("role") == "Student")["user_id"].to_list()[:4]
    now = datetime.now(UTC)
    since, until = now - timedelta(days=90), (now - timedelta(days=10)).replace(tzinfo=None)
    result = export_access_data(
        course_id=site.course,
        requested_by=site.teacher,
        since=since,
        until=until,
        user_ids=students,
        timezone="America/New_York",
        excel=True,
        notify=True,
    )
    window = window_of(result.details)
    assert window.start == since and window.end == until.replace(tzinfo=UTC)
    data = Path(result.file_url).read_bytes()
    assert data.startswith(b"\xef\xbb\xbf")
    expected = lake_reference_csv(
        site.lake, site.course, window, user_ids=students, timezone="America/New_York", excel=True
    )
    assert data == expected
    assert result.counts["events"] > 0
    [mail] = site.mails()
    message = email.message_from_bytes(mail.read_bytes(), policy=default_policy)
    body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert result.download_url in body


def test_same_request_id_returns_the_same_export(site: LocalSite) -> None:
    first = export_access_data(course_id=site.course, requested_by=site.teacher, request_id="lms-1")
    again = export_access_data(course_id=site.course, requested_by=site.teacher, request_id="lms-1")
    assert again.export_id == first.export_id
    assert again.download_url == first.download_url
    assert len([p for p in (site.exports / str(site.course)).iterdir() if p.is_dir()]) == 1
    with pytest.raises(ConflictError, match="lms-1"):
        export_access_data(
            course_id=site.course, requested_by=site.teacher, request_id="lms-1", excel=True
        )


@pytest.mark.parametrize(
    ("parameters", "error", "message"),
    [
        ({"course_id": 999_999}, NotFoundError, "course 999999"),
        ({"timezone": "Mars/Olympus"}, InputError, "timezone"),
        ({"assignment_ids": [1]}, InputError, "assignment_ids"),
        (
            {"since": datetime(2026, 5, 1, tzinfo=UTC), "until": datetime(2026, 4, 1, tzinfo=UTC)},
            InputError,
            "since",
        ),
    ],
)
def test_bad_parameters_write_nothing(
    site: LocalSite, parameters: dict[str, object], error: type[Exception], message: str
) -> None:
    arguments: dict[str, object] = {
        "course_id": site.course,
        "requested_by": site.teacher,
        "notify": True,
    }
    with pytest.raises(error, match=message):
        export_access_data(**(arguments | parameters))  # type: ignore[call-overload]
    assert site.export_files() == []


def test_a_failure_mail_tells_the_teacher_why(site: LocalSite) -> None:
    with pytest.raises(InputError):
        export_access_data(
            course_id=site.course, requested_by=site.teacher, timezone="Mars/Olympus", notify=True
        )
    [mail] = site.mails()
    message = email.message_from_bytes(mail.read_bytes(), policy=default_policy)
    body = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert "timezone" in body and "Traceback" not in body


def test_only_teachers_of_the_course(site: LocalSite) -> None:
    roster = read_roster(open_location(str(site.lake)), site.course)
    student = int(roster.filter(pl.col("role") == "Student")["user_id"][0])
    with pytest.raises(PermissionDeniedError, match=f"user {student} is a Student"):
        export_access_data(course_id=site.course, requested_by=student, notify=True)
    other_teacher = site.summary.teachers[site.summary.course_ids[1]][-1]
    with pytest.raises(PermissionDeniedError):
        export_access_data(course_id=site.course, requested_by=other_teacher)
    assert site.export_files() == [] and site.mails() == []


def newest_day(site: LocalSite) -> Path:
    return sorted((site.lake / "access_log").iterdir())[-1]


def test_corrupt_parquet_is_named_and_nothing_is_published(site: LocalSite) -> None:
    bad = newest_day(site) / "zz-corrupt.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(LakeDataError, match=r"zz-corrupt\.parquet"):
        export_access_data(course_id=site.course, requested_by=site.teacher)
    assert_failed_tombstone(site, "damaged")  # the file gone, the reason kept


def test_missing_column_is_named(site: LocalSite) -> None:
    day = newest_day(site)
    path = sorted(day.glob("*.parquet"))[0]
    pq.write_table(pq.read_table(path).drop(["ip"]), path)
    with pytest.raises(LakeDataError, match=r"missing column 'ip'"):
        export_access_data(course_id=site.course, requested_by=site.teacher)
    assert_failed_tombstone(site, "damaged")  # the file gone, the reason kept


def test_unknown_access_type_mid_export_leaves_nothing(site: LocalSite) -> None:
    # the newest file that holds an event of the course (a quiet day may hold none)
    path, table = next(
        (path, table)
        for day in sorted((site.lake / "access_log").iterdir(), reverse=True)
        for path in sorted(day.glob("*.parquet"))
        if site.course in (table := pq.read_table(path))["course_id"].to_pylist()
    )
    types = table["access_type"].to_pylist()
    row = table["course_id"].to_pylist().index(site.course)
    types[row] = "teleport"
    table = table.set_column(
        table.schema.get_field_index("access_type"), "access_type", pa.array(types, pa.string())
    )
    pq.write_table(table, path)
    with pytest.raises(LakeDataError, match="teleport"):
        export_access_data(course_id=site.course, requested_by=site.teacher)
    assert_failed_tombstone(site, "damaged")  # the file gone, the reason kept


def test_result_is_persisted_for_the_lms(site: LocalSite) -> None:
    state = export_access_data(course_id=site.course, requested_by=site.teacher, return_state=True)
    result = state.result()
    assert result.export_id
    assert state.data is not None  # a persisted result record, readable through the API
