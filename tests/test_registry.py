from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from course_exports import registry
from course_exports.errors import ConflictError, LakeDataError
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
    params = {"requested_by": 3, "excel": True}
    assert registry.find_completed(exports, ExportKind.ACCESS_DATA, 7, "r1", params) is None
    record = begin(exports, excel=True)
    # a pending export is not completed (the lifecycle waits for it or takes it over)
    assert registry.find_completed(exports, ExportKind.ACCESS_DATA, 7, "r1", params) is None
    registry.publish(exports, record, size_bytes=0, sha256="", counts={})
    found = registry.find_completed(exports, ExportKind.ACCESS_DATA, 7, "r1", params)
    assert found is not None and found.export_id == record.export_id
    with pytest.raises(ConflictError, match="other parameters"):
        registry.find_completed(
            exports, ExportKind.ACCESS_DATA, 7, "r1", {"requested_by": 3, "excel": False}
        )


def test_a_pending_export_with_other_parameters_is_a_conflict(exports: Location) -> None:
    begin(exports, excel=True)
    with pytest.raises(ConflictError, match="other parameters"):
        registry.find_completed(
            exports, ExportKind.ACCESS_DATA, 7, "r1", {"requested_by": 3, "excel": False}
        )


def request(selection: dict[str, object], run: str = "run-a") -> registry.ExportRequest:
    return registry.ExportRequest(
        ExportKind.ACCESS_DATA, 7, 3, "r1", dict(selection), flow_run_id=run
    )


def test_claim_is_atomic(exports: Location) -> None:
    """Of many runs claiming one export id at once, exactly one gets it."""
    requests = [request({"excel": i % 2 == 0}, run=f"run-{i}") for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        claims = list(
            pool.map(
                lambda r: registry.claim(
                    exports, r, course_name="Intro", ttl=timedelta(days=7), now=NOW
                ),
                requests,
            )
        )
    won = [c for c in claims if c is not None]
    assert len(won) == 1
    stored = registry.read_record(exports, 7, won[0].export_id)
    assert stored == won[0]
    assert not [p for p in Path(exports.root).rglob("*.tmp")]


def test_failed_write_leaves_a_tombstone(exports: Location) -> None:
    record = begin(exports)
    with pytest.raises(RuntimeError), registry.open_export_file(exports, record) as out:
        out.write(b"half")
        raise RuntimeError("boom")
    failed = registry.fail(exports, record, "the lake is damaged", now=NOW)
    assert failed is not None and failed.status is ExportStatus.FAILED
    assert failed.failure_reason == "the lake is damaged" and failed.failed_at == NOW
    left = sorted(p.name for p in Path(exports.root).rglob("*") if p.is_file())
    assert left == ["manifest.json"]
    assert registry.read_record(exports, 7, record.export_id) == failed
    assert registry.list_live(exports, 7, NOW) == []


def test_fail_never_touches_an_export_another_run_took_over(exports: Location) -> None:
    mine = begin(exports)
    Path(exports.path(registry.file_path(exports, mine))).write_bytes(b"mine, half")
    theirs = registry.take_over(
        exports, mine, request({"excel": False}, run="run-b"), ttl=timedelta(days=7), now=NOW
    )
    theirs = registry.name_file(exports, theirs, "b.csv")
    Path(exports.path(registry.file_path(exports, theirs))).write_bytes(b"theirs")
    assert not Path(
        exports.path(registry.file_path(exports, mine))
    ).exists()  # the take-over cleaned up
    assert registry.fail(exports, mine, "boom") is None
    with pytest.raises(ConflictError, match="taken over"):
        registry.publish(exports, mine, size_bytes=1, sha256="x", counts={})
    assert registry.read_record(exports, 7, mine.export_id) == theirs
    assert Path(exports.path(registry.file_path(exports, theirs))).read_bytes() == b"theirs"


def test_progress_is_written_into_the_pending_manifest(exports: Location) -> None:
    record = begin(exports)
    later = NOW + timedelta(seconds=5)
    registry.write_progress(exports, record, {"rows": 10, "bytes_done": 200}, later)
    stored = registry.read_record(exports, 7, record.export_id)
    assert stored is not None and stored.progress == {"rows": 10, "bytes_done": 200}
    assert stored.updated_at == later
    ready = registry.publish(exports, stored, size_bytes=0, sha256="", counts={})
    assert ready.progress == {}


def test_only_a_ready_export_is_marked_as_mailed(exports: Location) -> None:
    record = begin(exports)
    assert registry.mark_notified(exports, 7, record.export_id, NOW) is None  # pending
    assert registry.read_record(exports, 7, record.export_id).notified_at is None  # type: ignore[union-attr]
    ready = registry.publish(exports, record, size_bytes=0, sha256="", counts={})
    assert ready.notified_at is None
    later = NOW + timedelta(seconds=3)
    marked = registry.mark_notified(exports, 7, record.export_id, later)
    assert marked is not None and marked.notified_at == later
    assert registry.read_record(exports, 7, record.export_id) == marked
    assert registry.mark_notified(exports, 7, "0" * 32, later) is None  # no such export


def test_corrupt_manifest_names_the_file(exports: Location) -> None:
    record = begin(exports)
    Path(exports.path(7, record.export_id, "manifest.json")).write_text("{nope")
    with pytest.raises(Exception, match=r"manifest\.json"):
        registry.read_record(exports, 7, record.export_id)


@pytest.mark.parametrize("name", ["../other/a.csv", "a/b.csv", "a\\b.csv", "..", ".", "a\nb"])
def test_file_name_must_be_a_bare_name(exports: Location, name: str) -> None:
    record = begin(exports)
    with pytest.raises(ValidationError, match="bare file name"):
        registry.ExportRecord.model_validate({**record.model_dump(), "file_name": name})
    registry.ExportRecord.model_validate({**record.model_dump(), "file_name": "Ünï (1) x.zip"})


def test_only_a_queued_export_may_have_no_file_name(exports: Location) -> None:
    record = begin(exports)
    queued = registry.ExportRecord.model_validate({**record.model_dump(), "file_name": ""})
    assert queued.status is ExportStatus.PENDING
    with pytest.raises(ValidationError, match="must name its file"):
        registry.ExportRecord.model_validate(
            {**record.model_dump(), "file_name": "", "status": "ready"}
        )


def test_an_oversized_manifest_is_damage_not_a_read(exports: Location, tmp_path: Path) -> None:
    """Manifests are read with a cap (issue 8.5: every metadata read is bounded): a huge one
    is refused before its body is read, and does not hide the course's other exports."""
    good = begin(exports, request_id="good")
    bad = begin(exports, request_id="bad")
    manifest = tmp_path / "exports" / "7" / bad.export_id / registry.MANIFEST
    manifest.write_bytes(b" " * (registry.MANIFEST_MAX_BYTES + 1))
    with pytest.raises(LakeDataError, match="more than the 1,048,576"):
        registry.read_record(exports, 7, bad.export_id)
    assert [r.export_id for r in registry.list_records(exports, 7)] == [good.export_id]


def test_a_take_over_removes_what_a_killed_writer_left(exports: Location) -> None:
    """A writer killed mid-write leaves its storage temporary file (a local streaming
    write goes to ``.<name>.<hex>.tmp`` until it completes) beside the manifest; the run
    that takes the export over removes it with the partial file."""
    dead = begin(exports)
    folder = Path(exports.path(registry.export_dir(exports, 7, dead.export_id)))
    (folder / ".a.csv.0123abcd.tmp").write_bytes(b"half a file")
    (folder / dead.file_name).write_bytes(b"half")
    registry.take_over(
        exports, dead, request({"excel": False}, run="run-b"), ttl=timedelta(days=7), now=NOW
    )
    assert sorted(p.name for p in folder.iterdir()) == [registry.MANIFEST]
