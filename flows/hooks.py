"""State hooks of the export flows: hand the result to the LMS, emit an event, call the webhook.

They run in the flow-run process right after Prefect records the final state, so the
flow bodies stay recipes of export steps. What they do on completion:

1. publish the result as a ``result`` artifact on the flow run: the flows persist their
   result (``persist_result=True``) in the *worker's* result storage, and the REST API
   only holds a pointer to it (storage key, serializer), so an LMS that talks to the API
   alone could not read it. ``deployments.lms_client.LmsClient.result`` reads this
   artifact; the Prefect UI shows it as a key-value table on the run's Artifacts tab.
   It holds everything but ``download_url``: whoever reads the Prefect API must not get
   a working link (CONTRACT 5.1). The LMS mints the link itself from ``course_id``,
   ``export_id`` and ``expires_at`` with the signing key it already holds.
2. write the markdown summary an operator reads on the run's Artifacts tab: here, not in
   the flow, so its ``POST`` (~40 ms on Prefect's ephemeral API) no longer stands between
   the export and its Completed state, nor before the ``result`` artifact (on the
   ephemeral API the Completed state may then wait on the server instead: README,
   Benchmarks, "Session 16"),
3. emit the Prefect event ``course-export.completed`` (automations can react to it),
4. POST the signed webhook when ``COURSE_EXPORT_WEBHOOK_URL`` is set.

On failure (or crash): the event ``course-export.failed`` and the webhook with a reason a
teacher can act on. Each step is guarded on its own: a hook never fails, retries or
deletes a finished export, and one failing step does not skip the next.
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Flow, flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.objects import FlowRun, State
from prefect.events import emit_event
from prefect.flows import FlowStateHook
from prefect.logging.loggers import flow_run_logger

from course_exports import webhook
from course_exports.export_records import ExportKind, ExportRequest, ExportResult
from course_exports.lifecycle import TRANSIENT_REASON, teacher_reason
from course_exports.settings import load_settings
from course_exports.text import one_line

P = ParamSpec("P")
R = TypeVar("R")

#: The artifact type the LMS client looks for (the UI renders ``result`` as key-value pairs).
RESULT_ARTIFACT_TYPE = "result"


def _logger(flow: Flow[Any, Any] | None, flow_run: FlowRun) -> Any:
    return flow_run_logger(flow_run, flow)


def _attempt(
    flow: Flow[Any, Any] | None, flow_run: FlowRun, what: str, step: Callable[[], object]
) -> None:
    try:
        step()
    except Exception as exc:  # a hook step must never take the next one down with it
        _logger(flow, flow_run).error("%s failed: %s: %s", what, type(exc).__name__, one_line(exc))


def result_artifact_data(result: ExportResult) -> dict[str, Any]:
    """The result as the API shows it: no bearer link (the LMS signs its own)."""
    return result.model_dump(mode="json", exclude={"download_url"})


def publish_result_artifact(flow_run: FlowRun, result: ExportResult) -> None:
    with get_client(sync_client=True) as client:
        client.create_artifact(
            ArtifactCreate(
                type=RESULT_ARTIFACT_TYPE,
                data=result_artifact_data(result),
                description=(
                    f"Result of {result.kind} export `{result.export_id}` of course "
                    f"{result.course_id}, as the flow returned it (read by the LMS client)."
                ),
                flow_run_id=flow_run.id,
            )
        )


def publish_summary_artifact(flow_run: FlowRun, result: ExportResult) -> None:
    """The markdown summary the Prefect UI shows an operator (no link that downloads
    anything), keyed by kind and course so the UI keeps each course's latest."""
    # Imported here: tasks.export loads the mail and lifecycle modules, which a failure
    # hook of a run that never got that far has no use for.
    from tasks.export import contents_of, summary_markdown

    markdown = summary_markdown(load_settings(), result, contents_of(result))
    with get_client(sync_client=True) as client:
        client.create_artifact(
            ArtifactCreate(
                type="markdown",
                key=f"{result.kind}-course-{result.course_id}",
                data=markdown,
                description=f"{result.kind} export {result.export_id} of course {result.course_id}",
                flow_run_id=flow_run.id,
            )
        )


def _event_payload(result: ExportResult) -> dict[str, Any]:
    # Small, and without the download link: events are visible to every UI user and
    # are copied into automations' actions.
    return result.model_dump(
        mode="json",
        include={
            "export_id",
            "course_id",
            "kind",
            "status",
            "request_id",
            "requested_by",
            "size_bytes",
            "sha256",
            "expires_at",
            "counts",
        },
    )


def _flow_run_resource(flow_run: FlowRun) -> dict[str, str]:
    return {
        "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
        "prefect.resource.role": "flow-run",
        "prefect.resource.name": flow_run.name,
    }


def _course_resource(course_id: Any, role: str | None = "course") -> dict[str, str]:
    resource = {"prefect.resource.id": f"course.{course_id}"}
    if role:  # a related resource says what it is to the event; the main one does not
        resource["prefect.resource.role"] = role
    return resource


def _post_webhook(flow: Flow[Any, Any] | None, flow_run: FlowRun, payload: dict[str, Any]) -> None:
    settings = load_settings()
    if settings.webhook_url is None or settings.webhook_secret is None:
        return
    delivery = webhook.post(
        settings.webhook_url, settings.webhook_secret.get_secret_value(), payload
    )
    logger = _logger(flow, flow_run)
    if delivery.delivered:
        logger.info(
            "webhook %s delivered (HTTP %s, attempt %d)",
            payload["event"],
            delivery.status_code,
            delivery.attempts,
        )
    else:
        logger.error(
            "webhook %s NOT delivered after %d attempts: %s",
            payload["event"],
            delivery.attempts,
            one_line(delivery.error or ""),
        )


def report_completed(flow: Flow[Any, Any], flow_run: FlowRun, state: State) -> None:
    """on_completion: the result artifact (first: the LMS waits for it), the summary
    artifact, the event, the webhook."""
    try:
        result = ExportResult.model_validate(state.result())
    except Exception as exc:
        _logger(flow, flow_run).error(
            "export result unreadable, nothing reported: %s", one_line(exc, limit=1000)
        )
        return
    _attempt(flow, flow_run, "result artifact", lambda: publish_result_artifact(flow_run, result))
    _attempt(flow, flow_run, "summary artifact", lambda: publish_summary_artifact(flow_run, result))
    _attempt(
        flow,
        flow_run,
        "event",
        lambda: emit_event(
            event=webhook.COMPLETED,
            resource={
                "prefect.resource.id": f"course-export.{result.export_id}",
                "prefect.resource.name": f"{result.kind} export of {one_line(result.course_name)}",
            },
            related=[_course_resource(result.course_id), _flow_run_resource(flow_run)],
            payload=_event_payload(result),
        ),
    )
    _attempt(
        flow,
        flow_run,
        "webhook",
        lambda: _post_webhook(flow, flow_run, webhook.completed_payload(result, str(flow_run.id))),
    )


def _failure_reason(state: State) -> str:
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:
        return TRANSIENT_REASON
    return teacher_reason(exc if isinstance(exc, BaseException) else None)


def report_failure(
    kind: ExportKind,
    flow_run: FlowRun,
    reason: str,
    flow: Flow[Any, Any] | None = None,
) -> None:
    """The ``course-export.failed`` event and webhook of a run of the ``kind`` export flow
    (from its failure hook, or from the recovery flow when a retry crashed)."""
    parameters = flow_run.parameters or {}
    course_id = parameters.get("course_id")
    request_id = parameters.get("request_id")
    payload = webhook.failed_payload(
        course_id=course_id,
        kind=str(kind),
        request_id=request_id,
        requested_by=parameters.get("requested_by"),
        reason=reason,
        flow_run_id=str(flow_run.id),
    )
    related = [_flow_run_resource(flow_run)]
    if course_id is not None:
        export_id = ExportRequest(
            kind,
            int(course_id),
            int(parameters.get("requested_by") or 0),
            None if request_id is None else str(request_id),
            flow_run_id=str(flow_run.id),
        ).export_id
        related.append(
            {
                "prefect.resource.id": f"course-export.{export_id}",
                "prefect.resource.role": "export",
            }
        )
    _attempt(
        flow,
        flow_run,
        "event",
        lambda: emit_event(
            event=webhook.FAILED,
            resource=_course_resource(course_id, role=None),
            related=related,
            payload={k: v for k, v in payload.items() if k != "event"},
        ),
    )
    _attempt(flow, flow_run, "webhook", lambda: _post_webhook(flow, flow_run, payload))


def report_failed(kind: ExportKind) -> FlowStateHook[..., Any]:
    """on_failure / on_crashed of the ``kind`` export flow: the event and the webhook.

    Not for a crash: a crashed export runs again once (flows/recovery.py), and the
    retry's hooks, or the recovery when the retry crashed too, report how it ended. The
    LMS hears of the request's outcome, never of a crash that was retried."""

    def report_export_failed(flow: Flow[Any, Any], flow_run: FlowRun, state: State) -> None:
        if state.is_crashed():
            _logger(flow, flow_run).info("crashed: the recovery flow retries or reports it")
            return
        report_failure(kind, flow_run, _failure_reason(state), flow)

    return report_export_failed


def freeze_startup_heap(flow: Flow[Any, Any], flow_run: FlowRun, state: State) -> None:
    """Once per process, as its first flow run starts: move every object made so far
    (Prefect, Polars, the ephemeral API's server if any) out of the garbage collector's
    sight (``gc.freeze``).

    A full collection otherwise walks that whole startup heap, 0.1-0.2 s here, at
    whatever step of an export crosses the threshold: a median course's access export
    is ~0.4 s, so one collection was a third of it (measured on the benchmark's lake).
    Objects made later are collected as usual; what startup leaves as garbage stays,
    once, and a process that runs many flows freezes only before its first.
    """
    global _heap_frozen
    if not _heap_frozen:
        _heap_frozen = True
        gc.freeze()


_heap_frozen = False


def export_flow(
    kind: ExportKind, *, name: str, flow_run_name: str, description: str
) -> Callable[[Callable[P, R]], Flow[P, R]]:
    """The decorator every export flow shares: its result persisted as JSON, the hooks
    that hand it to the LMS, and prints in the run's log."""
    return flow(
        name=name,
        flow_run_name=flow_run_name,
        description=description,
        persist_result=True,
        result_serializer="json",
        on_running=[freeze_startup_heap],
        on_completion=[report_completed],
        on_failure=[report_failed(kind)],
        on_crashed=[report_failed(kind)],
        log_prints=True,
    )
