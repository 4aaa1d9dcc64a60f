"""What happens to an export whose run crashed: it runs again once, then it fails for good.

A run crashes when its process dies under it (kill -9, out of memory, a lost machine):
nothing in the run can react, so the ``course-exports: recover crashed exports``
automation (deployments/automations.py) starts ``recover-crashed-exports`` for it, and a
schedule sweeps up any it missed. For each crashed export run:

- a first attempt gets one retry: a new run of the same deployment and parameters,
  tagged :data:`CRASH_RETRY_TAG`, created with the idempotency key
  ``<the crashed run's key>:after:<its id>``. The LMS client derives the same key when
  it finds a crashed first attempt, so whichever of the two comes first creates the
  retry and the other finds it: one retry, never two.
- a crashed retry is the end: the export is failed (nothing of it is left) and the
  teacher gets the failure mail, the one mail of the request.

The crashed run is then tagged :data:`HANDLED_TAG`, so the sweep passes over it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

from prefect import get_client, task
from prefect.cache_policies import NO_CACHE
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import FlowRun, StateType

from course_exports.export_records import ExportKind

#: Carried by the automatic retry of a crashed export (deployments/lms_client.py has it too).
CRASH_RETRY_TAG = "crash-retry"
#: Put on a crashed run once its retry or its failure is taken care of.
HANDLED_TAG = "crash-handled"
PROJECT_TAG = "course-exports"
_RUN_PREFIX = "prefect.flow-run."


@dataclass(frozen=True)
class CrashedRun:
    """What recovery needs to know of a crashed flow run."""

    id: UUID
    name: str
    state_type: StateType | None
    deployment_id: UUID | None
    parameters: dict[str, Any]
    idempotency_key: str | None
    tags: frozenset[str] = field(default_factory=frozenset)

    @property
    def kind(self) -> ExportKind | None:
        """The export it was (deployments are tagged with their kind), None for other flows."""
        kinds = [kind for kind in ExportKind if kind.value in self.tags]
        return kinds[0] if len(kinds) == 1 else None

    @property
    def is_retry(self) -> bool:
        return CRASH_RETRY_TAG in self.tags

    @property
    def handled(self) -> bool:
        return HANDLED_TAG in self.tags


def retry_key(run_id: UUID | str, idempotency_key: str | None) -> str:
    """The idempotency key of the one retry of a crashed run (the LMS client's too)."""
    return f"{idempotency_key or run_id}:after:{run_id}"


def run_id_of(reference: str) -> UUID:
    """A flow run id from an event's resource id (``prefect.flow-run.<id>``) or a bare id."""
    return UUID(reference.removeprefix(_RUN_PREFIX))


def _crashed_run(run: FlowRun) -> CrashedRun:
    return CrashedRun(
        id=run.id,
        name=run.name,
        state_type=run.state_type,
        deployment_id=run.deployment_id,
        parameters=dict(run.parameters or {}),
        idempotency_key=run.idempotency_key,
        tags=frozenset(run.tags or ()),
    )


def find_crashed_runs(crashed_run: str | None, since: timedelta) -> list[CrashedRun]:
    """The run named by ``crashed_run``, or every crashed run of ours that ended within
    ``since`` and is not handled yet (the sweep)."""
    with get_client(sync_client=True) as client:
        if crashed_run is not None:
            runs = [client.read_flow_run(run_id_of(crashed_run))]
        else:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED])),
                    tags=FlowRunFilterTags(all_=[PROJECT_TAG]),
                    end_time=FlowRunFilterEndTime(after_=datetime.now(UTC) - since),
                ),
                limit=200,
            )
    found = [_crashed_run(run) for run in runs]
    return [run for run in found if run.state_type is StateType.CRASHED and not run.handled]


def start_retry(run: CrashedRun) -> UUID:
    """The crashed run's one retry (created, or found when the LMS client made it first)."""
    if run.deployment_id is None:
        raise ValueError(f"flow run {run.id} has no deployment to run again")
    with get_client(sync_client=True) as client:
        retry = client.create_flow_run_from_deployment(
            run.deployment_id,
            parameters=run.parameters,
            idempotency_key=retry_key(run.id, run.idempotency_key),
            # The first attempt's tags (its course's: the Course Data page shows the
            # retry as queued), less "handled", which is the crashed run's alone.
            tags=sorted((run.tags - {HANDLED_TAG}) | {CRASH_RETRY_TAG}),
        )
    return retry.id


def read_flow_run(run_id: UUID) -> FlowRun:
    """The run as the API has it (what a failure event and webhook describe)."""
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def mark_handled(run: CrashedRun) -> None:
    with get_client(sync_client=True) as client:
        client.update_flow_run(run.id, tags=sorted(run.tags | {HANDLED_TAG}))


def notify_requested(kind: ExportKind, parameters: Mapping[str, Any]) -> bool:
    """Whether the request asked for mail; the flows' defaults when it did not say."""
    return bool(parameters.get("notify", kind is ExportKind.COURSE))


find_crashed_runs_task = task(name="find-crashed-runs", cache_policy=NO_CACHE, retries=2)(
    find_crashed_runs
)
start_retry_task = task(
    name="start-retry", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5
)(start_retry)
mark_handled_task = task(
    name="mark-handled", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5
)(mark_handled)
