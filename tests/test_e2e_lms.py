"""The LMS's view, end to end: a real Prefect server, prefect.yaml deployed to it, a process
worker, and LmsClient over HTTP. Nothing here imports a flow.

The session's server and deployments come from conftest (``prefect_deployments``); this
module starts its own worker with a tiny lake, a download service and a webhook receiver.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_kit import (
    SIGNING_KEY,
    WEBHOOK_SECRET,
    Received,
    Site,
    WebhookReceiver,
    events,
    flow_runs,
    make_site,
)
from e2e_kit import wait_for as wait_until
from standardwebhooks import Webhook

from course_exports import webhook
from deployments.download_service import create_app
from deployments.lms_client import FlowRunRef, LmsClient, RunFailed
from deployments.local_stack import free_port, run_worker
from sample_lake import tiny_lake_spec

pytestmark = [pytest.mark.e2e]

COURSE = "export-course/export-course"
ACCESS = "export-access-data/export-access-data"


@pytest.fixture(scope="module")
def receiver(serve_app: Any) -> Iterator[tuple[WebhookReceiver, str]]:
    hook = WebhookReceiver(fail_first=1)  # the first delivery meets a busy LMS: retried
    with serve_app(hook.app()) as base:
        yield hook, f"{base}/hook"


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory,
    receiver: tuple[WebhookReceiver, str],
    serve_app: Any,
) -> Iterator[Site]:
    port = free_port()
    site = make_site(
        tmp_path_factory.mktemp("e2e-lms"),
        tiny_lake_spec(),
        f"http://127.0.0.1:{port}",
        receiver[1],
    )
    with serve_app(create_app(site.settings()), port=port):
        yield site


@pytest.fixture(scope="module")
def lms(prefect_deployments: str, site: Site) -> Iterator[LmsClient]:
    with (
        run_worker(prefect_deployments, "e2e-lms", site.root / "worker", site.env()),
        LmsClient(
            prefect_deployments, signing_key=SIGNING_KEY, public_url=site.public_url
        ) as client,
    ):
        yield client


@pytest.fixture(scope="module")
def started(lms: LmsClient, site: Site) -> dict[str, FlowRunRef]:
    """Both exports at once: the worker runs them side by side, the module waits once."""
    course = site.summary.course_ids[0]
    teacher = site.summary.teachers[course][0]
    return {
        "course": lms.trigger(
            COURSE, {"course_id": course, "requested_by": teacher}, request_id="lms-1"
        ),
        "access": lms.trigger(
            ACCESS,
            {"course_id": course, "requested_by": teacher, "excel": True},
            request_id="lms-2",
        ),
    }


def finished(lms: LmsClient, ref: FlowRunRef) -> dict[str, Any]:
    lms.wait(ref.id, timeout_s=120, poll_s=0.5)
    return lms.result(ref.id)


def download(result: dict[str, Any]) -> bytes:
    response = httpx.get(result["download_url"], timeout=30)
    assert response.status_code == 200, response.text
    return response.content


def webhook_for(receiver: WebhookReceiver, event: str, flow_run_id: str) -> Received:
    def probe() -> list[Received]:
        return receiver.matching(
            lambda d: (
                json.loads(d.body).get("event") == event
                and json.loads(d.body).get("flow_run_id") == flow_run_id
            )
        )

    [delivery] = wait_until(f"{event} webhook of run {flow_run_id}", probe)
    Webhook(WEBHOOK_SECRET).verify(delivery.body, delivery.headers)  # as the LMS does
    return delivery


def test_course_export_through_the_api(
    lms: LmsClient,
    site: Site,
    started: dict[str, FlowRunRef],
    receiver: tuple[WebhookReceiver, str],
) -> None:
    ref = started["course"]
    assert ref.created and ref.parameters["request_id"] == "lms-1"
    result = finished(lms, ref)
    assert result["kind"] == "course" and result["status"] == "ready"
    assert result["request_id"] == "lms-1"
    assert result["course_id"] == site.summary.course_ids[0]
    assert {"export_id", "file_url", "download_url", "expires_at", "size_bytes", "sha256"} <= set(
        result
    )
    assert result["counts"]["files"] > 10
    data = download(result)
    assert len(data) == result["size_bytes"]
    assert hashlib.sha256(data).hexdigest() == result["sha256"]
    assert Path(result["file_url"]).is_relative_to(site.exports)

    delivery = webhook_for(receiver[0], webhook.COMPLETED, ref.id)
    body = json.loads(delivery.body)
    assert body["export_id"] == result["export_id"] and body["sha256"] == result["sha256"]
    assert receiver[0].refused == 1  # one delivery was refused with 503 and retried

    # The server stores events in batches: give it a few seconds.
    resource = f"course-export.{result['export_id']}"
    [event] = wait_until(
        f"event {webhook.COMPLETED} of {resource}",
        lambda: [
            e
            for e in events(lms.api_url, webhook.COMPLETED)
            if e["resource"]["prefect.resource.id"] == resource
        ],
    )
    assert event["payload"]["sha256"] == result["sha256"]
    assert "download_url" not in event["payload"]


def test_access_data_export_through_the_api(
    lms: LmsClient,
    started: dict[str, FlowRunRef],
    receiver: tuple[WebhookReceiver, str],
) -> None:
    result = finished(lms, started["access"])
    assert result["kind"] == "access-data" and result["counts"]["events"] > 0
    data = download(result)
    assert hashlib.sha256(data).hexdigest() == result["sha256"]
    assert data.startswith(b"\xef\xbb\xbfUsername,Email,")  # excel=True: a byte-order mark
    webhook_for(receiver[0], webhook.COMPLETED, started["access"].id)


def test_same_request_twice_is_one_run_and_one_export(
    lms: LmsClient, site: Site, started: dict[str, FlowRunRef]
) -> None:
    first = finished(lms, started["course"])
    course = site.summary.course_ids[0]
    teacher = site.summary.teachers[course][0]
    again = lms.trigger(COURSE, {"course_id": course, "requested_by": teacher}, request_id="lms-1")
    assert again.id == started["course"].id and not again.created
    assert lms.result(again.id) == first
    runs = flow_runs(lms.api_url, idempotency_key={"any_": [again.idempotency_key]})
    assert len(runs) == 1
    kinds = [json.loads(p.read_text())["kind"] for p in site.manifests(course)]
    assert kinds.count("course") == 1


def test_request_id_reused_with_other_parameters_is_refused(
    lms: LmsClient,
    site: Site,
    started: dict[str, FlowRunRef],
    receiver: tuple[WebhookReceiver, str],
) -> None:
    first = finished(lms, started["course"])
    course = site.summary.course_ids[0]
    teacher = site.summary.teachers[course][0]
    course_json = json.loads((site.lake / "courses" / str(course) / "course.json").read_text())
    one_assignment = [course_json["units"][0]["assignments"][0]["id"]]
    other = {"course_id": course, "requested_by": teacher, "assignment_ids": one_assignment}
    ref = lms.trigger(COURSE, other, request_id="lms-1")
    assert ref.id != started["course"].id and ref.created  # not the first run, silently
    with pytest.raises(RunFailed, match=r"ConflictError: request_id 'lms-1' was already used"):
        lms.wait(ref.id, timeout_s=120, poll_s=0.5)
    kinds = [json.loads(p.read_text())["kind"] for p in site.manifests(course)]
    assert kinds.count("course") == 1  # nothing new, the first export untouched
    assert Path(first["file_url"]).exists()

    body = json.loads(webhook_for(receiver[0], webhook.FAILED, ref.id).body)
    assert body["status"] == "failed" and body["request_id"] == "lms-1"
    assert body["course_id"] == course and body["kind"] == "course"
    assert "already used" in body["reason"]
