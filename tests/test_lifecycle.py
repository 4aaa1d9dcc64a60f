"""The export lifecycle on local storage, without Prefect: claims, joining, course leases,
take-overs, the heartbeat and the wait limit (course_exports.lifecycle)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from course_exports import export_records, heartbeat, leases, lifecycle, registry
from course_exports.errors import ConflictError, InputError, LakeDataError
from course_exports.export_records import ExportKind, ExportRequest, ExportStatus
from course_exports.lifecycle import Claim, Outcome
from course_exports.storage import Location, open_location

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
TTL = timedelta(days=7)


@pytest.fixture
def exports(tmp_path: Path) -> Location:
    return open_location(str(tmp_path / "exports"))


def request(
    run: str,
    *,
    kind: ExportKind = ExportKind.COURSE,
    request_id: str | None = None,
    requested_by: int = 3,
    **selection: object,
) -> ExportRequest:
    return ExportRequest(
        kind,
        7,
        requested_by,
        request_id,
        dict(selection or {"assignment_ids": None}),
        flow_run_id=run,
    )


def claim(exports: Location, req: ExportRequest, now: datetime = NOW) -> Claim:
    return lifecycle.claim(exports, req, course_name="Intro", ttl=TTL, wait_s=30, now=now)


def finish(
    exports: Location, decision: Claim, req: ExportRequest, data: bytes = b"zip"
) -> export_records.ExportRecord:
    assert decision.record is not None
    record = registry.name_file(exports, decision.record, "a.zip")
    with registry.open_export_file(exports, record) as out:
        out.write(data)
    ready = lifecycle.publish(
        exports, req, record, size_bytes=out.size, sha256=out.sha256, counts={}
    )
    for holder in (decision.job, decision.course):
        if holder is not None:
            leases.Lease(exports, 7, holder.name).release(holder)
    return ready


def test_same_request_id_other_selections_at_once_one_claims_one_conflicts(
    exports: Location,
) -> None:
    """Issue 8.1: two runs of one request id with different selections never write beside
    each other: one claims the export, the other is refused, whatever the timing."""
    for attempt in range(8):
        rid = f"lms-{attempt}"
        runs = [
            request("run-a", request_id=rid, assignment_ids=[1]),
            request("run-b", request_id=rid, assignment_ids=[2]),
        ]
        barrier = threading.Barrier(2)

        def go(req: ExportRequest, barrier: threading.Barrier = barrier) -> Claim | Exception:
            barrier.wait()
            try:
                return claim(exports, req)
            except ConflictError as exc:
                return exc

        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(go, runs))
        writes = [o for o in outcomes if isinstance(o, Claim) and o.writes]
        refused = [o for o in outcomes if isinstance(o, ConflictError)]
        assert len(writes) == 1 and len(refused) == 1, outcomes
        [winner] = writes
        assert winner.record is not None
        stored = export_records.read_record(exports, 7, winner.record.export_id)
        assert stored == winner.record  # the winner's parameters, untouched by the loser
        finish(exports, winner, runs[outcomes.index(winner)])


def test_a_second_run_of_the_same_request_waits_and_gets_the_first_result(
    exports: Location,
) -> None:
    first_request = request("run-a", request_id="r1")
    first = claim(exports, first_request)
    second = claim(exports, request("run-b", request_id="r1"))
    assert first.writes and second.outcome is Outcome.WAIT
    assert "another run of this request" in second.reason
    ready = finish(exports, first, first_request)
    again = claim(exports, request("run-b", request_id="r1"))
    assert again.outcome is Outcome.DONE and again.record == ready


def test_identical_requests_join_one_export(exports: Location) -> None:
    """Ten teachers pressing Export at once: one export, nine joiners, one result."""
    requests = [request(f"run-{i}", requested_by=100 + i) for i in range(10)]
    barrier = threading.Barrier(10)

    def go(req: ExportRequest) -> Claim:
        barrier.wait()
        return claim(exports, req)

    with ThreadPoolExecutor(10) as pool:
        decisions = list(pool.map(go, requests))
    [writer] = [d for d in decisions if d.writes]
    waiting = [d for d in decisions if d.outcome is Outcome.WAIT]
    assert len(waiting) == 9
    assert writer.record is not None
    assert all(writer.record.export_id in d.reason for d in waiting)
    # Nothing of the joiners is an export: the course holds one manifest.
    course = Path(exports.path(7))
    assert len(list(course.glob("*/manifest.json"))) == 1
    ready = finish(exports, writer, requests[decisions.index(writer)])
    # A joiner's next look (its run comes back later) finds the shared export.
    for req, decision in zip(requests, decisions, strict=True):
        if decision is writer:
            continue
        done = claim(exports, req)
        assert done.outcome is Outcome.DONE and done.record == ready
    # After it is done, the same selection asked again makes a new export.
    fresh = claim(exports, request("run-later"))
    assert fresh.writes and fresh.record is not None
    assert fresh.record.export_id != ready.export_id


def test_twins_queued_far_apart_share_one_export(exports: Location) -> None:
    """Issue 11: two identical requests made at once, the second starting only after the
    first finished (a long queue), make one export; one made after it was ready, a new one."""
    first, twin = request("run-a"), request("run-b", requested_by=4)
    writer = claim(exports, first)
    ready = finish(exports, writer, first)
    served = claim(exports, twin)
    assert served.outcome is Outcome.DONE and served.record == ready
    assert len(list(Path(exports.path(7)).glob("*/manifest.json"))) == 1
    assert not leases.job_lease(exports, 7, twin.job_key).read()  # nothing left held
    # The twin's next run (a retry) still finds the export it was served.
    again = claim(exports, twin)
    assert again.outcome is Outcome.DONE and again.record == ready
    # Asked after the export was ready: the teacher wants today's data, a new export.
    later = claim(exports, request("run-c", requested_by=5))
    assert later.writes and later.record is not None
    assert later.record.export_id != ready.export_id
    # Other selections never share.
    other = claim(exports, request("run-d", kind=ExportKind.ACCESS_DATA, excel=False))
    assert other.writes


def test_a_twin_does_not_take_an_export_that_is_no_longer_ready(exports: Location) -> None:
    first, twin = request("run-a"), request("run-b", requested_by=4)
    ready = finish(exports, claim(exports, first), first)
    export_records.write_record(exports, ready.model_copy(update={"status": ExportStatus.EXPIRED}))
    made = claim(exports, twin)
    assert made.writes and made.record is not None
    assert made.record.export_id != ready.export_id


def test_a_damaged_job_mark_is_ignored(exports: Location) -> None:
    first, twin = request("run-a"), request("run-b", requested_by=4)
    finish(exports, claim(exports, first), first)
    exports.write_bytes_atomic(b"{not json", 7, f"{lifecycle.DONE_PREFIX}{twin.job_key}.json")
    assert claim(exports, twin).writes


def test_a_joiner_shares_the_failure_of_the_export_it_joined(exports: Location) -> None:
    writer = claim(exports, request("run-a"))
    joiner = claim(exports, request("run-b", requested_by=4))
    assert joiner.outcome is Outcome.WAIT and writer.record is not None
    registry.fail(exports, writer.record, "the course data on the platform is damaged")
    done = claim(exports, request("run-b", requested_by=4))
    assert done.outcome is Outcome.DONE and done.record is not None
    assert done.record.status is ExportStatus.FAILED
    error = lifecycle.SharedExportFailedError(done.record)
    assert error.reason == "the course data on the platform is damaged"


def test_another_course_export_waits_for_the_course(exports: Location) -> None:
    first_request = request("run-a", assignment_ids=[1])
    first = claim(exports, first_request)
    other = claim(exports, request("run-b", assignment_ids=[2]))
    assert first.writes and other.outcome is Outcome.WAIT
    assert first.record is not None and first.record.export_id in other.reason
    # The waiting export is queued: its manifest is pending, so an identical request joins it.
    assert other.record is not None and other.record.status is ExportStatus.PENDING
    twin = claim(exports, request("run-c", requested_by=9, assignment_ids=[2]))
    assert twin.outcome is Outcome.WAIT and other.record.export_id in twin.reason
    # Access data of the same course does not wait for the zip.
    access = claim(exports, request("run-d", kind=ExportKind.ACCESS_DATA, excel=False))
    assert access.writes
    finish(exports, first, first_request)
    resumed = claim(exports, request("run-b", assignment_ids=[2]))
    assert resumed.writes and resumed.record == other.record  # its own queued claim


def test_a_dead_runs_leases_run_out_and_are_taken_over(exports: Location) -> None:
    dead = claim(exports, request("run-dead", request_id="r1"))
    assert dead.writes and dead.record is not None
    record = registry.name_file(exports, dead.record, "partial.zip")
    Path(exports.path(registry.file_path(exports, record))).write_bytes(b"half a zip")
    # Within the lease, the request's next run waits for the one that holds it...
    assert claim(exports, request("run-new", request_id="r1")).outcome is Outcome.WAIT
    # ...and once the lease ran out (no heartbeat), takes the export over, partial file gone.
    later = NOW + leases.LEASE_TTL + timedelta(minutes=3)
    taken = claim(exports, request("run-new", request_id="r1"), now=later)
    assert taken.writes and taken.record is not None
    assert taken.record.flow_run_id == "run-new"
    assert not Path(exports.path(registry.file_path(exports, record))).exists()
    # The dead run, were it to wake, can neither publish nor clean up the new run's work.
    assert registry.fail(exports, record, "boom") is None
    with pytest.raises(ConflictError, match="taken over"):
        registry.publish(exports, record, size_bytes=1, sha256="x", counts={})


def test_the_same_run_coming_back_after_it_wrote_starts_its_file_over(
    exports: Location,
) -> None:
    """A flow-level retry is the same flow run: once it had named and begun its file, it
    takes its export over afresh (the half-written file removed), never writes on."""
    req = request("run-a", request_id="r1")
    first = claim(exports, req)
    assert first.writes and first.record is not None and first.job is not None
    record = registry.name_file(exports, first.record, "partial.zip")
    partial = Path(exports.path(registry.file_path(exports, record)))
    partial.write_bytes(b"half a zip")
    leases.job_lease(exports, 7, req.job_key).release(first.job)  # the attempt's cleanup
    if first.course is not None:
        leases.course_lease(exports, 7).release(first.course)
    again = claim(exports, req)
    assert again.writes and again.record is not None
    assert not again.record.file_name and not partial.exists()


def test_a_repeat_waits_while_the_publishing_run_is_still_mailing(exports: Location) -> None:
    """Ready but not yet mailed: while the run that published it still holds the job's
    lease it is sending the mail, so a repeat of the request waits instead of mailing
    too; once that run is gone without marking the mail sent, the repeat is the one to
    tell (DONE with no ``notified_at``)."""
    req = request("run-a", request_id="r1")
    first = claim(exports, req)
    assert first.record is not None and first.job is not None
    record = registry.name_file(exports, first.record, "a.zip")
    with registry.open_export_file(exports, record) as out:
        out.write(b"zip")
    ready = lifecycle.publish(exports, req, record, size_bytes=3, sha256=out.sha256, counts={})
    repeat = request("run-b", request_id="r1")
    assert claim(exports, repeat).outcome is Outcome.WAIT
    # The publisher died before its mail: its lease runs out, and the repeat tells.
    dead = claim(exports, repeat, now=NOW + timedelta(minutes=5))
    assert dead.outcome is Outcome.DONE and dead.record == ready
    # Mailed: a repeat is served at once, lease or not.
    registry.mark_notified(exports, 7, ready.export_id)
    assert claim(exports, repeat).outcome is Outcome.DONE


def test_a_failed_request_is_tried_again_by_its_next_run(exports: Location) -> None:
    first = claim(exports, request("run-a", request_id="r1"))
    assert first.record is not None and first.job is not None
    registry.fail(exports, first.record, lifecycle.TRANSIENT_REASON)
    for holder in (first.job, first.course):
        assert holder is not None
        leases.Lease(exports, 7, holder.name).release(holder)
    retry = claim(exports, request("run-b", request_id="r1"))
    assert retry.writes and retry.record is not None
    assert retry.record.status is ExportStatus.PENDING and retry.record.flow_run_id == "run-b"


def test_the_heartbeat_writes_progress_and_renews_leases(exports: Location) -> None:
    decision = claim(exports, request("run-a"))
    assert decision.record is not None and decision.job is not None
    beat = heartbeat.start_heartbeat(exports, request("run-a"), decision)
    beat.progress_every_s = beat.renew_every_s = 0.05
    beat.name_file("a.zip")
    for done in range(1, 5):
        beat.update(files_done=done, files_total=4, bytes_done=done * 10, bytes_total=40)
        time.sleep(0.02)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stored = export_records.read_record(exports, 7, decision.record.export_id)
        if stored is not None and stored.progress.get("files_done") == 4:
            break
        time.sleep(0.05)
    record = beat.stop()
    assert stored is not None and stored.progress == {
        "files_done": 4,
        "files_total": 4,
        "bytes_done": 40,
        "bytes_total": 40,
    }
    assert record.file_name == "a.zip" and stored.file_name == "a.zip"
    job = leases.job_lease(exports, 7, request("x").job_key).read()
    # Still the run's, renewed (the claim's clock is long past: renewed through the mark).
    assert job is not None and job.held_by(decision.job.owner, decision.job.run)
    assert job.expires_at > datetime.now(UTC)
    heartbeat.release_leases(exports, beat)
    assert leases.job_lease(exports, 7, request("x").job_key).read() is None


def test_waiting_too_long_gives_up_and_frees_the_queue(exports: Location) -> None:
    claim(exports, request("run-a", assignment_ids=[1]))
    queued = claim(exports, request("run-b", assignment_ids=[2]))
    assert queued.outcome is Outcome.WAIT and queued.record is not None
    # The first export's run is alive all along (its heartbeat renews the course lease).
    course = leases.course_lease(exports, 7)
    holder = course.read()
    assert holder is not None
    late = NOW + lifecycle.WAIT_LIMIT + timedelta(minutes=1)
    course.renew(holder, now=late)
    with pytest.raises(lifecycle.WaitedTooLongError) as raised:
        claim(exports, request("run-b", assignment_ids=[2]), now=late)
    assert raised.value.reason == lifecycle.WAITED_TOO_LONG_REASON
    tombstone = export_records.read_record(exports, 7, queued.record.export_id)
    assert tombstone is not None and tombstone.status is ExportStatus.FAILED
    assert leases.job_lease(exports, 7, request("run-b", assignment_ids=[2]).job_key).read() is None


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        (InputError("since", "must be before until"), "since: must be before until"),
        (LakeDataError("/lake/x.parquet", "missing column"), "the course data on the platform"),
        (OSError("connection reset by peer"), "temporary problem"),
        (None, "temporary problem"),
    ],
)
def test_one_teacher_reason_for_every_failure(error: BaseException | None, reason: str) -> None:
    text = lifecycle.teacher_reason(error)
    assert reason in text
    assert "/lake" not in text and "reset by peer" not in text


def test_claims_and_leases_are_atomic_on_s3(s3_server: Any) -> None:
    """The same race on a real S3 server: the conditional PUT lets exactly one win."""
    bucket = s3_server.make_bucket("claims")
    exports = open_location(f"s3://{bucket}/exports", s3_endpoint_url=s3_server.endpoint_url)
    runs = [request(f"run-{i}", request_id="r1", assignment_ids=[i % 2]) for i in range(8)]
    barrier = threading.Barrier(len(runs))

    def go(req: ExportRequest) -> export_records.ExportRecord | None:
        barrier.wait()
        return registry.claim(exports, req, course_name="Intro", ttl=TTL, now=NOW)

    with ThreadPoolExecutor(len(runs)) as pool:
        won = [c for c in pool.map(go, runs) if c is not None]
    assert len(won) == 1
    assert export_records.read_record(exports, 7, won[0].export_id) == won[0]
    lease = leases.course_lease(exports, 7)
    holders = [lease.acquire(f"e{i}", f"run-{i}", now=NOW) for i in range(3)]
    assert len({h.token for h in holders}) == 1 and holders[0].held_by("e0", "run-0")
    lease.release(holders[0])
    assert lease.read() is None
