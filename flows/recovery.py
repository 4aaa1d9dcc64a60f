"""recover-crashed-exports: a crashed export runs again once; a crashed retry fails for good.

Started by the ``course-exports: recover crashed exports`` automation for each crashed
run (``crashed_run``), and on a schedule without one, to sweep up crashes the automation
missed (a Prefect server restarted at the wrong moment). tasks/recovery.py explains the
rules; this is the recipe.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import flow

from course_exports import export_records, lifecycle, registry
from course_exports.export_records import ExportKind, ExportRequest
from course_exports.lifecycle import CRASH_REASON
from course_exports.settings import Settings, load_settings
from course_exports.text import one_line
from flows.hooks import report_failure
from flows.parameters import param
from tasks.mail import send_failure_mail
from tasks.recovery import (
    CrashedRun,
    find_crashed_runs_task,
    mark_handled_task,
    notify_requested,
    read_flow_run,
    start_retry_task,
)
from tasks.request import check_request_task


def crashed_request(run: CrashedRun, kind: ExportKind) -> ExportRequest:
    """The request the crashed run served (its export id comes from the request id, or
    from the run); the selection does not matter here."""
    parameters = run.parameters
    request_id = parameters.get("request_id")
    return ExportRequest(
        kind,
        int(parameters["course_id"]),
        int(parameters["requested_by"]),
        None if request_id is None else str(request_id),
        notify=notify_requested(kind, parameters),
        flow_run_id=str(run.id),
    )


def release_crashed_export(settings: Settings, run: CrashedRun, kind: ExportKind) -> None:
    """Before the retry: the dead run's leases go (the retry need not wait for them to run
    out). With a request id the retry takes the request's ``pending`` export over; without
    one its export is new, so the dead run's claim is removed."""
    request = crashed_request(run, kind)
    exports = settings.exports()
    record = lifecycle.abandon_run(exports, request)
    if record is not None and request.request_id is None:
        registry.discard(exports, record)


def fail_crashed_export(settings: Settings, run: CrashedRun, kind: ExportKind) -> None:
    """The retry died too: its export becomes a ``failed`` tombstone, the teacher gets the
    failure mail and the LMS the failure event and webhook (the crash hooks say nothing).
    A retry that died after publishing its export leaves nothing to fail or tell."""
    request = crashed_request(run, kind)
    exports = settings.exports()
    record = lifecycle.abandon_run(exports, request)
    if record is not None:
        registry.fail(exports, record, CRASH_REASON)
    else:
        current = export_records.read_record(exports, request.course_id, request.export_id)
        if current is not None and current.status is export_records.ExportStatus.READY:
            print(f"export {current.export_id} was published before its run died")
            return
    report_failure(kind, read_flow_run(run.id), CRASH_REASON)
    if request.notify:
        checked = check_request_task(settings, request)
        send_failure_mail(
            settings, checked.requester, checked.course.name, request.kind, CRASH_REASON
        )


@flow(
    name="recover-crashed-exports",
    flow_run_name="recover crashed exports",
    description="Runs a crashed export again once; fails a crashed retry and tells the teacher.",
    log_prints=True,
)
def recover_crashed_exports(
    crashed_run: str | None = param(
        "Crashed run",
        "The crashed flow run (its id, or the event resource prefect.flow-run.<id>); "
        "empty: every crashed run of the last `since_hours` not handled yet",
        None,
    ),
    since_hours: int = param("Sweep window (hours)", "How far back the sweep looks", 24),
) -> list[str]:
    settings = load_settings()
    done = []
    for run in find_crashed_runs_task(crashed_run, timedelta(hours=since_hours)):
        kind = run.kind
        if kind is None:
            print(f"flow run {run.id} ({one_line(run.name)}) is not an export: nothing to recover")
        elif not run.is_retry:
            release_crashed_export(settings, run, kind)
            retry = start_retry_task(run)
            print(f"export run {run.id} ({one_line(run.name)}) crashed: retry {retry}")
        else:
            fail_crashed_export(settings, run, kind)
            print(f"export run {run.id} ({one_line(run.name)}) crashed again: failed, teacher told")
        mark_handled_task(run)
        done.append(str(run.id))
    return done
