"""The Prefect automations this project relies on, declared in code and installed by the
deployment set-up (``make deploy``, ``make serve``, the one-machine stack).

1. **Zombie runs.** A flow run whose process (or machine) died without a word stays
   Running forever. Every run sends a ``prefect.flow-run.heartbeat`` event every
   :data:`HEARTBEAT_SECONDS` (prefect.yaml sets it for workers, serve.py for served runs);
   this automation marks a run Crashed when no heartbeat and no final state came for
   :data:`ZOMBIE_AFTER` (Prefect's "detect zombie flows" recipe, limited to this project's
   runs by their ``course-exports`` tag).
2. **Crashed exports run again, once.** Every Crashed run of the project starts a run of
   the ``recover-crashed-exports`` deployment for it (flows/recovery.py): a crashed
   export is retried once, a crashed retry is failed and its teacher told.

Installing is idempotent: an automation is found by its name and updated in place, so
running the set-up again changes nothing, and changing a window here and running
``make deploy`` updates the server.
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta
from uuid import UUID

from prefect import get_client
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState, RunDeployment
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

#: Seconds between a flow run's heartbeats (Prefect's minimum is 30).
HEARTBEAT_SECONDS = 30
#: Silence after which a Running flow run is declared dead. Four missed heartbeats: a
#: Prefect server restarted in under a minute must not crash the runs it did not hear.
ZOMBIE_AFTER = timedelta(seconds=120)
#: Every deployment of prefect.yaml carries it; the automations watch nothing else.
PROJECT_TAG = "course-exports"
#: The deployment (flow name / deployment name) that handles a crashed run.
RECOVERY_DEPLOYMENT = "recover-crashed-exports/recover-crashed-exports"

ZOMBIE_NAME = "course-exports: crash zombie flow runs"
RETRY_NAME = "course-exports: recover crashed exports"

_FINAL_EVENTS = {
    f"prefect.flow-run.{state}" for state in ("Completed", "Failed", "Cancelled", "Crashed")
}
_OUR_RUNS = ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]})
_OUR_TAG = ResourceSpecification(
    {"prefect.resource.id": [f"prefect.tag.{PROJECT_TAG}"], "prefect.resource.role": ["tag"]}
)


def zombie_automation(after: timedelta = ZOMBIE_AFTER) -> AutomationCore:
    """Mark Crashed a run of ours that went ``after`` without a heartbeat or a final state."""
    return AutomationCore(
        name=ZOMBIE_NAME,
        description=(
            f"A flow run tagged {PROJECT_TAG} sent no heartbeat (every {HEARTBEAT_SECONDS} s) "
            f"and reached no final state for {after.total_seconds():.0f} s: its process or "
            "machine died. Mark it Crashed so it is retried and its slot freed. "
            "Installed by deployments/automations.py."
        ),
        trigger=EventTrigger(
            posture=Posture.Proactive,
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", *_FINAL_EVENTS},
            match=_OUR_RUNS,
            match_related=_OUR_TAG,
            for_each={"prefect.resource.id"},
            threshold=1,
            within=after,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=(
                    f"No heartbeat for {after.total_seconds():.0f} s: the flow-run process "
                    "or its machine died (marked by the zombie automation)"
                ),
            )
        ],
    )


def retry_automation(recovery_deployment_id: UUID) -> AutomationCore:
    """Every Crashed run of ours starts a recovery run for it (which ignores non-exports)."""
    return AutomationCore(
        name=RETRY_NAME,
        description=(
            f"A flow run tagged {PROJECT_TAG} crashed: run {RECOVERY_DEPLOYMENT} for it. "
            "A crashed export runs again once; a crashed retry is failed and its teacher "
            "told. Installed by deployments/automations.py."
        ),
        trigger=EventTrigger(
            posture=Posture.Reactive,
            expect={"prefect.flow-run.Crashed"},
            match=_OUR_RUNS,
            match_related=_OUR_TAG,
            threshold=1,
            within=timedelta(0),
        ),
        actions=[
            RunDeployment(
                source="selected",
                deployment_id=recovery_deployment_id,
                # The triggering event's resource: "prefect.flow-run.<id>".
                parameters={"crashed_run": "{{ event.resource.id }}"},
            )
        ],
    )


def upsert(client: SyncPrefectClient, automation: AutomationCore) -> UUID:
    """Create the automation, or update the one of that name (and drop duplicates)."""
    found = client.read_automations_by_name(automation.name)
    if not found:
        return client.create_automation(automation)
    keep, *extra = sorted(found, key=lambda a: str(a.id))
    client.update_automation(keep.id, automation)
    for duplicate in extra:
        client.delete_automation(duplicate.id)
    return keep.id


def install(zombie_after: timedelta = ZOMBIE_AFTER) -> dict[str, UUID]:
    """Install both automations on the server of PREFECT_API_URL; the recovery deployment
    must exist (deploy or serve first). Returns their ids by name."""
    with get_client(sync_client=True) as client:
        flow_name, _, deployment_name = RECOVERY_DEPLOYMENT.partition("/")
        recovery = client.read_deployment_by_name(f"{flow_name}/{deployment_name}")
        return {
            ZOMBIE_NAME: upsert(client, zombie_automation(zombie_after)),
            RETRY_NAME: upsert(client, retry_automation(recovery.id)),
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.automations",
        description="Install (or update) the zombie-run and crash-retry automations.",
    )
    parser.add_argument(
        "--zombie-after",
        type=float,
        default=ZOMBIE_AFTER.total_seconds(),
        help="seconds without a heartbeat before a run is marked Crashed",
    )
    args = parser.parse_args(argv)
    if args.zombie_after <= HEARTBEAT_SECONDS:
        parser.error(f"--zombie-after must exceed the heartbeat ({HEARTBEAT_SECONDS} s)")
    for name, automation_id in install(timedelta(seconds=args.zombie_after)).items():
        print(f"automation {name!r}: {automation_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
