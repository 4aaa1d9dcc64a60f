"""Shared set-up of flow tests: a sample lake, settings in the environment, file checks."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from course_exports.export_records import ExportRecord, ExportStatus
from course_exports.settings import Settings, load_settings
from course_exports.storage import open_location
from sample_lake import LakeSummary, generate_lake, tiny_lake_spec

SIGNING_KEY = "test-signing-key-" + "x" * 32


@dataclass(frozen=True)
class LocalSite:
    """A lake copy and empty exports/outbox folders, wired through COURSE_EXPORT_* variables."""

    root: Path
    lake: Path
    exports: Path
    outbox: Path
    summary: LakeSummary

    @property
    def course(self) -> int:
        return self.summary.course_ids[0]

    @property
    def teacher(self) -> int:
        return self.summary.teachers[self.course][0]

    def settings(self) -> Settings:
        return load_settings()

    def export_files(self) -> list[Path]:
        """Files in export folders (``<course>/<export>/...``): not the course's leases
        and job marks beside them (``marks``)."""
        if not self.exports.exists():
            return []
        return [p for p in self.exports.glob("*/*/**/*") if p.is_file()]

    def marks(self) -> list[Path]:
        """``<course>/.lease-*`` and ``.done-*`` files (course_exports.lifecycle)."""
        return sorted(self.exports.glob("*/.*")) if self.exports.exists() else []

    def mails(self) -> list[Path]:
        return sorted(self.outbox.glob("*.eml")) if self.outbox.exists() else []


def make_pristine_lake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, LakeSummary]:
    root = tmp_path_factory.mktemp("pristine-lake")
    summary = generate_lake(open_location(str(root)), tiny_lake_spec(), now=datetime.now(UTC))
    return root, summary


def make_site(
    pristine: tuple[Path, LakeSummary], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> LocalSite:
    """A private copy of the lake (tests may damage it) and the settings pointing at it."""
    lake = tmp_path / "lake"
    shutil.copytree(pristine[0], lake)
    site = LocalSite(tmp_path, lake, tmp_path / "exports", tmp_path / "outbox", pristine[1])
    for name in list(__import__("os").environ):
        if name.startswith("COURSE_EXPORT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("COURSE_EXPORT_LAKE_URL", str(lake))
    monkeypatch.setenv("COURSE_EXPORT_EXPORTS_URL", str(site.exports))
    monkeypatch.setenv("COURSE_EXPORT_OUTBOX", str(site.outbox))
    monkeypatch.setenv("COURSE_EXPORT_SIGNING_KEY", SIGNING_KEY)
    return site


def assert_failed_tombstone(site: LocalSite, reason: str) -> ExportRecord:
    """A failed export left its manifest only: ``failed``, with the teacher's reason."""
    [manifest] = site.export_files()
    assert manifest.name == "manifest.json"
    record = ExportRecord.model_validate_json(manifest.read_bytes())
    assert record.status is ExportStatus.FAILED and record.failed_at is not None
    assert reason in (record.failure_reason or ""), record.failure_reason
    assert "Traceback" not in (record.failure_reason or "")
    return record
