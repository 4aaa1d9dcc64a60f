"""The crash-recovery rules and the automations as declared (no server: the real ones run
in tests/test_e2e_crash.py)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, RunDeployment
from prefect.events.schemas.automations import EventTrigger

from course_exports.export_records import ExportKind
from deployments import automations, serve
from tasks import recovery
from tasks.recovery import CRASH_RETRY_TAG, HANDLED_TAG, CrashedRun


def crashed(*tags: str, key: str | None = "lms:r:abc") -> CrashedRun:
    return CrashedRun(
        id=uuid.uuid4(),
        name="course-zip · course 7",
        state_type=StateType.CRASHED,
        deployment_id=uuid.uuid4(),
        parameters={"course_id": 7, "requested_by": 3},
        idempotency_key=key,
        tags=frozenset(tags),
    )


def test_the_kind_comes_from_the_deployment_tags() -> None:
    assert crashed("course-exports", "course").kind is ExportKind.COURSE
    assert crashed("course-exports", "access-data").kind is ExportKind.ACCESS_DATA
    assert crashed("course-exports", "lti-settings").kind is ExportKind.LTI_SETTINGS
    assert crashed("course-exports", "retention").kind is None  # not an export: left alone
    assert crashed("course-exports", "recovery").kind is None


def test_a_retry_and_a_handled_run_are_told_apart() -> None:
    first = crashed("course-exports", "course")
    assert not first.is_retry and not first.handled
    assert crashed("course-exports", "course", CRASH_RETRY_TAG).is_retry
    assert crashed("course-exports", "course", HANDLED_TAG).handled


def test_one_retry_key_per_crashed_run() -> None:
    run = crashed("course")
    key = recovery.retry_key(run.id, run.idempotency_key)
    assert key == f"lms:r:abc:after:{run.id}"
    assert recovery.retry_key(run.id, None) == f"{run.id}:after:{run.id}"  # run from the UI


def test_the_crashed_run_is_read_from_an_event_resource_or_an_id() -> None:
    run_id = uuid.uuid4()
    assert recovery.run_id_of(f"prefect.flow-run.{run_id}") == run_id
    assert recovery.run_id_of(str(run_id)) == run_id
    with pytest.raises(ValueError):
        recovery.run_id_of("prefect.deployment.nope")


def test_mail_follows_the_request_or_the_flow_default() -> None:
    assert recovery.notify_requested(ExportKind.COURSE, {})
    assert not recovery.notify_requested(ExportKind.COURSE, {"notify": False})
    assert not recovery.notify_requested(ExportKind.ACCESS_DATA, {})
    assert recovery.notify_requested(ExportKind.ACCESS_DATA, {"notify": True})
    assert not recovery.notify_requested(ExportKind.LTI_SETTINGS, {})


def test_zombie_automation_waits_for_heartbeats_of_our_runs_only() -> None:
    zombie = automations.zombie_automation(timedelta(seconds=90))
    trigger = zombie.trigger
    assert isinstance(trigger, EventTrigger)
    assert trigger.posture == "Proactive" and trigger.within == timedelta(seconds=90)
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.Completed", "prefect.flow-run.Crashed"} <= trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    assert trigger.match_related == automations._OUR_TAG  # a shared server's other runs
    [action] = zombie.actions
    assert isinstance(action, ChangeFlowRunState) and action.state is StateType.CRASHED
    assert automations.ZOMBIE_AFTER.total_seconds() >= 3 * automations.HEARTBEAT_SECONDS


def test_retry_automation_starts_the_recovery_for_the_crashed_run() -> None:
    deployment_id = uuid.uuid4()
    retry = automations.retry_automation(deployment_id)
    assert isinstance(retry.trigger, EventTrigger)
    assert retry.trigger.expect == {"prefect.flow-run.Crashed"}
    assert retry.trigger.posture == "Reactive"
    [action] = retry.actions
    assert isinstance(action, RunDeployment) and action.deployment_id == deployment_id
    assert action.parameters == {"crashed_run": "{{ event.resource.id }}"}


def test_served_runs_send_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", raising=False)
    assert serve.heartbeat_seconds() == automations.HEARTBEAT_SECONDS
