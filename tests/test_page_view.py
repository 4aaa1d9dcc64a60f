"""What the Course Data page shows for each state of an export: queued and running runs
(merged with their records), ready, failed and expired exports, and the forms."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pagekit import TTL, PageSite, now

from course_exports.export_records import ExportKind, ExportRecord, ExportStatus, new_export_id
from deployments.web import course_view
from deployments.web.course_view import RowState
from deployments.web.runs import RunInfo

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
BERLIN = course_view.zone("Europe/Berlin")


def run(state_type: str, state_name: str, request_id: str = "r1", **params: object) -> RunInfo:
    return RunInfo(
        run_id=f"run-{request_id}",
        kind=ExportKind.COURSE,
        state_type=state_type,
        state_name=state_name,
        parameters={"course_id": 1, "requested_by": 7, "request_id": request_id, **params},
        export_id=new_export_id(ExportKind.COURSE, 1, request_id),
        created=T0,
    )


def record(status: str, request_id: str = "r1", **fields: object) -> ExportRecord:
    values: dict[str, Any] = {
        "export_id": new_export_id(ExportKind.COURSE, 1, request_id),
        "course_id": 1,
        "course_name": "C",
        "kind": ExportKind.COURSE,
        "status": ExportStatus(status),
        "request_id": request_id,
        "requested_by": 7,
        "file_name": "c.zip",
        "file_url": "/x/c.zip",
        "created_at": T0,
        "expires_at": T0 + TTL,
        "size_bytes": 2_500_000,
        "counts": {"files": 120, "bytes": 9_000_000},
    }
    return ExportRecord.model_validate({**values, **fields})


def build(
    records: list[ExportRecord], runs: list[RunInfo], at: datetime = T0
) -> course_view.CourseView:
    return course_view.build(
        records, runs, now=at, tz=BERLIN, name_of=lambda uid: f"Teacher {uid}", failed_for=TTL
    )


def test_a_run_without_a_record_is_queued_then_starting() -> None:
    [row] = build([], [run("SCHEDULED", "Scheduled", assignment_ids=[3, 4])]).in_progress
    assert (row.state, row.status_text) == (RowState.QUEUED, "Queued")
    assert row.holds == "2 assignments" and row.requester == "Teacher 7"
    [waiting] = build([], [run("SCHEDULED", "AwaitingConcurrencySlot")]).in_progress
    assert waiting.status_text == "Waiting for another export of this course to finish"
    [starting] = build([], [run("RUNNING", "Running")]).in_progress
    assert (starting.state, starting.status_text) == (RowState.RUNNING, "Starting")


def test_a_claimed_run_shows_its_record_with_progress() -> None:
    progress = {
        "files_done": 30,
        "files_total": 120,
        "bytes_done": 4_500_000,
        "bytes_total": 9_000_000,
    }
    view = build([record("pending", progress=progress)], [run("RUNNING", "Running")])
    [row] = view.in_progress
    assert row.state is RowState.RUNNING
    assert row.progress_text == "30 of 120 files · 4.5 MB of 9.0 MB"
    assert row.progress_percent == 50
    rows = build([record("pending", progress={"rows": 12345})], []).in_progress
    assert rows[0].progress_text == "12,345 rows written" and rows[0].progress_percent is None


def test_ready_expires_in_days_on_the_course_clock() -> None:
    view = build([record("ready")], [run("COMPLETED", "Completed")], at=T0 + timedelta(hours=1))
    [row] = view.ready
    assert row.expires_in == "expires in 6 days"
    assert row.expires_at == "7 Dec 2026, 13:00 CET"  # 12:00 UTC in Berlin
    assert row.size == "2.5 MB" and row.holds == "120 files · 9.0 MB"


def test_a_claimed_export_waiting_for_its_course_is_queued() -> None:
    [row] = build([record("pending", file_name="")], [run("SCHEDULED", "Scheduled")]).in_progress
    assert row.state is RowState.QUEUED
    assert row.status_text == "Waiting for another export of this course to finish"


def test_failed_and_expired() -> None:
    failed = record(
        "failed", "r2", failure_reason="Assignment 9 is not in this course.", failed_at=T0
    )
    view = build([failed], [run("FAILED", "Failed", "r2")])
    [row] = view.failed
    assert row.failure_reason == "Assignment 9 is not in this course."
    # A run that failed before claiming an export says only what a teacher can do.
    [crashed] = build([], [run("CRASHED", "Crashed", "r3")]).failed
    assert crashed.failure_reason == course_view.STOPPED_REASON
    # A newer run of the same request hides its failed predecessor.
    newer = run("SCHEDULED", "Scheduled", "r3")
    newer = RunInfo(**{**newer.__dict__, "run_id": "retry", "created": T0 + timedelta(minutes=1)})
    view = build([], [run("CRASHED", "Crashed", "r3"), newer])
    assert [r.run_id for r in view.in_progress] == ["retry"] and not view.failed
    expired_at = T0 + TTL + timedelta(days=1)
    view = build([record("expired", "r4"), record("ready", "r5")], [], at=expired_at)
    assert [r.state for r in view.expired] == [RowState.EXPIRED, RowState.EXPIRED]
    assert not build([record("expired")], [], at=T0 + TTL + timedelta(days=30)).expired


def _rows(html: str) -> dict[str, str]:
    """export id -> data-state of each export on the page."""
    found = re.findall(r'data-state="(\w+)" data-kind="[\w-]+" data-export-id="(\w+)"', html)
    return {export_id: state for state, export_id in found}


def test_the_page_shows_each_state(page_site: PageSite) -> None:
    course = page_site.other_course
    teacher = page_site.teacher(course)
    with page_site.client(course, teacher) as client:
        empty = page_site.page(client, course)
        assert "No exports yet" in empty
        assert "data-refresh" not in empty

        ready = page_site.make(course=course)
        old = page_site.make(course=course, now=now() - TTL - timedelta(days=1))
        running = page_site.make(
            course=course,
            kind=ExportKind.COURSE,
            status="pending",
            progress={"files_done": 1, "files_total": 4, "bytes_done": 10, "bytes_total": 40},
        )
        failed = page_site.make(
            course=course,
            status="failed",
            failure_reason="The time zone Mars/Base is unknown.",
            failed_at=now(),
        )
        html = page_site.page(client, course)
        assert _rows(html) == {
            ready.export_id: "ready",
            old.export_id: "expired",
            running.export_id: "running",
            failed.export_id: "failed",
        }
        assert 'data-refresh="3"' in html  # something runs: the script refreshes
        assert "1 of 4 files" in html and 'progress max="100" value="25"' in html
        assert "The time zone Mars/Base is unknown." in html
        assert "expires in 6 days" in html
        assert html.count(">Download</a>") == 1
        # The Download button mints a short-lived link that serves the file.
        response = client.get(f"/courses/{course}/exports/{ready.export_id}/download")
        assert response.status_code == 303
        file = httpx.get(response.headers["location"])
        assert file.status_code == 200
        assert hashlib.sha256(file.content).hexdigest() == ready.sha256
        gone = client.get(f"/courses/{course}/exports/{old.export_id}/download")
        assert gone.status_code == 410 and "start a new export" in gone.text


def test_the_page_is_accessible_and_escapes_names(page_site: PageSite) -> None:
    with page_site.client() as client:
        html = page_site.page(client)
    assert '<html lang="en">' in html and 'name="viewport"' in html
    assert html.count("<h1>") == 1 and "<h2" in html
    # Every visible input has a label: by for=, or by being inside one.
    for input_id in re.findall(r'<input type="(?:text|date)" id="(\w+)"', html):
        assert f'<label for="{input_id}">' in html
    assert all("<label" in line for line in html.splitlines() if 'type="checkbox"' in line)
    assert "<script>" not in html  # only the external script the CSP allows
    # The tiny lake holds hostile names: none reaches the page as markup or an override.
    assert "<script" not in html.replace('<script src="/static/page.js" defer></script>', "")
    assert "\u202e" not in html


@pytest.mark.parametrize("path", ["/static/page.css", "/static/page.js", "/openapi.json"])
def test_static_parts_are_served(page_site: PageSite, path: str) -> None:
    assert httpx.get(page_site.base_url + path).status_code == 200


def test_what_an_access_export_holds_reads_as_a_window() -> None:
    access = record("ready").model_copy(
        update={
            "kind": ExportKind.ACCESS_DATA,
            "counts": {"events": 588, "days": 11, "files_read": 11},
            "details": {
                "window_start": "2026-11-10T00:00:00+00:00",
                "window_end": "2026-11-21T00:00:00+00:00",
                "timezone": "UTC",
            },
        }
    )
    assert course_view.holds(access, ExportKind.ACCESS_DATA) == (
        "588 events · 2026-11-10 00:00 to 2026-11-21 00:00 (UTC)"
    )
    zipped = record("ready").model_copy(
        update={"counts": {"files": 3, "bytes_uncompressed": 2_000}}
    )
    assert course_view.holds(zipped, ExportKind.COURSE) == "3 files · 2.0 kB before compression"
