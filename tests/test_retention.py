"""Retention without Prefect: the export purge (local and S3) and the access-log purge."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from seaweed import SeaweedFS

from course_exports import export_records, registry, retention
from course_exports.access_log import ACCESS_LOG_SCHEMA
from course_exports.errors import LakeDataError
from course_exports.export_records import ExportKind, ExportRecord, ExportStatus
from course_exports.project import PROJECT_JSON, PROJECTS
from course_exports.retention import AccessPurgeSummary, ExportPurgeSummary
from course_exports.retention.steps import StepKind
from course_exports.settings import Settings
from course_exports.storage import LocalLocation, Location, open_location
from tasks import retention as retention_tasks

NOW = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
TTL = timedelta(days=7)
SECOND = timedelta(seconds=1)
DATA = b"id,name\r\n1,Ada\r\n"


# -- building exports ----------------------------------------------------------------------


def set_mtime(location: Location, folder: str, when: datetime) -> None:
    """Make every file of a local folder look written at ``when`` (S3 dates by the clock)."""
    if not isinstance(location, LocalLocation):
        return
    for path in Path(folder).rglob("*"):
        os.utime(path, (when.timestamp(), when.timestamp()))


def make_export(
    exports: Location,
    created: datetime,
    *,
    publish: bool = True,
    course_id: int = 7,
    data: bytes = DATA,
    kind: ExportKind = ExportKind.ACCESS_DATA,
) -> ExportRecord:
    """An export made at ``created`` (its files dated then too, on local storage)."""
    record = registry.begin_export(
        exports,
        kind=kind,
        course_id=course_id,
        course_name="Intro",
        requested_by=3,
        request_id=None,
        parameters={},
        file_name="export.csv",
        ttl=TTL,
        now=created,
    )
    with registry.open_export_file(exports, record) as out:
        out.write(data)
    if publish:
        record = registry.publish(
            exports, record, size_bytes=out.size, sha256=out.sha256, counts={}, now=created
        )
    if isinstance(exports, LocalLocation):
        set_mtime(
            exports,
            exports.path(export_records.export_dir(exports, course_id, record.export_id)),
            created,
        )
    return record


def make_project(
    exports: Location, export_id: str | None, imported_at: datetime, *, finished: bool = True
) -> str:
    """An imported project (or, unfinished, its workspace without project.json)."""
    project_id = uuid.uuid4().hex
    put(exports, exports.path(PROJECTS, project_id, "workspace", "main.py"), b"print(1)\n")
    if finished:
        stamp = {"project_id": project_id, "export_id": export_id, "course_id": 7}
        stamp["imported_at"] = imported_at.isoformat()
        exports.write_bytes_atomic(json.dumps(stamp).encode(), PROJECTS, project_id, PROJECT_JSON)
    set_mtime(exports, exports.path(PROJECTS, project_id), imported_at)
    return project_id


def put(location: Location, path: str, data: bytes) -> None:
    location.write_bytes_atomic(data, location.relative(path))


def settings_for(
    *, exports: Location | None = None, lake: Location | None = None, endpoint: str | None = None
) -> Settings:
    return Settings(
        exports_url=exports.url if exports else "./var/exports",
        lake_url=lake.url if lake else "./var/lake",
        s3_endpoint_url=endpoint,
    )


def purge(
    exports: Location,
    now: datetime = NOW,
    dry_run: bool = False,
    endpoint: str | None = None,
) -> ExportPurgeSummary:
    """What purge-expired-exports runs, in its order, through its tasks' functions
    (``.fn``: the same code, without Prefect)."""
    settings = settings_for(exports=exports, endpoint=endpoint)
    survey = retention_tasks.survey_exports.fn(settings)
    plan = retention_tasks.decide_export_purge.fn(survey, now, TTL.days)
    done = plan.steps
    if not dry_run:
        done = []
        for deletion, kinds in retention_tasks.DELETIONS:
            if steps := plan.of(*kinds):
                done += deletion.fn(settings, steps, now)
    return retention.summarise_export_purge(plan, done, dry_run)


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def state_of(exports: Location, record: ExportRecord) -> ExportRecord | None:
    return export_records.read_record(exports, record.course_id, record.export_id)


@pytest.fixture
def exports(tmp_path: Path) -> Location:
    return open_location(str(tmp_path / "exports"))


def file_exists(exports: Location, record: ExportRecord) -> bool:
    return exports.exists(registry.file_path(exports, record))


# -- expiry --------------------------------------------------------------------------------


def test_expires_at_the_second_and_not_before(exports: Location) -> None:
    expired = make_export(exports, NOW - TTL - SECOND)  # expired a second ago
    at_expiry = make_export(exports, NOW - TTL)  # expires at this very instant
    alive = make_export(exports, NOW - TTL + SECOND)  # a second to go
    summary = purge(exports)

    assert summary.expired == 2
    assert sorted(summary.expired_ids) == sorted([expired.export_id, at_expiry.export_id])
    assert summary.bytes_freed == 2 * len(DATA)
    for gone in (expired, at_expiry):
        tombstone = state_of(exports, gone)
        assert tombstone is not None and tombstone.status is ExportStatus.EXPIRED
        assert tombstone.purged_at == NOW
        assert not tombstone.is_live(NOW) and not file_exists(exports, gone)
    # the one with a second left is untouched, and its link still works
    kept = state_of(exports, alive)
    assert kept == alive and kept.is_live(NOW)
    assert Path(kept.file_url).read_bytes() == DATA
    assert [r.export_id for r in export_records.list_live(exports, 7, NOW)] == [alive.export_id]


COUNTS = (
    "expired",
    "bytes_freed",
    "leftovers_removed",
    "tombstones_removed",
    "projects_removed",
    "uploads_aborted",
)


def test_second_run_deletes_nothing_more(exports: Location, tmp_path: Path) -> None:
    expired = make_export(exports, NOW - TTL - SECOND)
    make_export(exports, NOW - timedelta(days=2), publish=False)
    make_export(exports, NOW - timedelta(hours=1))
    make_project(exports, expired.export_id, NOW - TTL)
    first = purge(exports)
    assert (first.expired, first.leftovers_removed, first.projects_removed) == (1, 1, 1)
    after_first = files_of(tmp_path / "exports")
    again = purge(exports)
    assert again.model_dump(include=set(COUNTS)) == dict.fromkeys(COUNTS, 0)
    assert again.expired_ids == again.leftover_ids == again.project_ids == []
    assert files_of(tmp_path / "exports") == after_first


def test_dry_run_deletes_nothing_and_reports_the_same(exports: Location, tmp_path: Path) -> None:
    make_export(exports, NOW - TTL - SECOND)
    make_export(exports, NOW - timedelta(days=3), publish=False)
    make_export(exports, NOW - TTL + SECOND)
    before = files_of(tmp_path / "exports")
    dry = purge(exports, dry_run=True)
    assert files_of(tmp_path / "exports") == before
    real = purge(exports)
    assert dry.dry_run and not real.dry_run
    assert dry.model_dump(exclude={"dry_run"}) == real.model_dump(exclude={"dry_run"})
    assert (real.expired, real.leftovers_removed) == (1, 1)


def test_tombstones_go_after_thirty_days(exports: Location) -> None:
    record = make_export(exports, NOW - TTL - SECOND)
    purge(exports)
    later = NOW + timedelta(days=retention.TOMBSTONE_DAYS)
    assert purge(exports, later - SECOND).tombstones_removed == 0
    assert state_of(exports, record) is not None
    summary = purge(exports, later)
    assert summary.tombstone_ids == [record.export_id] and summary.expired == 0
    assert state_of(exports, record) is None
    assert not Path(exports.path(7)).exists()  # the course folder went with its last export


# -- leftovers of runs that never published ------------------------------------------------


def test_pending_is_kept_for_a_day_then_removed(exports: Location) -> None:
    young = make_export(exports, NOW - timedelta(hours=23), publish=False)
    old = make_export(exports, NOW - timedelta(hours=25), publish=False)
    summary = purge(exports)
    assert summary.leftover_ids == [old.export_id] and summary.leftovers_removed == 1
    assert summary.bytes_freed > len(DATA)  # the file and its manifest
    assert summary.in_progress == 1
    assert state_of(exports, old) is None
    assert not Path(exports.path(export_records.export_dir(exports, 7, old.export_id))).exists()
    assert state_of(exports, young) == young and file_exists(exports, young)


def test_pending_still_writing_is_kept(exports: Location) -> None:
    """An old pending manifest beside a file written an hour ago: the run is alive."""
    record = make_export(exports, NOW - timedelta(days=2), publish=False)
    an_hour_ago = (NOW - timedelta(hours=1)).timestamp()
    os.utime(exports.path(registry.file_path(exports, record)), (an_hour_ago, an_hour_ago))
    assert purge(exports).leftovers_removed == 0
    assert file_exists(exports, record)


def test_files_without_manifest(exports: Location) -> None:
    stale, fresh = uuid.uuid4().hex, uuid.uuid4().hex
    for export_id, when in ((stale, NOW - timedelta(days=2)), (fresh, NOW - timedelta(hours=2))):
        put(exports, exports.path(9, export_id, "export.zip"), b"PK half")
        set_mtime(exports, exports.path(9, export_id), when)
    summary = purge(exports)
    assert summary.leftover_ids == [stale] and summary.in_progress == 1
    assert not Path(exports.path(9, stale)).exists()
    assert Path(exports.path(9, fresh, "export.zip")).exists()


def test_stale_temp_files_of_atomic_writes(exports: Location) -> None:
    live = make_export(exports, NOW - timedelta(days=2))
    folder = Path(exports.path(export_records.export_dir(exports, 7, live.export_id)))
    old_tmp = folder / f".manifest.json.{uuid.uuid4().hex}.tmp"
    new_tmp = folder / f".manifest.json.{uuid.uuid4().hex}.tmp"
    for path, when in ((old_tmp, NOW - timedelta(days=2)), (new_tmp, NOW - timedelta(hours=1))):
        path.write_bytes(b"{")
        os.utime(path, (when.timestamp(), when.timestamp()))
    summary = purge(exports)
    assert summary.leftovers_removed == 1 and summary.bytes_freed == 1
    assert not old_tmp.exists() and new_tmp.exists()
    assert state_of(exports, live) == live and file_exists(exports, live)


def test_purge_while_an_export_is_being_written(exports: Location) -> None:
    """A run that registered a moment ago and is half way through its file."""
    now = datetime.now(UTC)
    expired = make_export(exports, now - TTL - timedelta(hours=1))
    record = registry.begin_export(
        exports,
        kind=ExportKind.COURSE,
        course_id=7,
        course_name="Intro",
        requested_by=3,
        request_id="being-written",
        parameters={},
        file_name="course.zip",
        ttl=TTL,
        now=now,
    )
    with registry.open_export_file(exports, record) as out:
        out.write(b"PK\x03\x04 first half")
        out.flush()
        summary = purge(exports, now)
        out.write(b" second half")
    assert summary.expired_ids == [expired.export_id]
    assert summary.leftovers_removed == 0 and summary.in_progress == 1
    ready = registry.publish(exports, record, size_bytes=out.size, sha256=out.sha256, counts={})
    assert ready.is_live(now)
    assert Path(ready.file_url).read_bytes() == b"PK\x03\x04 first half second half"


def test_a_rerun_taking_over_the_export_id_is_left_alone(exports: Location) -> None:
    """Decided on a dead pending manifest; by the time of deleting, a rerun owns it."""
    dead = make_export(exports, NOW - timedelta(days=2), publish=False)
    plan = retention.decide_export_purge(retention.survey_exports(exports), NOW, TTL)
    assert [s.item for s in plan.steps] == [dead.export_id]
    export_records.write_record(exports, dead.model_copy(update={"created_at": NOW}))
    assert retention.apply_steps(exports, plan.steps, NOW) == []
    assert file_exists(exports, dead)


def test_a_retried_delete_counts_what_the_first_attempt_did(exports: Location) -> None:
    make_export(exports, NOW - TTL - SECOND)
    make_export(exports, NOW - timedelta(days=2), publish=False)
    make_project(exports, uuid.uuid4().hex, NOW - TTL)
    plan = retention.decide_export_purge(retention.survey_exports(exports), NOW, TTL)
    assert len(plan.steps) == 3
    first = retention.apply_steps(exports, plan.steps, NOW)
    assert retention.apply_steps(exports, plan.steps, NOW) == first == plan.steps


def test_what_is_not_ours_is_not_touched(exports: Location, tmp_path: Path) -> None:
    old = NOW - timedelta(days=400)
    for rel in ("README.txt", "7/notes.txt", "misc/abc/def.bin", f"{PROJECTS}/x/y.txt"):
        put(exports, exports.path(rel), b"keep me")
    broken = uuid.uuid4().hex
    put(exports, exports.path(7, broken, export_records.MANIFEST), b"{not json")
    put(exports, exports.path(7, broken, "export.csv"), b"data")
    set_mtime(exports, exports.root, old)
    before = files_of(tmp_path / "exports")
    summary = purge(exports, NOW)
    assert files_of(tmp_path / "exports") == before
    assert len(summary.damaged) == 1 and broken in summary.damaged[0]


def test_leases_and_job_marks_go_a_day_after_their_last_write(exports: Location) -> None:
    """A course's ``.lease-*`` and ``.done-*`` files (course_exports.lifecycle) are the
    purge's only business beside the export folders: a day untouched, they go; a fresh
    one, an export's files and anything else at the course level stay."""
    live = make_export(exports, NOW - timedelta(days=2))
    course = Path(exports.path(7))
    old = {
        name: NOW - timedelta(days=1, seconds=1)
        for name in (
            ".lease-job-ab.json",
            ".done-ab.json",
            f"..done-ab.json.{uuid.uuid4().hex}.tmp",
        )
    }
    fresh = {".lease-course.json": NOW - timedelta(hours=1), ".done-cd.json": NOW - SECOND}
    for name, when in {**old, **fresh, "notes.txt": NOW - timedelta(days=400)}.items():
        (course / name).write_bytes(b"{}")
        os.utime(course / name, (when.timestamp(), when.timestamp()))
    dry = purge(exports, dry_run=True)
    assert dry.marks_removed == 3 and all((course / name).exists() for name in old)
    summary = purge(exports)
    assert summary.marks_removed == 3
    assert sorted(p.name for p in course.iterdir() if p.is_file()) == sorted([*fresh, "notes.txt"])
    assert state_of(exports, live) == live and file_exists(exports, live)
    assert purge(exports).marks_removed == 0


def test_a_mark_renewed_after_the_listing_stays(exports: Location) -> None:
    """The re-check: a lease a new run took between the survey and the deletion is its."""
    course = Path(exports.path(7))
    course.mkdir(parents=True)
    lease = course / ".lease-course.json"
    lease.write_bytes(b"{}")
    day_old = (NOW - timedelta(days=2)).timestamp()
    os.utime(lease, (day_old, day_old))
    settings = settings_for(exports=exports)
    plan = retention_tasks.decide_export_purge.fn(
        retention_tasks.survey_exports.fn(settings), NOW, TTL.days
    )
    [step] = plan.of(StepKind.REMOVE_MARKS)
    os.utime(lease, (NOW.timestamp(), NOW.timestamp()))  # taken again meanwhile
    retention.apply_steps(exports, [step], NOW)
    assert lease.exists()


# -- imported projects ---------------------------------------------------------------------


def test_projects_live_as_long_as_their_export_and_at_least_the_ttl(exports: Location) -> None:
    live = make_export(exports, NOW - timedelta(days=1), kind=ExportKind.COURSE)
    expired = make_export(exports, NOW - TTL - SECOND, kind=ExportKind.COURSE)
    with_live_export = make_project(exports, live.export_id, NOW - TTL - SECOND)
    recent_import = make_project(exports, expired.export_id, NOW - TTL + SECOND)
    expired_and_old = make_project(exports, expired.export_id, NOW - TTL - SECOND)
    export_gone = make_project(exports, uuid.uuid4().hex, NOW - TTL)
    unfinished_old = make_project(exports, None, NOW - timedelta(days=2), finished=False)
    unfinished_new = make_project(exports, None, NOW - timedelta(hours=2), finished=False)

    summary = purge(exports)
    assert sorted(summary.project_ids) == sorted([expired_and_old, export_gone, unfinished_old])
    for kept in (with_live_export, recent_import, unfinished_new):
        assert Path(exports.path(PROJECTS, kept, "workspace", "main.py")).exists()
    for gone in summary.project_ids:
        assert not Path(exports.path(PROJECTS, gone)).exists()
    # once the last import is a TTL old, its project goes too
    later = purge(exports, NOW + 2 * SECOND)
    assert later.project_ids == [recent_import]


# -- S3 --------------------------------------------------------------------------------------


@pytest.fixture
def s3_exports(s3_server: SeaweedFS) -> tuple[Location, str]:
    bucket = s3_server.make_bucket("retention")
    location = open_location(f"s3://{bucket}/exports", s3_endpoint_url=s3_server.endpoint_url)
    return location, bucket


def start_upload(s3_server: SeaweedFS, bucket: str, key: str) -> str:
    """A multipart upload with one part, never completed (what a killed writer leaves)."""
    client = s3_server.client()
    upload_id: str = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x" * 1024)
    return upload_id


def open_uploads(s3_server: SeaweedFS, bucket: str) -> set[str]:
    uploads = s3_server.client().list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return {u["Key"] for u in uploads}


def keys_under(s3_server: SeaweedFS, bucket: str, prefix: str) -> list[str]:
    """Objects under a prefix. Not "does the folder exist": S3 has no folders, and
    SeaweedFS (a file system underneath) may still list an emptied one as a prefix."""
    found = s3_server.client().list_objects_v2(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for o in found.get("Contents", [])]


def test_s3_purge(s3_server: SeaweedFS, s3_exports: tuple[Location, str]) -> None:
    exports, bucket = s3_exports
    # S3 dates objects and uploads by the real clock: judge two days ahead of it, so what
    # is written now looks two days old.
    now = datetime.now(UTC).replace(microsecond=0) + timedelta(days=2)
    expired = make_export(exports, now - TTL - SECOND)
    alive = make_export(exports, now - TTL + SECOND)
    dead = make_export(exports, now - timedelta(hours=25), publish=False)
    young = make_export(exports, now - timedelta(hours=1), publish=False)
    orphan = uuid.uuid4().hex
    put(exports, exports.path(8, orphan, "export.zip"), b"PK half")
    stale_key = f"exports/8/{uuid.uuid4().hex}/course.zip"
    start_upload(s3_server, bucket, stale_key)
    foreign = ("lake/access_log/big.parquet", "exports/misc/file.bin")
    for key in foreign:
        start_upload(s3_server, bucket, key)

    dry = purge(exports, now, dry_run=True, endpoint=s3_server.endpoint_url)
    summary = purge(exports, now, endpoint=s3_server.endpoint_url)
    assert dry.model_dump(exclude={"dry_run"}) == summary.model_dump(exclude={"dry_run"})
    assert summary.expired_ids == [expired.export_id]
    assert sorted(summary.leftover_ids) == sorted([dead.export_id, orphan])
    assert summary.upload_keys == [f"{bucket}/{stale_key}"]
    assert summary.bytes_freed >= len(DATA) + len(b"PK half")

    tombstone = state_of(exports, expired)
    assert tombstone is not None and tombstone.status is ExportStatus.EXPIRED
    assert not file_exists(exports, expired)
    assert state_of(exports, alive) == alive and file_exists(exports, alive)
    assert state_of(exports, dead) is None
    assert not keys_under(s3_server, bucket, f"exports/7/{dead.export_id}/")
    assert state_of(exports, young) == young and file_exists(exports, young)
    assert not keys_under(s3_server, bucket, f"exports/8/{orphan}/")
    assert open_uploads(s3_server, bucket) == set(foreign)

    again = purge(exports, now, endpoint=s3_server.endpoint_url)
    assert (again.expired, again.leftovers_removed, again.uploads_aborted, again.bytes_freed) == (
        0,
        0,
        0,
        0,
    )


def test_s3_upload_of_a_running_export_is_left_alone(
    s3_server: SeaweedFS, s3_exports: tuple[Location, str]
) -> None:
    exports, bucket = s3_exports
    now = datetime.now(UTC)
    record = make_export(exports, now, publish=False)
    key = f"exports/{exports.path(registry.file_path(exports, record)).split('/exports/', 1)[1]}"
    start_upload(s3_server, bucket, key)
    summary = purge(exports, now + timedelta(hours=1), endpoint=s3_server.endpoint_url)
    assert (summary.leftovers_removed, summary.uploads_aborted, summary.in_progress) == (0, 0, 1)
    assert open_uploads(s3_server, bucket) == {key}
    assert state_of(exports, record) == record


def test_only_uploads_a_day_old_are_aborted(exports: Location) -> None:
    """Decided from the upload's start time (a real server reports the real clock, so tested here)."""
    running = make_export(exports, NOW - timedelta(days=3), publish=False)
    # the pending export is old, but its upload started an hour ago: the run is alive
    folder = exports.path(export_records.export_dir(exports, 7, running.export_id))
    uploads = [
        retention.PendingUpload(
            path=f"{folder}/export.csv",
            upload_id="u1",
            initiated=NOW - timedelta(hours=1),
            folder=folder,
        ),
        retention.PendingUpload(
            path=exports.path(7, "f" * 32, "x.zip"),
            upload_id="u2",
            initiated=NOW - timedelta(hours=23),
            folder=exports.path(7, "f" * 32),
        ),
        retention.PendingUpload(
            path=exports.path(7, "e" * 32, "x.zip"),
            upload_id="u3",
            initiated=NOW - timedelta(hours=24),
            folder=exports.path(7, "e" * 32),
        ),
    ]
    survey = retention.survey_exports(exports).model_copy(update={"uploads": uploads})
    plan = retention.decide_export_purge(survey, NOW, TTL)
    assert [(s.kind, s.upload_id) for s in plan.steps] == [(retention.StepKind.ABORT_UPLOAD, "u3")]
    assert plan.in_progress == 1


# -- access log ----------------------------------------------------------------------------

EVENTS = ACCESS_LOG_SCHEMA


def write_day(lake: Path, day: date, files: int = 1) -> None:
    folder = lake / "access_log" / f"event_date={day.isoformat()}"
    folder.mkdir(parents=True, exist_ok=True)
    start = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
    for n in range(files):
        table = pa.table(
            {
                "event_time": [start],
                "user_id": [1],
                "course_id": [7],
                "assignment_id": [None],
                "access_type": ["login"],
                "project_path": [None],
                "ip": ["10.0.0.1"],
            },
            schema=EVENTS,
        )
        pq.write_table(table, folder / f"part-{n}.parquet")


def days_in(lake: Path) -> list[date]:
    return sorted(
        date.fromisoformat(p.name.removeprefix("event_date="))
        for p in (lake / "access_log").glob("event_date=*")
    )


@pytest.fixture
def lake_dir(tmp_path: Path) -> Path:
    lake = tmp_path / "lake"
    (lake / "courses" / "7").mkdir(parents=True)
    (lake / "courses" / "7" / "course.json").write_text("{}")
    (lake / "access_log").mkdir()
    (lake / "access_log" / "_SUCCESS").write_text("")
    (lake / "access_log" / ".staging").mkdir()
    (lake / "access_log" / ".staging" / "x.parquet").write_text("")
    return lake


def purge_log(
    lake: Path | Location,
    now: datetime,
    *,
    max_partitions: int = 31,
    dry_run: bool = False,
    exports: Location | None = None,
    endpoint: str | None = None,
) -> AccessPurgeSummary:
    """What purge-access-logs runs, in its order, through its tasks' functions."""
    where = lake if isinstance(lake, Location) else open_location(str(lake))
    settings = settings_for(lake=where, exports=exports, endpoint=endpoint)
    plan = retention_tasks.plan_access_purge.fn(settings, now, max_partitions)
    dropped = plan.due
    if not dry_run:
        dropped = [retention_tasks.drop_partition.fn(settings, drop) for drop in plan.due]
    return retention.summarise_access_purge(plan, dropped, dry_run)


def test_partitions_just_inside_and_outside_six_months(lake_dir: Path) -> None:
    # Aug 31 minus six calendar months is Feb 28 (2026 is no leap year), 12:00.
    now = datetime(2026, 8, 31, 12, 0, tzinfo=UTC)
    for day in (date(2026, 2, 26), date(2026, 2, 27), date(2026, 2, 28), date(2026, 3, 1)):
        write_day(lake_dir, day, files=2)
    summary = purge_log(lake_dir, now)
    assert summary.cutoff == datetime(2026, 2, 28, 12, 0, tzinfo=UTC)
    assert (summary.first_day, summary.last_day) == (date(2026, 2, 26), date(2026, 2, 27))
    assert (summary.partitions_deleted, summary.files_deleted, summary.remaining) == (2, 4, 0)
    assert summary.bytes_freed > 0
    # Feb 28 holds the cut-off instant: kept, its older rows are filtered by the export
    assert days_in(lake_dir) == [date(2026, 2, 28), date(2026, 3, 1)]
    # nothing else in the lake was touched
    assert (lake_dir / "access_log" / "_SUCCESS").exists()
    assert (lake_dir / "access_log" / ".staging" / "x.parquet").exists()
    assert (lake_dir / "courses" / "7" / "course.json").exists()


def test_cutoff_at_midnight_drops_the_day_that_ends_there(lake_dir: Path) -> None:
    for day in (date(2026, 2, 27), date(2026, 2, 28)):
        write_day(lake_dir, day)
    naive_midnight = datetime(2026, 8, 31)  # naive: UTC
    summary = purge_log(lake_dir, naive_midnight)
    assert summary.cutoff == datetime(2026, 2, 28, tzinfo=UTC)
    assert (summary.first_day, summary.last_day) == (date(2026, 2, 27), date(2026, 2, 27))
    assert days_in(lake_dir) == [date(2026, 2, 28)]
    # a second later, nothing more is due
    assert purge_log(lake_dir, naive_midnight + SECOND).partitions_deleted == 0


def test_max_partitions_bounds_a_run_and_the_next_continues(lake_dir: Path) -> None:
    now = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
    old = [date(2025, 1, 1) + timedelta(days=i) for i in range(10)]
    for day in [*old, date(2026, 11, 1)]:
        write_day(lake_dir, day)
    first = purge_log(lake_dir, now, max_partitions=4)
    assert (first.partitions_deleted, first.first_day, first.last_day) == (4, old[0], old[3])
    assert first.remaining == 6
    assert days_in(lake_dir)[0] == old[4]
    second = purge_log(lake_dir, now, max_partitions=4)
    assert (second.first_day, second.remaining) == (old[4], 2)
    third = purge_log(lake_dir, now, max_partitions=4)
    assert (third.partitions_deleted, third.remaining, third.last_day) == (2, 0, old[9])
    assert purge_log(lake_dir, now).partitions_deleted == 0
    assert days_in(lake_dir) == [date(2026, 11, 1)]


def test_access_dry_run_deletes_nothing(lake_dir: Path) -> None:
    now = datetime(2026, 11, 28, 18, 0, tzinfo=UTC)
    for i in range(5):
        write_day(lake_dir, date(2025, 1, 1) + timedelta(days=i))
    dry = purge_log(lake_dir, now, max_partitions=3, dry_run=True)
    assert len(days_in(lake_dir)) == 5
    real = purge_log(lake_dir, now, max_partitions=3)
    assert dry.model_dump(exclude={"dry_run"}) == real.model_dump(exclude={"dry_run"})
    assert (real.partitions_deleted, real.remaining) == (3, 2)


def test_a_folder_that_breaks_the_layout_stops_the_purge(lake_dir: Path) -> None:
    write_day(lake_dir, date(2025, 1, 1))
    # (with a file in it: an object store has no empty folders, and neither listing sees one)
    (lake_dir / "access_log" / "event_date=2025-13-01").mkdir()
    (lake_dir / "access_log" / "event_date=2025-13-01" / "part-0.parquet").write_bytes(b"x")
    with pytest.raises(LakeDataError, match=r"event_date=2025-13-01"):
        purge_log(lake_dir, datetime(2026, 11, 28, tzinfo=UTC))
    assert (lake_dir / "access_log" / "event_date=2025-01-01" / "part-0.parquet").exists()


def test_s3_access_purge(s3_server: SeaweedFS) -> None:
    bucket = s3_server.make_bucket("lake")
    lake = open_location(f"s3://{bucket}/lake", s3_endpoint_url=s3_server.endpoint_url)
    client = s3_server.client()
    days = [date(2026, 2, 26), date(2026, 2, 27), date(2026, 2, 28)]
    for day in days:
        for name in ("a.parquet", "b.parquet", "_SUCCESS"):
            key = f"lake/access_log/event_date={day.isoformat()}/{name}"
            client.put_object(Bucket=bucket, Key=key, Body=b"x" * 10)
    others = ["lake/courses/7/course.json", "lake/access_log/.staging/c.parquet", "other/k"]
    for key in others:
        client.put_object(Bucket=bucket, Key=key, Body=b"{}")
    summary = purge_log(
        lake, datetime(2026, 8, 31, 12, tzinfo=UTC), endpoint=s3_server.endpoint_url
    )
    assert (summary.first_day, summary.last_day, summary.files_deleted) == (days[0], days[1], 4)
    assert summary.bytes_freed == 40
    keys = {o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert keys == {
        *others,
        *(
            f"lake/access_log/event_date=2026-02-28/{n}"
            for n in ("a.parquet", "b.parquet", "_SUCCESS")
        ),
    }


def test_no_access_log_is_nothing_to_do(tmp_path: Path) -> None:
    summary = purge_log(tmp_path, NOW)
    assert (summary.partitions_deleted, summary.remaining, summary.first_day) == (0, 0, None)


def test_a_failed_tombstone_lives_as_long_as_the_export_would_have(exports: Location) -> None:
    record = registry.begin_export(
        exports,
        kind=ExportKind.ACCESS_DATA,
        course_id=7,
        course_name="Intro",
        requested_by=3,
        request_id="failed-1",
        parameters={},
        file_name="a.csv",
        ttl=timedelta(days=7),
        now=NOW - timedelta(days=3),
    )
    failed = registry.fail(exports, record, "the lake is damaged", now=NOW - timedelta(days=3))
    assert failed is not None
    plan = retention.decide_export_purge(retention.survey_exports(exports), NOW, TTL)
    assert [s for s in plan.steps if s.item == record.export_id] == []
    later = failed.expires_at + timedelta(seconds=1)
    plan = retention.decide_export_purge(retention.survey_exports(exports), later, TTL)
    [step] = [s for s in plan.steps if s.item == record.export_id]
    assert step.kind is retention.StepKind.REMOVE_TOMBSTONE
    assert retention.apply_steps(exports, [step], later) == [step]
    assert export_records.read_record(exports, 7, record.export_id) is None
