"""An export's manifest: ids, the rules its fields keep, and reads that name the damage."""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from course_exports import export_records
from course_exports.errors import LakeDataError
from course_exports.export_records import ExportKind, ExportRecord, ExportStatus
from course_exports.storage import Location, open_location

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def exports(tmp_path: Path) -> Location:
    return open_location(str(tmp_path / "exports"))


def written(exports: Location, request_id: str = "r1") -> ExportRecord:
    """A pending export's manifest, written as a claim leaves it."""
    record = ExportRecord(
        export_id=export_records.new_export_id(ExportKind.ACCESS_DATA, 7, request_id),
        course_id=7, course_name="Intro", kind=ExportKind.ACCESS_DATA,
        status=ExportStatus.PENDING, request_id=request_id, requested_by=3,
        file_name="a.csv", file_url="", created_at=NOW, expires_at=NOW + timedelta(days=7),
    )  # fmt: skip
    export_records.write_record(exports, record)
    return record


def test_a_manifest_reads_back_as_written(exports: Location) -> None:
    record = written(exports)
    assert export_records.read_record(exports, 7, record.export_id) == record
    assert export_records.read_record(exports, 7, "0" * 32) is None
    assert export_records.list_records(exports, 7) == [record]
    assert export_records.list_live(exports, 7, NOW) == []  # pending: not live


def test_request_id_gives_stable_ids(exports: Location) -> None:
    a = export_records.new_export_id(ExportKind.ACCESS_DATA, 7, "r1")
    assert a == export_records.new_export_id(ExportKind.ACCESS_DATA, 7, "r1")
    assert a != export_records.new_export_id(ExportKind.COURSE, 7, "r1")
    assert a != export_records.new_export_id(ExportKind.ACCESS_DATA, 8, "r1")
    assert export_records.new_export_id(
        ExportKind.ACCESS_DATA, 7, None
    ) != export_records.new_export_id(ExportKind.ACCESS_DATA, 7, None)


def test_corrupt_manifest_names_the_file(exports: Location) -> None:
    record = written(exports)
    Path(exports.path(7, record.export_id, "manifest.json")).write_text("{nope")
    with pytest.raises(Exception, match=r"manifest\.json"):
        export_records.read_record(exports, 7, record.export_id)


@pytest.mark.parametrize("name", ["../other/a.csv", "a/b.csv", "a\\b.csv", "..", ".", "a\nb"])
def test_file_name_must_be_a_bare_name(exports: Location, name: str) -> None:
    record = written(exports)
    with pytest.raises(ValidationError, match="bare file name"):
        export_records.ExportRecord.model_validate({**record.model_dump(), "file_name": name})
    export_records.ExportRecord.model_validate(
        {**record.model_dump(), "file_name": "Ünï (1) x.zip"}
    )


def test_only_a_queued_export_may_have_no_file_name(exports: Location) -> None:
    record = written(exports)
    queued = export_records.ExportRecord.model_validate({**record.model_dump(), "file_name": ""})
    assert queued.status is ExportStatus.PENDING
    with pytest.raises(ValidationError, match="must name its file"):
        export_records.ExportRecord.model_validate(
            {**record.model_dump(), "file_name": "", "status": "ready"}
        )


def test_an_oversized_manifest_is_damage_not_a_read(exports: Location, tmp_path: Path) -> None:
    """Manifests are read with a cap (issue 8.5: every metadata read is bounded): a huge one
    is refused before its body is read, and does not hide the course's other exports."""
    good = written(exports, "good")
    bad = written(exports, "bad")
    manifest = tmp_path / "exports" / "7" / bad.export_id / export_records.MANIFEST
    manifest.write_bytes(b" " * (export_records.MANIFEST_MAX_BYTES + 1))
    with pytest.raises(LakeDataError, match="more than the 1,048,576"):
        export_records.read_record(exports, 7, bad.export_id)
    assert [r.export_id for r in export_records.list_records(exports, 7)] == [good.export_id]
