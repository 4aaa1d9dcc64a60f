"""The page's view of Prefect: the course's runs, and starting one exactly as the LMS does
(deployments/lms_client.py: idempotency key of request id and parameters, course tag)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from course_exports.export_records import ExportKind, new_export_id
from deployments.lms_client import ACTIVE_STATES, FlowRunRef, LmsClient

#: The deployment of each export kind (prefect.yaml).
DEPLOYMENTS: dict[ExportKind, str] = {
    ExportKind.COURSE: "export-course/export-course",
    ExportKind.ACCESS_DATA: "export-access-data/export-access-data",
    ExportKind.LTI_SETTINGS: "export-lti-settings/export-lti-settings",
}
ENDED_BADLY = ("FAILED", "CRASHED")
#: Runs that failed before claiming an export are shown this long.
FAILED_RUNS_SHOWN = timedelta(days=1)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    kind: ExportKind
    state_type: str
    state_name: str
    parameters: dict[str, Any]
    #: The export the run will claim (derived from its request id), when it has one.
    export_id: str | None
    created: datetime | None

    @property
    def active(self) -> bool:
        return self.state_type in ACTIVE_STATES


def _time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


class Runs:
    """Reads and starts the course's export runs through the Prefect REST API."""

    def __init__(self, client: LmsClient) -> None:
        self.client = client

    def _kinds(self) -> dict[str, ExportKind]:
        return {str(self.client.deployment(name)["id"]): kind for kind, name in DEPLOYMENTS.items()}

    def of_course(self, course_id: int, now: datetime) -> list[RunInfo]:
        """Active runs started for the course, and those that failed in the last day."""
        kinds = self._kinds()
        found = []
        for run in self.client.course_runs(course_id, (*ACTIVE_STATES, *ENDED_BADLY)):
            kind = kinds.get(str(run.get("deployment_id")))
            if kind is None:
                continue
            state_type = str(run.get("state_type") or "")
            created = _time(run.get("created"))
            if state_type in ENDED_BADLY and (created is None or now - created > FAILED_RUNS_SHOWN):
                continue
            parameters = dict(run.get("parameters") or {})
            request_id = parameters.get("request_id")
            found.append(
                RunInfo(
                    run_id=str(run["id"]),
                    kind=kind,
                    state_type=state_type,
                    state_name=str(run.get("state_name") or state_type.title()),
                    parameters=parameters,
                    export_id=new_export_id(kind, course_id, request_id) if request_id else None,
                    created=created,
                )
            )
        return found

    def start(self, kind: ExportKind, parameters: Mapping[str, Any], request_id: str) -> FlowRunRef:
        return self.client.trigger(DEPLOYMENTS[kind], parameters, request_id=request_id)
