"""Scale-out proof: two process workers on the pool share a batch of course exports, each
request runs exactly once, and both limits hold.

- the deployment's ``concurrency_limit`` (prefect.yaml): never more export-course runs
  Running at once, checked from the runs' start/end times in the API;
- the per-course lease in the export registry: two exports of the same course never pack
  at the same time (checked from their task runs' times), the second gave its worker back
  while it waited, and nothing is left per course on the server or in the registry.

Which worker ran a flow run is the ``prefect.worker.name`` label Prefect's worker puts on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
from e2e_kit import Site, make_site, max_overlap, parse_time, state_names, task_runs

from deployments.lms_client import LmsClient
from deployments.local_stack import run_worker
from deployments.serve import read_specs
from sample_lake import LakeSpec

pytestmark = [pytest.mark.e2e]

COURSE = "export-course/export-course"
WORKERS = ("scale-a", "scale-b")
#: Each worker's own cap (its "machine"): 2 x 3 = 6 runs offered at once, more than the
#: deployment limit, so the server's limit is what stops the rest.
PER_WORKER = 3
SPEC = LakeSpec(
    seed=11,
    courses=6,
    students=5,
    teachers=1,
    assignments=2,
    events=300,
    days=10,
    files_per_workspace=2,
    file_bytes=2_000,
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Site:
    # No download service or webhook receiver: links are not followed here, and an
    # unreachable webhook is only logged.
    return make_site(
        tmp_path_factory.mktemp("e2e-scale"), SPEC, "http://127.0.0.1:9", "http://127.0.0.1:9/hook"
    )


@pytest.fixture(scope="module")
def lms(prefect_deployments: str, site: Site) -> Iterator[LmsClient]:
    env = {**site.env(), "COURSE_EXPORT_WEBHOOK_URL": ""}
    with ExitStack() as stack:
        for name in WORKERS:
            stack.enter_context(
                run_worker(prefect_deployments, name, site.root / name, env, limit=PER_WORKER)
            )
        yield stack.enter_context(LmsClient(prefect_deployments))


@pytest.fixture(scope="module")
def batch(lms: LmsClient, site: Site) -> list[dict[str, Any]]:
    """Six courses and a second, different export of the first one (one assignment only),
    triggered at once, then waited."""
    courses = site.summary.course_ids
    assert len(courses) == 6
    course_json = json.loads((site.lake / "courses" / str(courses[0]) / "course.json").read_text())
    one = [course_json["units"][0]["assignments"][0]["id"]]
    requests: list[tuple[int, str, dict[str, Any]]] = [
        (course, f"scale-{course}", {}) for course in courses
    ]
    requests.append((courses[0], f"scale-{courses[0]}-again", {"assignment_ids": one}))
    refs = [
        lms.trigger(
            COURSE,
            {
                "course_id": course,
                "requested_by": site.summary.teachers[course][0],
                "notify": False,
                **selection,
            },
            request_id=request_id,
        )
        for course, request_id, selection in requests
    ]
    for ref in refs:
        # Generous: a flow-run process takes long to start on a busy 2-core machine (a
        # run sat in Submitting for 180 s while a benchmark shared the cores).
        lms.wait(ref.id, timeout_s=600, poll_s=0.5)
    return [lms.read_run(ref.id) for ref in refs]


def deployment_limit() -> int:
    [spec] = [s for s in read_specs() if s.name == "export-course"]
    limit = spec.concurrency()
    assert limit is not None
    return limit.limit


def test_every_request_completes_exactly_once(batch: list[dict[str, Any]], site: Site) -> None:
    assert [run["state_type"] for run in batch] == ["COMPLETED"] * 7
    assert len({run["id"] for run in batch}) == 7
    manifests = [json.loads(p.read_text()) for p in site.manifests()]
    assert sorted(m["request_id"] for m in manifests) == sorted(
        run["parameters"]["request_id"] for run in batch
    )
    assert all(m["status"] == "ready" for m in manifests)


def test_both_workers_took_runs(batch: list[dict[str, Any]]) -> None:
    took = {run["labels"].get("prefect.worker.name") for run in batch}
    assert took == set(WORKERS)


def test_deployment_concurrency_limit_held(
    batch: list[dict[str, Any]], prefect_deployments: str
) -> None:
    limit = deployment_limit()
    deployment = httpx.get(
        f"{prefect_deployments}/deployments/name/export-course/export-course", timeout=10
    ).json()
    assert deployment["global_concurrency_limit"]["limit"] == limit  # deployed as written
    running = [(parse_time(r["start_time"]), parse_time(r["end_time"])) for r in batch]
    assert max_overlap(running) <= limit
    # More runs were offered than the limit allows: the server made some wait for a slot.
    waited = [
        r for r in batch if "AwaitingConcurrencySlot" in state_names(prefect_deployments, r["id"])
    ]
    assert waited, "no run waited for a slot: the batch did not test the limit"


def test_one_export_per_course_at_a_time(
    batch: list[dict[str, Any]], prefect_deployments: str, site: Site
) -> None:
    first_course = site.summary.course_ids[0]
    same_course = [r for r in batch if r["parameters"]["course_id"] == first_course]
    assert len(same_course) == 2
    spans = []
    for run in same_course:
        steps = [  # the steps inside the course's slot
            t
            for t in task_runs(prefect_deployments, [run["id"]])
            if t["name"].startswith("write-course-zip")
        ]
        assert len(steps) == 1, [t["name"] for t in steps]
        spans.append(
            (
                min(parse_time(t["start_time"]) for t in steps),
                max(parse_time(t["end_time"]) for t in steps),
            )
        )
    assert max_overlap(spans) == 1
    # Nothing per course on the server (no global concurrency limits), no lease left.
    limits = httpx.post(f"{prefect_deployments}/v2/concurrency_limits/filter", json={}, timeout=10)
    assert [c["name"] for c in limits.json() if c["name"].startswith("course-export-")] == []
    assert list(site.exports.glob("*/.lease-*.json")) == []
