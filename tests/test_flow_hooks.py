"""The export flows' state hooks, in-process on the Prefect harness: the result artifact the
LMS client reads, the signed webhook, and that neither can fail a finished export."""

from __future__ import annotations

import functools
import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from e2e_kit import WebhookReceiver, wait_for
from flowkit import LocalSite
from prefect import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
from standardwebhooks import Webhook

from course_exports import webhook
from course_exports.export_records import ExportResult
from course_exports.lifecycle import CRASH_REASON
from flows import hooks
from flows.export_lti_settings import export_lti_settings
from flows.hooks import RESULT_ARTIFACT_TYPE

pytestmark = [pytest.mark.flow, pytest.mark.usefixtures("prefect_harness")]
SECRET = webhook.new_secret()


@pytest.fixture(scope="module")
def receiver(serve_app: Any) -> Iterator[tuple[WebhookReceiver, str]]:
    hook = WebhookReceiver()
    with serve_app(hook.app()) as base:
        yield hook, f"{base}/hook"


@pytest.fixture
def site(
    site: LocalSite, monkeypatch: pytest.MonkeyPatch, receiver: tuple[WebhookReceiver, str]
) -> LocalSite:
    """The shared site, with the webhook pointed at this module's receiver."""
    monkeypatch.setenv("COURSE_EXPORT_WEBHOOK_URL", receiver[1])
    monkeypatch.setenv("COURSE_EXPORT_WEBHOOK_SECRET", SECRET)
    return site


def run_id_of(state: Any) -> UUID:
    run_id: UUID = state.state_details.flow_run_id
    return run_id


def delivered(receiver: WebhookReceiver, run_id: UUID) -> dict[str, Any]:
    [delivery] = wait_for(
        "the webhook",
        lambda: receiver.matching(lambda d: json.loads(d.body)["flow_run_id"] == str(run_id)),
        timeout_s=10,
    )
    Webhook(SECRET).verify(delivery.body, delivery.headers)  # as the LMS does
    body: dict[str, Any] = json.loads(delivery.body)
    return body


def test_completion_publishes_the_result_and_calls_the_webhook(
    site: LocalSite, receiver: tuple[WebhookReceiver, str]
) -> None:
    state = export_lti_settings(
        course_id=site.course, requested_by=site.teacher, request_id="hook-1", return_state=True
    )
    result = ExportResult.model_validate(state.result())
    run_id = run_id_of(state)
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    [published] = [a for a in artifacts if a.type == RESULT_ARTIFACT_TYPE]
    # Everything but the bearer link: the LMS signs its own (LmsClient(signing_key=...)).
    assert published.data == result.model_dump(mode="json", exclude={"download_url"})
    body = delivered(receiver[0], run_id)
    assert body["event"] == webhook.COMPLETED
    assert body["flow_run_id"] == str(run_id) == result.flow_run_id
    assert {k: v for k, v in body.items() if k != "event"} == result.model_dump(mode="json")


def artifacts_of(run_id: UUID) -> list[Any]:
    with get_client(sync_client=True) as client:
        return list(
            client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
        )


def test_every_completed_run_gets_a_summary_and_a_failing_one_stops_nothing(
    site: LocalSite, receiver: tuple[WebhookReceiver, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The completion hook writes the markdown summary (after the result artifact), for
    the run that made the export and for a repeat of its request; a summary that cannot
    be written is logged and leaves the result artifact and the webhook alone."""
    runs = [
        export_lti_settings(
            course_id=site.course, requested_by=site.teacher, request_id="hook-4", return_state=True
        )
        for _ in range(2)  # the second finds the export made by the first
    ]
    results = [ExportResult.model_validate(state.result()) for state in runs]
    assert results[0].export_id == results[1].export_id
    for state, result in zip(runs, results, strict=True):
        [summary] = [a for a in artifacts_of(run_id_of(state)) if a.type == "markdown"]
        assert summary.key == f"lti-settings-course-{site.course}"
        assert result.export_id in str(summary.data) and "Course Data page" in str(summary.data)

    def broken(*_: Any) -> None:
        raise RuntimeError("the artifact API is down")

    monkeypatch.setattr(hooks, "publish_summary_artifact", broken)
    state = export_lti_settings(
        course_id=site.course, requested_by=site.teacher, request_id="hook-5", return_state=True
    )
    assert state.is_completed()
    kinds = [a.type for a in artifacts_of(run_id_of(state))]
    assert RESULT_ARTIFACT_TYPE in kinds and "markdown" not in kinds
    assert delivered(receiver[0], run_id_of(state))["event"] == webhook.COMPLETED


def test_failure_calls_the_webhook_with_a_reason(
    site: LocalSite, receiver: tuple[WebhookReceiver, str]
) -> None:
    student = site.summary.left_users[site.course][0]  # not (any more) in the roster
    state = export_lti_settings(
        course_id=site.course, requested_by=student, request_id="hook-2", return_state=True
    )
    assert state.is_failed()
    body = delivered(receiver[0], run_id_of(state))
    assert body["event"] == webhook.FAILED and body["status"] == "failed"
    assert (body["course_id"], body["kind"], body["request_id"]) == (
        site.course,
        "lti-settings",
        "hook-2",
    )
    assert body["reason"] == "only a teacher of the course may request this export"
    assert CRASH_REASON not in body["reason"]


def test_an_unreachable_lms_does_not_fail_the_export(
    site: LocalSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COURSE_EXPORT_WEBHOOK_URL", "http://127.0.0.1:9/hook")
    quick = functools.partial(webhook.post, attempts=2, sleep=lambda _: None)
    monkeypatch.setattr(webhook, "post", quick)
    state = export_lti_settings(
        course_id=site.course, requested_by=site.teacher, request_id="hook-3", return_state=True
    )
    assert state.is_completed()
    result = ExportResult.model_validate(state.result())
    assert Path(result.file_url).exists()


def test_a_process_freezes_its_startup_heap_once_as_its_first_flow_runs(
    monkeypatch: pytest.MonkeyPatch, site: LocalSite
) -> None:
    from flows import export_access_data, export_course, hooks

    for flow in (
        export_access_data.export_access_data,
        export_course.export_course,
        export_lti_settings,
    ):
        assert hooks.freeze_startup_heap in flow.on_running_hooks
    monkeypatch.setattr(hooks, "_heap_frozen", False)
    gc.unfreeze()
    try:
        assert export_lti_settings(course_id=site.course, requested_by=site.teacher)
        frozen = gc.get_freeze_count()
        assert frozen > 10_000  # Prefect, Polars, the test harness: all of startup
        made_later = [[i] for i in range(1_000)]  # noqa: F841 (new objects to leave be)
        assert export_lti_settings(course_id=site.course, requested_by=site.teacher)
        # A second run freezes nothing more (frozen objects may still be freed by refcount).
        assert gc.get_freeze_count() <= frozen
    finally:
        gc.unfreeze()
