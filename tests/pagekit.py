"""Shared set-up of the Course Data page tests: the tiny lake, the app on a real uvicorn,
exports made by the registry's own code in every state, and a logged-in httpx client."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from course_exports import export_records, links, registry
from course_exports.export_records import ExportKind, ExportRecord, ExportStatus
from course_exports.settings import Settings
from course_exports.storage import Location
from sample_lake import LakeSummary

KEY = "page-signing-key-" + "p" * 32
TTL = timedelta(days=7)


@dataclass
class PageSite:
    base_url: str
    settings: Settings
    summary: LakeSummary

    @property
    def key(self) -> bytes:
        return KEY.encode()

    @property
    def exports(self) -> Location:
        return self.settings.exports()

    @property
    def course(self) -> int:
        return self.summary.course_ids[0]

    @property
    def other_course(self) -> int:
        return self.summary.course_ids[1]

    def teacher(self, course: int | None = None) -> int:
        return self.summary.teachers[course or self.course][0]

    def student(self, course: int | None = None) -> int:
        import polars as pl

        from course_exports.lake import read_roster

        roster = read_roster(self.settings.lake(), course or self.course)
        return int(roster.filter(pl.col("role") == "Student")["user_id"][0])

    def launch_url(self, course: int, user: int, **kwargs: Any) -> str:
        return links.launch_url(self.base_url, self.key, course, user, **kwargs)

    @contextmanager
    def client(self, course: int | None = None, user: int | None = None) -> Iterator[httpx.Client]:
        """An httpx client holding a session for (course, user): the launch link opened."""
        course = course or self.course
        with httpx.Client(base_url=self.base_url) as client:
            response = client.get(self.launch_url(course, user or self.teacher(course)))
            assert response.status_code == 200, response.text
            yield client

    def page(self, client: httpx.Client, course: int | None = None) -> str:
        response = client.get(f"/courses/{course or self.course}")
        assert response.status_code == 200, response.text
        return response.text

    def make(
        self,
        *,
        course: int | None = None,
        kind: ExportKind = ExportKind.ACCESS_DATA,
        status: str = "ready",
        now: datetime | None = None,
        data: bytes = b"a,b\n1,2\n",
        **fields: Any,
    ) -> ExportRecord:
        """An export in the given state, made with the registry's functions."""
        course = course or self.course
        record = registry.begin_export(
            self.exports,
            kind=kind,
            course_id=course,
            course_name="Sample course",
            requested_by=self.teacher(course),
            request_id=None,
            parameters={},
            file_name="export.zip" if kind is ExportKind.COURSE else "export.csv",
            ttl=TTL,
            now=now,
        )
        if status != "pending":
            with registry.open_export_file(self.exports, record) as out:
                out.write(data)
            record = registry.publish(
                self.exports,
                record,
                size_bytes=out.size,
                sha256=out.sha256,
                counts={"rows": 1},
                now=now,
            )
        if status != "ready" or fields:
            record = record.model_copy(update={"status": ExportStatus(status), **fields})
            export_records.write_record(self.exports, record)
        return record


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]+)"', html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def nonce_of(html: str) -> str:
    found = re.search(r'name="nonce" value="([0-9a-f]+)"', html)
    assert found, "no nonce in the page"
    return found.group(1)


def now() -> datetime:
    return datetime.now(UTC)


def site_settings(root: Path, lake: Path, base_url: str) -> Settings:
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        lake_url=str(lake),
        exports_url=str(root / "exports"),
        outbox=str(root / "outbox"),
        signing_key=KEY,  # type: ignore[arg-type]
        public_url=base_url,
    )
