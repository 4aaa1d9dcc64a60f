"""Single-machine mode: ``make serve`` (``python -m deployments.serve``).

Serves every deployment of prefect.yaml, with its schedules, tags, parameters and
concurrency limit, from this one process: no work pool, no worker. prefect.yaml stays the
only list of deployments; this reads it rather than repeating it.

It needs a Prefect server that outlives it (PREFECT_API_URL), or the LMS and the
schedules have nothing to talk to. Its flow runs send heartbeats every
``PREFECT_FLOWS_HEARTBEAT_FREQUENCY`` seconds (default: the project's 30), and it installs
the project's automations (deployments/automations.py: zombie runs, crash retry) once the
deployments are registered. Served and `prefect deploy`ed deployments share names:
run one mode against a server, not both.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, cast

import yaml
from prefect import Flow, serve
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.flows import load_flow_from_entrypoint
from prefect.schedules import Cron
from prefect.settings import get_current_settings
from pydantic import BaseModel, ConfigDict, Field

from deployments import automations
from deployments.steps import default_checkout

PREFECT_YAML = default_checkout() / "prefect.yaml"


class _Spec(BaseModel):
    # prefect.yaml has fields serving has no use for (work_pool, pull): ignore them.
    model_config = ConfigDict(extra="ignore")


class ScheduleSpec(_Spec):
    cron: str
    timezone: str | None = None


class ConcurrencySpec(_Spec):
    limit: int
    collision_strategy: ConcurrencyLimitStrategy = ConcurrencyLimitStrategy.ENQUEUE


class DeploymentSpec(_Spec):
    """One entry of prefect.yaml's ``deployments:`` (the fields both modes use)."""

    name: str
    entrypoint: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[ScheduleSpec] = Field(default_factory=list)
    concurrency_limit: int | ConcurrencySpec | None = None

    def concurrency(self) -> ConcurrencyLimitConfig | None:
        limit = self.concurrency_limit
        if limit is None:
            return None
        if isinstance(limit, int):
            return ConcurrencyLimitConfig(limit=limit)
        return ConcurrencyLimitConfig(
            limit=limit.limit, collision_strategy=limit.collision_strategy
        )


def read_specs(path: Path = PREFECT_YAML) -> list[DeploymentSpec]:
    document = yaml.safe_load(path.read_text())
    return [DeploymentSpec.model_validate(entry) for entry in document.get("deployments") or []]


def to_runner_deployment(spec: DeploymentSpec, checkout: Path) -> RunnerDeployment:
    path, _, function = spec.entrypoint.partition(":")
    flow: Flow[..., Any] = load_flow_from_entrypoint(f"{checkout / path}:{function}")
    deployment = flow.to_deployment(
        name=spec.name,
        description=spec.description,
        tags=spec.tags,
        parameters=spec.parameters,
        schedules=[Cron(s.cron, timezone=s.timezone) for s in spec.schedules],
        concurrency_limit=spec.concurrency(),
    )
    return cast(RunnerDeployment, deployment)  # called from sync code: never a coroutine


def build_deployments(
    path: Path = PREFECT_YAML, checkout: Path | None = None
) -> list[RunnerDeployment]:
    root = checkout or path.parent
    return [to_runner_deployment(spec, root) for spec in read_specs(path)]


def heartbeat_seconds() -> int:
    """The heartbeat of served runs: Prefect's setting when given, else the project's."""
    configured = get_current_settings().flows.heartbeat_frequency
    if "PREFECT_FLOWS_HEARTBEAT_FREQUENCY" in os.environ and configured is not None:
        return configured
    return automations.HEARTBEAT_SECONDS


def register(deployments: list[RunnerDeployment]) -> None:
    """Register the deployments (serve registers them again, in place) so the automations,
    which name the recovery deployment by id, can be installed before serving starts."""
    for deployment in deployments:
        deployment.apply()
    automations.install()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deployments.serve",
        description="Serve every deployment of prefect.yaml (and its schedules) from one process.",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="most flow runs this process runs at once"
    )
    parser.add_argument("--prefect-file", type=Path, default=PREFECT_YAML)
    args = parser.parse_args(argv)
    if not get_current_settings().api.url:  # from the environment or the Prefect profile
        print(
            "PREFECT_API_URL is not set: serving against a temporary API that the LMS cannot "
            "reach and that forgets everything on exit. Start `prefect server start` and set "
            "PREFECT_API_URL=http://127.0.0.1:4200/api for real use.",
            file=sys.stderr,
        )
    # Flow runs start in this directory: entrypoints and the .env file are relative to it.
    os.chdir(args.prefect_file.resolve().parent)
    deployments = build_deployments(args.prefect_file.resolve())
    register(deployments)
    serve(*deployments, limit=args.limit, heartbeat_seconds=heartbeat_seconds())
    return 0


if __name__ == "__main__":
    sys.exit(main())
