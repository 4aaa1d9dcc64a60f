"""recover-crashed-exports: a crashed export runs again once; a crashed retry fails for good.

Started by the ``course-exports: recover crashed exports`` automation for each crashed
run (``crashed_run``), and on a schedule without one, to sweep up crashes the automation
missed (a Prefect server restarted at the wrong moment). tasks/recovery.py explains the
rules; this is the recipe.
"""

from __future__ import annotations

from datetime import timedelta

from prefect import flow

from course_exports.errors import ExportError
from course_exports.registry import ExportKind, new_export_id, read_record
from course_exports.settings import Settings, load_settings
from course_exports.text import one_line
from flows.hooks import CRASH_REASON
from flows.parameters import param
from tasks.export import fail_export
from tasks.recovery import (
    CrashedRun,
    find_crashed_runs_task,
    mark_handled_task,
    notify_requested,
    start_retry_task,
)
from tasks.request import check_request_task


class ExportCrashed(ExportError):
    """An export's run and its retry both died under it."""

    reason = CRASH_REASON


def fail_crashed_export(settings: Settings, run: CrashedRun, kind: ExportKind) -> None:
    """Remove what the dead retry left and send the teacher the failure mail."""
    parameters = run.parameters
    course_id, request_id = int(parameters["course_id"]), parameters.get("request_id")
    request = check_request_task(settings, course_id, int(parameters["requested_by"]))
    record = None
    if request_id is not None:
        record = read_record(
            settings.exports(), course_id, new_export_id(kind, course_id, str(request_id))
        )
    fail_export(
        settings,
        kind,
        request.requester,
        request.course.name,
        record,
        ExportCrashed(f"flow run {run.id} ({run.name}) crashed, and it was the retry"),
        notify_requested(kind, parameters),
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
            retry = start_retry_task(run)
            print(f"export run {run.id} ({one_line(run.name)}) crashed: retry {retry}")
        else:
            fail_crashed_export(settings, run, kind)
            print(f"export run {run.id} ({one_line(run.name)}) crashed again: failed, teacher told")
        mark_handled_task(run)
        done.append(str(run.id))
    return done
