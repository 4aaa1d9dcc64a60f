"""Benchmark: what starting a flow-run process costs a process worker (not run by the tests).

    .venv/bin/python benchmarks/worker_launch.py
    .venv/bin/python benchmarks/worker_launch.py --kind access-data --runs 16 --rounds 3

Prefect 3.9's process worker starts each flow run as a workspace supervisor (a Python
process that imports Prefect and runs the deployment's pull step) which then execs
``python -m prefect.engine`` (which imports Prefect again). prefect.yaml sets the job
variable ``command`` so the worker starts the engine directly and the engine runs the pull
step itself. Without bytecode in the venv (``uv sync`` without ``--compile-bytecode``
where ``PYTHONDONTWRITEBYTECODE`` is set, as in most container images) every one of those
processes compiles Prefect and Polars again. This script measures the launches in one run, alternating them round by
round on one worker: a real Prefect server (SQLite), prefect.yaml deployed, one process
worker capped at ``--limit`` runs, ``--runs`` small exports triggered at once per round
(``command: null`` in a run's job variables gives Prefect's default launch back).

Printed per launch (medians over the rounds): wall time from the first trigger to the
last completion, exports per minute, CPU seconds of the worker's flow-run processes per
run, seconds from trigger to Running (the wait a teacher sees before anything happens)
and the run's own time in Running. Compare the two launches by their ratio in one run.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from course_exports.storage import open_location  # noqa: E402
from deployments.local_stack import run_server, run_worker, set_up  # noqa: E402
from sample_lake import LakeSpec, LakeSummary, generate_lake  # noqa: E402

DEPLOYMENTS = {
    "lti-settings": "export-lti-settings/export-lti-settings",
    "access-data": "export-access-data/export-access-data",
}
SUPERVISOR, UNCOMPILED, ENGINE = (
    "supervisor (Prefect's default)",
    "engine, no bytecode",
    "engine (prefect.yaml)",
)


def launches(empty: Path) -> dict[str, dict[str, Any]]:
    """Job variables of each launch; None overrides prefect.yaml's command with Prefect's
    default. "no bytecode" points the run's Python at an empty bytecode cache
    (``PYTHONPYCACHEPREFIX``) and forbids writing one: a venv synced without
    ``--compile-bytecode`` on a machine with ``PYTHONDONTWRITEBYTECODE`` set."""
    uncompiled = {"PYTHONPYCACHEPREFIX": str(empty), "PYTHONDONTWRITEBYTECODE": "1"}
    return {
        SUPERVISOR: {"command": None},
        UNCOMPILED: {"env": {"PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30", **uncompiled}},
        ENGINE: {},
    }


FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def worker_env(root: Path) -> dict[str, str]:
    return {
        "COURSE_EXPORT_LAKE_URL": str(root / "lake"),
        "COURSE_EXPORT_EXPORTS_URL": str(root / "exports"),
        "COURSE_EXPORT_OUTBOX": str(root / "outbox"),
        "COURSE_EXPORT_SMTP_URL": "",
        "COURSE_EXPORT_SIGNING_KEY": "benchmark-signing-key-" + "x" * 32,
        "COURSE_EXPORT_WEBHOOK_URL": "",
    }


def _post(api: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any]:
    """POST, waiting out SQLite's "database is locked" (503) like the LMS client does."""
    for attempt in range(30):
        response = api.post(path, json=body)
        if response.status_code != 503:
            response.raise_for_status()
            result: dict[str, Any] = response.json()
            return result
        time.sleep(min(0.2 * 2**attempt, 2.0))
    response.raise_for_status()
    raise RuntimeError(f"{path} kept answering 503")


def _seconds(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds()


def run_round(
    api: httpx.Client,
    deployment_id: str,
    summary: LakeSummary,
    job_variables: dict[str, Any],
    runs: int,
    worker: psutil.Process,
) -> dict[str, float]:
    before = worker.cpu_times()
    started = time.monotonic()
    ids = []
    for i in range(runs):
        course = summary.course_ids[i % len(summary.course_ids)]
        parameters = {
            "course_id": course,
            "requested_by": summary.teachers[course][0],
            "request_id": f"launch-{time.time_ns()}-{i}",
        }
        body = {"parameters": parameters, "job_variables": job_variables}
        ids.append(_post(api, f"deployments/{deployment_id}/create_flow_run", body)["id"])
    while True:
        found = [api.get(f"flow_runs/{run_id}").json() for run_id in ids]
        if all(run["state"]["type"] in FINAL for run in found):
            break
        time.sleep(0.3)
    wall = time.monotonic() - started
    after = worker.cpu_times()
    cpu = (after.children_user + after.children_system) - (
        before.children_user + before.children_system
    )
    failed = [run["name"] for run in found if run["state"]["type"] != "COMPLETED"]
    if failed:
        raise RuntimeError(f"runs did not complete: {failed}")
    return {
        "wall": wall,
        "per_min": runs / wall * 60,
        "cpu": cpu / runs,
        "to_running": statistics.median(_seconds(r["start_time"], r["created"]) for r in found),
        "running": statistics.median(float(r["total_run_time"]) for r in found),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kind", choices=sorted(DEPLOYMENTS), default="lti-settings")
    parser.add_argument("--runs", type=int, default=12, help="exports triggered per round")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each launch")
    parser.add_argument("--limit", type=int, default=2, help="runs the worker takes at once")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="worker-launch-"))
    (root / "no-bytecode").mkdir()
    variants = launches(root / "no-bytecode")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in variants}
    try:
        spec = LakeSpec(
            seed=3, courses=8, students=10, assignments=3, events=50_000, days=20,
            files_per_workspace=2, file_bytes=1_000,
        )  # fmt: skip
        summary = generate_lake(open_location(str(root / "lake")), spec, now=datetime.now(UTC))
        with (
            run_server(root / "server") as server,
            httpx.Client(base_url=server.api_url + "/", timeout=30) as api,
        ):
            set_up(server.api_url, root / "cli")
            deployment = api.get(f"deployments/name/{DEPLOYMENTS[args.kind]}").json()
            with run_worker(
                server.api_url, "launch", root / "worker", worker_env(root), limit=args.limit
            ) as worker:
                process = psutil.Process(worker.process.pid)
                for round_ in range(args.rounds):
                    for name, job_variables in variants.items():
                        row = run_round(
                            api, deployment["id"], summary, job_variables, args.runs, process
                        )
                        results[name].append(row)
                        print(f"round {round_ + 1} {name}: {row['wall']:.1f} s", flush=True)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\n{args.kind}: {args.runs} exports per round, worker limit {args.limit}, "
          f"{args.rounds} rounds (medians)")  # fmt: skip
    header = f"{'launch':<32} {'wall s':>7} {'exports/min':>12} {'CPU s/run':>10} {'to Running s':>13} {'Running s':>10}"
    print(header)
    medians = {
        name: {key: statistics.median(row[key] for row in rows) for key in rows[0]}
        for name, rows in results.items()
    }
    for name, m in medians.items():
        print(
            f"{name:<32} {m['wall']:>7.1f} {m['per_min']:>12.1f} {m['cpu']:>10.2f} "
            f"{m['to_running']:>13.2f} {m['running']:>10.2f}"
        )
    for label, base, ours in (
        ("engine / supervisor", medians[SUPERVISOR], medians[ENGINE]),
        ("bytecode / none", medians[UNCOMPILED], medians[ENGINE]),
    ):
        print(
            f"{label:<32} {ours['wall'] / base['wall']:>7.2f} "
            f"{ours['per_min'] / base['per_min']:>12.2f} {ours['cpu'] / base['cpu']:>10.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
