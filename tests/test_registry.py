from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from course_exports import export_records, registry
from course_exports.errors import ConflictError
from course_exports.export_records import ExportKind, ExportStatus
from course_exports.storage import Location, open_location

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


@pytest.fixture
def exports(tmp_path: Path) -> Location:
    return open_location(str(tmp_path / "exports"))


def begin(
    exports: Location, *, request_id: str | None = "r1", **params: bool
) -> export_records.ExportRecord:
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
    assert export_records.list_live(exports, 7, NOW) == []
    with registry.open_export_file(exports, record) as out:
        out.write(b"hello")
    assert out.size == 5
    ready = registry.publish(
        exports, record, size_bytes=out.size, sha256=out.sha256, counts={"events": 1}
    )
    assert [r.export_id for r in export_records.list_live(exports, 7, NOW)] == [ready.export_id]
    assert export_records.list_live(exports, 7, NOW + timedelta(days=7)) == []
    assert Path(ready.file_url).read_bytes() == b"hello"


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


def request(selection: dict[str, object], run: str = "run-a") -> export_records.ExportRequest:
    return export_records.ExportRequest(
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
    stored = export_records.read_record(exports, 7, won[0].export_id)
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
    assert export_records.read_record(exports, 7, record.export_id) == failed
    assert export_records.list_live(exports, 7, NOW) == []


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
    assert export_records.read_record(exports, 7, mine.export_id) == theirs
    assert Path(exports.path(registry.file_path(exports, theirs))).read_bytes() == b"theirs"


def test_progress_is_written_into_the_pending_manifest(exports: Location) -> None:
    record = begin(exports)
    later = NOW + timedelta(seconds=5)
    registry.write_progress(exports, record, {"rows": 10, "bytes_done": 200}, later)
    stored = export_records.read_record(exports, 7, record.export_id)
    assert stored is not None and stored.progress == {"rows": 10, "bytes_done": 200}
    assert stored.updated_at == later
    ready = registry.publish(exports, stored, size_bytes=0, sha256="", counts={})
    assert ready.progress == {}


def test_only_a_ready_export_is_marked_as_mailed(exports: Location) -> None:
    record = begin(exports)
    assert registry.mark_notified(exports, 7, record.export_id, NOW) is None  # pending
    assert export_records.read_record(exports, 7, record.export_id).notified_at is None  # type: ignore[union-attr]
    ready = registry.publish(exports, record, size_bytes=0, sha256="", counts={})
    assert ready.notified_at is None
    later = NOW + timedelta(seconds=3)
    marked = registry.mark_notified(exports, 7, record.export_id, later)
    assert marked is not None and marked.notified_at == later
    assert export_records.read_record(exports, 7, record.export_id) == marked
    assert registry.mark_notified(exports, 7, "0" * 32, later) is None  # no such export


def test_a_take_over_removes_what_a_killed_writer_left(exports: Location) -> None:
    """A writer killed mid-write leaves its storage temporary file (a local streaming
    write goes to ``.<name>.<hex>.tmp`` until it completes) beside the manifest; the run
    that takes the export over removes it with the partial file."""
    dead = begin(exports)
    folder = Path(exports.path(export_records.export_dir(exports, 7, dead.export_id)))
    (folder / ".a.csv.0123abcd.tmp").write_bytes(b"half a file")
    (folder / dead.file_name).write_bytes(b"half")
    registry.take_over(
        exports, dead, request({"excel": False}, run="run-b"), ttl=timedelta(days=7), now=NOW
    )
    assert sorted(p.name for p in folder.iterdir()) == [export_records.MANIFEST]
