"""Names from the lake reach logs, prints, run names and markdown artifacts inert (issue 8.9).

A course, assignment or user name (or a file name made from one) may hold CR/LF, which
would forge a log line, and markdown, which would turn an artifact into a link to
anywhere. Each builder and log line that interpolates one is fed such a name here.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from course_exports import export_records, mail, registry
from course_exports.errors import InputError, LakeDataError
from course_exports.lake import Person
from course_exports.retention import ExportPurgeSummary
from course_exports.settings import Settings
from course_exports.storage import open_location
from tasks.retention import export_purge_markdown

#: A name that tries both: a forged log line and a markdown heading, link and image.
HOSTILE = "Intro\r\nINFO forged line\n# Heading [click](http://evil.example) ![x](http://evil.example/x.png) `code` | cell"
NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def assert_inert_markdown(markdown: str) -> None:
    """Nothing of HOSTILE is live markdown: no link, image, heading or code span of its own."""
    assert "](http://evil.example" not in markdown.replace("\\]\\(", "")
    assert not re.search(r"(?<!\\)\[click(?<!\\)\]\(", markdown)
    assert "INFO forged line" not in [line.strip() for line in markdown.splitlines()]
    for line in markdown.splitlines():
        assert not line.startswith("# Heading"), line
    assert "`code`" not in markdown


def assert_one_line(records: list[logging.LogRecord]) -> None:
    assert records
    for record in records:
        message = record.getMessage()
        assert "\n" not in message and "\r" not in message, message


def test_purge_summary_markdown_is_inert() -> None:
    summary = ExportPurgeSummary(
        now=NOW, dry_run=False, expired=1, bytes_freed=0, leftovers_removed=1,
        tombstones_removed=0, projects_removed=0, uploads_aborted=1, in_progress=0,
        damaged=[f"/exports/7/x/manifest.json: not a valid export manifest ({HOSTILE})"],
        expired_ids=["a" * 32], leftover_ids=[HOSTILE], tombstone_ids=[], project_ids=[],
        upload_keys=[f"exports/7/{HOSTILE}.zip"],
    )  # fmt: skip
    markdown = export_purge_markdown(summary)
    assert_inert_markdown(markdown)
    assert "a" * 32 in markdown and "Intro" in markdown


def test_mail_log_lines_stay_one_line(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(outbox=str(tmp_path / "outbox"), mail_from="exports@school.example")
    person = Person(7, "eve", "eve@school.example", HOSTILE, HOSTILE)
    message = mail.failure_mail(
        settings=settings, recipient=person, course_name=HOSTILE, kind="course", reason=HOSTILE
    )
    with caplog.at_level(logging.INFO, logger="course_exports.mail"):
        assert mail.deliver(message, settings).delivered
    assert_one_line(caplog.records)
    assert "\u202e" not in mail.log_recipients(message)


def test_skipped_manifest_log_line_stays_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    exports = open_location(str(tmp_path / "exports"))
    folder = tmp_path / "exports" / "7" / ("b" * 32)
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(
        '{"course_name": "' + HOSTILE.replace("\r\n", "\\r\\n").replace("\n", "\\n") + '"}'
    )
    with caplog.at_level(logging.WARNING, logger="course_exports.export_records"):
        assert export_records.list_records(exports, 7) == []
    assert_one_line(caplog.records)


def test_error_messages_are_one_line() -> None:
    """Prefect logs a failed run's exception: its message must not forge lines either."""
    for error in (
        InputError("assignment_ids", f"777 not in course 7 ({HOSTILE})"),
        LakeDataError(f"/lake/courses/7/{HOSTILE}", "unreadable"),
    ):
        assert "\n" not in str(error) and "\r" not in str(error)
        assert "INFO forged line" in str(error)  # still says what it is, escaped


def test_import_run_name_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.runtime import flow_run

    from flows.import_project import run_name

    monkeypatch.setattr(flow_run, "parameters", {"export_id": HOSTILE, "student_id": 7})
    name = run_name()
    assert "\n" not in name and "\r" not in name and name.endswith("· student 7")
    monkeypatch.setattr(flow_run, "parameters", {"export_id": "a" * 32, "student_id": 7})
    assert run_name() == f"import · export {'a' * 32} · student 7"


def test_download_service_log_lines_stay_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from datetime import timedelta

    from deployments.download_service import _Service

    settings = Settings(
        exports_url=str(tmp_path / "exports"), signing_key="hygiene-test-signing-key-0123456789"
    )  # type: ignore[arg-type]
    exports = settings.exports()
    record = registry.begin_export(
        exports, kind=export_records.ExportKind.COURSE, course_id=7, course_name=HOSTILE,
        requested_by=1, request_id=None, parameters={}, file_name="Intro\u202egpj.exe [click](x).zip",  # an old manifest: bidi in the name
        ttl=timedelta(days=7),
    )  # fmt: skip
    service = _Service(settings, lambda: NOW)
    with caplog.at_level(logging.WARNING, logger="deployments.download_service"):
        assert service._handle(record) is None  # its file was never written
    assert_one_line(caplog.records)
    assert "\u202e" not in caplog.records[0].getMessage()


def test_export_summary_markdown_is_inert() -> None:
    from datetime import timedelta

    from course_exports.export_records import ExportKind, ExportResult, ExportStatus
    from tasks.export import summary_markdown

    result = ExportResult(
        export_id="c" * 32, course_id=7, course_name=HOSTILE, kind=ExportKind.COURSE,
        status=ExportStatus.READY, requested_by=1, file_name="x.zip",
        file_url=f"/exports/7/{'c' * 32}/{HOSTILE}.zip", created_at=NOW,
        expires_at=NOW + timedelta(days=7), size_bytes=1, sha256="d" * 64,
        download_url="http://127.0.0.1:8765/d/x",
    )  # fmt: skip
    settings = Settings(signing_key="hygiene-test-signing-key-0123456789")  # type: ignore[arg-type]
    markdown = summary_markdown(settings, result, f"3 workspaces of {HOSTILE}")
    assert_inert_markdown(markdown)
    assert "c" * 32 in markdown


def test_access_copy_markdown_is_inert() -> None:
    from tasks.access_copy import CopySummary, copy_markdown

    summary = CopySummary(
        now=NOW, copied=0, not_copied=[f"2026-11-27: unknown access type {HOSTILE!s}"],
        rows=0, source_bytes=0, copy_bytes=0, seconds=0.0, removed=0, current=0, remaining=0,
        months_not_merged=[f"2026-11: the copy of 2026-11-27 is damaged: {HOSTILE!s}"],
    )  # fmt: skip
    markdown = copy_markdown(summary)
    assert_inert_markdown(markdown)
    assert "2026" in markdown
