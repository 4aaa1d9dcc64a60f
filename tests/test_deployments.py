"""prefect.yaml holds every flow of CONTRACT 3; `make serve` builds the same deployments
from it; the pull step finds the checkout. (Deploying it to a real server: test_e2e_*.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployments import automations, steps
from deployments.serve import PREFECT_YAML, build_deployments, read_specs

#: CONTRACT section 3: entrypoint -> schedule (None: run on demand).
CONTRACT_FLOWS = {
    "flows/export_course.py:export_course": None,
    "flows/export_access_data.py:export_access_data": None,
    "flows/export_lti_settings.py:export_lti_settings": None,
    "flows/import_project.py:import_project": None,
    "flows/retention.py:purge_expired_exports": "hourly",
    "flows/retention.py:purge_access_logs": "daily",
}
#: Deployments the project adds to the contract's: entrypoint -> cron.
ADDED_FLOWS = {
    "flows/recovery.py:recover_crashed_exports": "*/15 * * * *",
    "flows/access_copy.py:refresh_access_log_copy": "15 * * * *",
}


def test_every_contract_flow_is_a_deployment_on_the_pool() -> None:
    document = yaml.safe_load(PREFECT_YAML.read_text())
    entries = document["deployments"]
    assert {e["entrypoint"] for e in entries} == set(CONTRACT_FLOWS) | set(ADDED_FLOWS)
    assert len({e["name"] for e in entries}) == len(entries)
    for entry in entries:
        assert entry["work_pool"]["name"] == "course-exports", entry["name"]
        env = entry["work_pool"]["job_variables"]["env"]  # every run sends heartbeats
        assert env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(automations.HEARTBEAT_SECONDS)
        # The engine itself, not Prefect's workspace supervisor first (README, Benchmarks).
        assert entry["work_pool"]["job_variables"]["command"] == "python -m prefect.engine"
        assert entry.get("description"), entry["name"]
        assert "course-exports" in entry["tags"], entry["name"]
        path = PREFECT_YAML.parent / entry["entrypoint"].split(":")[0]
        assert path.is_file(), path
    assert document["pull"] == [{"deployments.steps.enter_checkout": {}}]


def test_schedules_and_limits() -> None:
    specs = {s.entrypoint: s for s in read_specs()}
    for entrypoint, every in CONTRACT_FLOWS.items():
        schedules = specs[entrypoint].schedules
        if every is None:
            assert schedules == []
            continue
        [schedule] = schedules
        minute, hour, *rest = schedule.cron.split()
        assert rest == ["*", "*", "*"] and schedule.timezone == "UTC"
        assert minute.isdigit()
        assert (hour == "*") == (every == "hourly"), schedule.cron
    for entrypoint, cron in ADDED_FLOWS.items():
        assert [s.cron for s in specs[entrypoint].schedules] == [cron]
    course = specs["flows/export_course.py:export_course"].concurrency()
    assert course is not None and course.limit >= 1
    copy = specs["flows/access_copy.py:refresh_access_log_copy"].concurrency()
    assert copy is not None and copy.limit == 1


def test_serve_builds_the_same_deployments() -> None:
    specs = read_specs()
    built = build_deployments()
    assert [d.name for d in built] == [s.name for s in specs]
    for spec, deployment in zip(specs, built, strict=True):
        assert deployment.entrypoint == spec.entrypoint
        assert deployment.tags == spec.tags
        assert deployment.parameters == spec.parameters
        assert [s.schedule.cron for s in deployment.schedules] == [  # type: ignore[union-attr]
            s.cron for s in spec.schedules
        ]
        expected = spec.concurrency()
        assert deployment.concurrency_limit == (expected.limit if expected else None)
        # every default named in prefect.yaml is a parameter of the flow
        assert set(spec.parameters) <= set(deployment._parameter_openapi_schema.properties)


def test_pull_step_enters_the_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(steps.HOME_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    root = PREFECT_YAML.parent
    assert steps.enter_checkout() == {"directory": str(root)}
    assert Path.cwd() == root
    other = tmp_path / "checkout"
    (other / "flows").mkdir(parents=True)
    monkeypatch.setenv(steps.HOME_VARIABLE, str(other))
    assert steps.enter_checkout() == {"directory": str(other)}
    monkeypatch.setenv(steps.HOME_VARIABLE, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="COURSE_EXPORT_HOME"):
        steps.enter_checkout()
