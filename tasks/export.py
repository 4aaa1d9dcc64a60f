"""The export lifecycle as flow steps, shared by every kind: claim, write, publish, tell.

Each export flow is: build the request, check it, claim, (write under a heartbeat),
publish, tell. What happens when a run does not write (the export was done before, is
being made for someone else, or the course is busy) is :func:`conclude`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import State
from prefect.client.schemas.responses import SetStateStatus
from prefect.context import FlowRunContext
from prefect.exceptions import Abort
from prefect.states import Scheduled

from course_exports import export_records, lifecycle, links, registry
from course_exports.export_records import ExportKind, ExportRecord, ExportRequest, ExportResult
from course_exports.heartbeat import Heartbeat, release_leases, start_heartbeat
from course_exports.humanize import human_size
from course_exports.lifecycle import Claim, Outcome
from course_exports.settings import Settings
from course_exports.text import markdown_text, one_line
from tasks.mail import send_failure_mail, send_ready_mail
from tasks.request import CourseRequest, check_request
from tasks.retry import io_task

#: How often a run without a deployment (a plain Python call) looks again while it waits.
IN_PROCESS_POLL_S = 1.0


@dataclass(frozen=True)
class WrittenFile:
    """What a pack/write step made: enough to publish it."""

    size_bytes: int
    sha256: str
    counts: dict[str, int]
    details: dict[str, Any] = field(default_factory=dict)


def result_for(settings: Settings, record: ExportRecord) -> ExportResult:
    """The record with its download link (deterministic: same export, same link)."""
    url = links.download_url(
        settings.public_url,
        settings.require_signing_key(),
        record.course_id,
        record.export_id,
        record.expires_at,
    )
    return ExportResult(**record.model_dump(), download_url=url)


def contents_of(record: ExportRecord) -> str:
    """What the file holds, in a sentence for the mail and the artifact (from the record,
    so a request that joined another's export can say it too)."""
    counts = record.counts
    if record.kind is ExportKind.COURSE:
        return (
            f"course data, roster and {counts.get('workspaces', 0):,} student workspaces "
            f"({counts.get('files', 0):,} files, "
            f"{human_size(counts.get('bytes_uncompressed', 0))} before compression) "
            f"of {counts.get('assignments', 0):,} assignments"
        )
    if record.kind is ExportKind.ACCESS_DATA:
        details = record.details
        start = str(details.get("window_start", ""))[:16].replace("T", " ")
        end = str(details.get("window_end", ""))[:16].replace("T", " ")
        return (
            f"{counts.get('events', 0):,} access events from {start} to {end} UTC, "
            f"times shown in {details.get('timezone', 'UTC')}"
        )
    return f"LTI settings of {counts.get('assignments', 0):,} assignments"


# -- claim ------------------------------------------------------------------------------


def _claim(settings: Settings, request: ExportRequest, course_name: str) -> Claim:
    return lifecycle.claim(
        settings.exports(),
        request,
        course_name=course_name,
        ttl=timedelta(days=settings.export_ttl_days),
        wait_s=settings.busy_retry_seconds,
    )


def _check_and_claim(settings: Settings, request: ExportRequest) -> tuple[CourseRequest, Claim]:
    checked = check_request(settings, request)
    return checked, _claim(settings, request, checked.course.name)


#: One task for two steps: each task run costs API calls and tens of ms (issue 10).
claim_task = io_task("claim-export", timeout_seconds=300)(_check_and_claim)


def _in_deployment() -> bool:
    """A deployment's run can give its worker back and be picked up again later."""
    context = FlowRunContext.get()
    run = context.flow_run if context is not None else None
    return run is not None and run.deployment_id is not None


def claim_export(settings: Settings, request: ExportRequest) -> tuple[CourseRequest, Claim]:
    """Check the request (course, teacher, selection: refused here, nothing written), then
    claim its export. A deployment run that must wait returns at once (the flow then
    reschedules itself); a plain Python call waits here, in its own process."""
    checked, decision = claim_task(settings, request)
    while decision.outcome is Outcome.WAIT and not _in_deployment():
        time.sleep(IN_PROCESS_POLL_S)
        decision = _claim(settings, request, checked.course.name)
    return checked, decision


def give_back_worker(later: datetime, reason: str) -> NoReturn:
    """End this attempt as a ``Scheduled`` run a worker starts again at ``later``.

    The state is proposed here, not returned from the flow: a flow that returns a
    non-final state makes Prefect's engine raise ``UnfinishedRun`` on its way out, the
    process exits with status 1, and the worker then reports the run Crashed (which the
    crash recovery would "retry"). ``Abort`` is the engine's own signal for "the
    orchestrator took this run over": no hook runs and the process exits with status 0.
    The server releases the run's deployment slot on Running -> Scheduled.
    """
    context = FlowRunContext.get()
    assert context is not None and context.flow_run is not None  # only deployment runs wait
    state: State[Any] = Scheduled(scheduled_time=later, name="AwaitingExport", message=reason)
    with get_client(sync_client=True) as client:
        response = client.set_flow_run_state(context.flow_run.id, state)
    if response.status is not SetStateStatus.ACCEPT:
        raise RuntimeError(  # transient for the caller: the orchestrator refused the wait
            f"Prefect did not accept AwaitingExport ({response.status.value}: {response.details})"
        )
    raise Abort(f"waiting for the course: {one_line(reason)}")


def conclude(
    settings: Settings, request: ExportRequest, checked: CourseRequest, decision: Claim
) -> ExportResult:
    """The end of a run that writes nothing: the export made before (the same request, or
    the identical one this request joined), its failure, or a later try.

    A later try ends the attempt as a ``Scheduled`` run (``give_back_worker``): Prefect
    releases the run's deployment slot, the process exits, and a worker starts the run
    again at ``scheduled_time``. Nothing waits in a worker meanwhile.
    """
    if decision.outcome is Outcome.WAIT:
        print(f"{one_line(decision.reason)}; looking again in {settings.busy_retry_seconds} s")
        later = datetime.now(UTC) + timedelta(seconds=settings.busy_retry_seconds)
        give_back_worker(later, decision.reason)
    record = decision.record
    assert record is not None  # a DONE claim carries the export it found
    joined = record.export_id != request.export_id
    if record.status is export_records.ExportStatus.FAILED:
        error = lifecycle.SharedExportFailedError(record)
        if request.notify:
            send_failure_mail(
                settings, checked.requester, checked.course.name, request.kind, error.reason
            )
        raise error
    result = result_for(settings, record)
    if joined:
        # Someone else's identical export: this requester gets their own mail and summary.
        print(f"request joined export {record.export_id} made for another request")
        return tell_requester(settings, request, checked, result)
    if (
        request.notify
        and record.status is export_records.ExportStatus.READY
        and not record.notified_at
    ):
        # The run that published it stopped before its mail (killed between the two):
        # the teacher was never told, so this run tells.
        print(f"export {record.export_id} is ready but its mail never went out: sending it")
        return tell_requester(settings, request, checked, result)
    print(
        f"request {one_line(request.request_id)} was completed before as export {record.export_id}"
    )
    return result


# -- write ------------------------------------------------------------------------------


@contextmanager
def exporting(
    settings: Settings, request: ExportRequest, checked: CourseRequest, decision: Claim
) -> Iterator[Heartbeat]:
    """Write under a heartbeat (leases renewed, progress in the manifest); on any error
    the export becomes a ``failed`` tombstone and the teacher is told why."""
    exports = settings.exports()
    heartbeat = start_heartbeat(exports, request, decision)
    try:
        yield heartbeat
    except Exception as exc:
        fail_export(settings, request, checked, heartbeat, exc)
        raise
    finally:
        heartbeat.stop()
        release_leases(exports, heartbeat)


@io_task("publish-export", timeout_seconds=300)
def publish_export(
    settings: Settings,
    request: ExportRequest,
    checked: CourseRequest,
    heartbeat: Heartbeat,
    written: WrittenFile,
) -> ExportResult:
    """Mark the export ``ready``, then send the ready mail: one task, since each task run
    costs API calls (issue 10), and telling can never fail the export."""
    record = heartbeat.stop()  # no progress write may land after "ready"
    ready = lifecycle.publish(
        settings.exports(),
        request,
        record,
        size_bytes=written.size_bytes,
        sha256=written.sha256,
        counts=written.counts,
        details=written.details,
    )
    return _tell(settings, request, checked, result_for(settings, ready))


@task(name="fail-export", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def fail_export(
    settings: Settings,
    request: ExportRequest,
    checked: CourseRequest,
    heartbeat: Heartbeat,
    exc: BaseException,
) -> None:
    """Leave a ``failed`` tombstone (its file removed, never another run's), tell the
    teacher what they can do about it."""
    reason = lifecycle.teacher_reason(exc)
    registry.fail(settings.exports(), heartbeat.stop(), reason)
    if request.notify:
        send_failure_mail.fn(settings, checked.requester, checked.course.name, request.kind, reason)


# -- tell -------------------------------------------------------------------------------


def summary_markdown(settings: Settings, result: ExportResult, contents: str) -> str:
    counts = "\n".join(f"| {name} | {value:,} |" for name, value in result.counts.items())
    page = links.course_page_url(settings.public_url, result.course_id)  # no secret in it
    return (
        f"# {result.kind} export of course {result.course_id}: "
        f"{markdown_text(result.course_name)}\n\n"
        f"{markdown_text(contents, limit=400)}\n\n"
        f"| | |\n|---|---|\n"
        f"| export id | `{result.export_id}` |\n"
        f"| file | {markdown_text(result.file_url, limit=400)} |\n"
        f"| size | {human_size(result.size_bytes)} ({result.size_bytes:,} bytes) |\n"
        f"| sha256 | `{result.sha256}` |\n"
        f"| created | {result.created_at.isoformat()} |\n"
        f"| expires | {result.expires_at.isoformat()} |\n"
        f"{counts}\n\n"
        f"Teachers of the course download it from its [Course Data page]({page}).\n"
    )


def _tell(
    settings: Settings, request: ExportRequest, checked: CourseRequest, result: ExportResult
) -> ExportResult:
    """The ready mail to the requester, if asked for; it can never fail the export (a
    mail that cannot be delivered is logged by the mail step). The run's summary artifact
    is written by the completion hook (flows.hooks), after the run is Completed: it is
    for the operator, and the export and its mail need not wait for it."""
    if request.notify:
        delivery = send_ready_mail.fn(
            settings, checked.requester, result, contents_of(result), checked.course.timezone
        )
        if delivery.delivered and result.export_id == request.export_id:
            # Only the export's own request: a joined one's mail says nothing of the
            # export's requester.
            registry.mark_notified(settings.exports(), result.course_id, result.export_id)
    print(
        f"export {result.export_id} ready: {one_line(result.file_url, limit=400)} "
        f"({result.size_bytes:,} bytes)"
    )
    return result


#: The telling of a request that joined another's export (the writer tells in publish).
tell_requester = task(name="tell-requester", cache_policy=NO_CACHE, timeout_seconds=300)(_tell)
