from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from course_exports import registry
from course_exports.errors import ConflictError
from course_exports.registry import ExportKind, ExportStatus
from course_exports.storage import Location, open_location

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def exports(tmp_path: Path) -> Location:
    return open_location(str(tmp_path / "exports"))


def begin(
    exports: Location, *, request_id: str | None = "r1", **params: bool
) -> registry.ExportRecord:
    return registry.begin_export(
        exports,
        kind=ExportKind.ACCESS_DATA,
        course_id=7,
        course_name="Intro",
        requested_by=3,
        request_id=request_id,
        parameters=params or {"excel": False},
        file_name="a.csv",
        ttl=timedelta(days=7),
        now=NOW,
    )


def test_lifecycle(exports: Location) -> None:
    record = begin(exports)
    assert record.status is ExportStatus.PENDING
    assert record.expires_at == NOW + timedelta(days=7)
    assert registry.list_live(exports, 7, NOW) == []
    with registry.open_export_file(exports, record) as out:
        out.write(b"hello")
    assert out.size == 5
    ready = registry.publish(
        exports, record, size_bytes=out.size, sha256=out.sha256, counts={"events": 1}
    )
    assert [r.export_id for r in registry.list_live(exports, 7, NOW)] == [ready.export_id]
    assert registry.list_live(exports, 7, NOW + timedelta(days=7)) == []
    assert Path(ready.file_url).read_bytes() == b"hello"


def test_request_id_gives_stable_ids(exports: Location) -> None:
    a = registry.new_export_id(ExportKind.ACCESS_DATA, 7, "r1")
    assert a == registry.new_export_id(ExportKind.ACCESS_DATA, 7, "r1")
    assert a != registry.new_export_id(ExportKind.COURSE, 7, "r1")
    assert a != registry.new_export_id(ExportKind.ACCESS_DATA, 8, "r1")
    assert registry.new_export_id(ExportKind.ACCESS_DATA, 7, None) != registry.new_export_id(
        ExportKind.ACCESS_DATA, 7, None
    )


def test_find_completed(exports: Location) -> None:
    params = {"excel": True}
    assert registry.find_completed(exports, ExportKind.ACCESS_DATA, 7, "r1", params) is None
    record = begin(exports, excel=True)
    # a pending export is not completed: the rerun takes it over
    assert registry.find_completed(exports, ExportKind.ACCESS_DATA, 7, "r1", params) is None
    registry.publish(exports, record, size_bytes=0, sha256="", counts={})
    found = registry.find_completed(exports, ExportKind.ACCESS_DATA, 7, "r1", params)
    assert found is not None and found.export_id == record.export_id
    with pytest.raises(ConflictError, match="other parameters"):
        registry.find_completed(exports, ExportKind.ACCESS_DATA, 7, "r1", {"excel": False})


def test_failed_write_leaves_nothing(exports: Location) -> None:
    record = begin(exports)
    with pytest.raises(RuntimeError), registry.open_export_file(exports, record) as out:
        out.write(b"half")
        raise RuntimeError("boom")
    registry.discard(exports, record.course_id, record.export_id)
    assert not any(Path(exports.root).rglob("*"))


def test_discard_keeps_other_exports(exports: Location) -> None:
    keep = begin(exports, request_id="keep")
    drop = begin(exports, request_id="drop")
    registry.discard(exports, 7, drop.export_id)
    assert registry.read_record(exports, 7, keep.export_id) is not None
    assert registry.read_record(exports, 7, drop.export_id) is None


def test_corrupt_manifest_names_the_file(exports: Location) -> None:
    record = begin(exports)
    Path(exports.path(7, record.export_id, "manifest.json")).write_text("{nope")
    with pytest.raises(Exception, match=r"manifest\.json"):
        registry.read_record(exports, 7, record.export_id)


@pytest.mark.parametrize("name", ["../other/a.csv", "a/b.csv", "a\\b.csv", "..", ".", "", "a\nb"])
def test_file_name_must_be_a_bare_name(exports: Location, name: str) -> None:
    record = begin(exports)
    with pytest.raises(ValidationError, match="bare file name"):
        registry.ExportRecord.model_validate({**record.model_dump(), "file_name": name})
    registry.ExportRecord.model_validate({**record.model_dump(), "file_name": "Ünï (1) x.zip"})
