"""Benchmark: what Prefect costs one access-data export (issue 10, "Orchestration").

    .venv/bin/python benchmarks/orchestration.py                        # this checkout
    .venv/bin/python benchmarks/orchestration.py --baseline /tmp/before   # and another, same run

On Prefect's ephemeral API (no server to start, as `make demo` runs), on the tiny sample
lake (an export of a few thousand rows, so the export's own work is small): one warm-up
run, then ``--runs`` exports of the same course, each a new request. Per run it counts
task runs and artifacts (from the API), and the HTTP requests the flow's process sent to
the API while the flow ran; it times the flow end to end and, in the same process, the
export's own work (the plain plan and write functions the tasks wrap, no Prefect).
Orchestration = flow wall time - own work. Medians are printed; compare trees by their
ratio within one run of this script on the same machine, not by seconds across runs.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import functools
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import timed_flow

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose flows to run")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout (e.g. `git archive` of an older commit)"
    )
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument(
        "--profile", type=int, default=0, help="print cProfile's N costliest calls of the runs"
    )
    args = parser.parse_args()
    if args.baseline is not None:
        # Each tree in its own process (its own ephemeral API and imports), one after the
        # other in this one run of the script.
        for tree in (args.baseline, args.tree):
            subprocess.run(
                [sys.executable, __file__, "--tree", str(tree), "--runs", str(args.runs)],
                check=True,
            )
        return
    measure(args.tree.resolve(), args.runs, args.profile)


def measure(tree: Path, runs: int, profile: int = 0) -> None:
    sys.path[:0] = [str(tree), str(ROOT)]
    work = Path(tempfile.mkdtemp(prefix="bench-orchestration-"))
    os.environ.update(
        {
            "PREFECT_HOME": str(work / "prefect"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "600",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "COURSE_EXPORT_LAKE_URL": str(work / "lake"),
            "COURSE_EXPORT_EXPORTS_URL": str(work / "exports"),
            "COURSE_EXPORT_OUTBOX": str(work / "outbox"),
            "COURSE_EXPORT_SIGNING_KEY": "bench-signing-key-" + "x" * 32,
        }
    )
    os.environ.pop("PREFECT_API_URL", None)
    os.chdir(work)  # no stray .env

    import httpx

    requests: collections.Counter[str] = collections.Counter()
    request_seconds: dict[str, float] = collections.defaultdict(float)
    counting = {"on": False}
    for cls in (httpx.Client, httpx.AsyncClient):
        original = cls.send

        def send(self: Any, request: httpx.Request, *a: Any, __o: Any = original, **k: Any) -> Any:
            if not counting["on"]:
                return __o(self, request, *a, **k)
            route = f"{request.method} {_route(request.url.path.split('/api/', 1)[-1])}"
            requests[route] += 1
            started = time.perf_counter()
            try:
                return __o(self, request, *a, **k)
            finally:
                request_seconds[route] += time.perf_counter() - started

        cls.send = send  # type: ignore[method-assign]

    from prefect import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterId,
    )

    from course_exports import registry
    from course_exports.export_records import ExportKind
    from course_exports.lake import read_course
    from course_exports.settings import load_settings
    from course_exports.storage import open_location
    from flows.export_access_data import export_access_data
    from sample_lake import generate_lake, tiny_lake_spec
    from tasks import access_log as access_tasks

    summary = generate_lake(
        open_location(str(work / "lake")), tiny_lake_spec(), now=datetime.now(UTC)
    )
    course = summary.course_ids[0]
    teacher = summary.teachers[course][0]
    settings = load_settings()

    def own_work(i: int) -> float:
        """The plain functions the tasks wrap: what the export costs without Prefect."""
        started = time.perf_counter()
        lake_course = read_course(settings.lake(), course)
        if hasattr(access_tasks, "access_window"):  # 0.16.0: the write step plans
            window = access_tasks.access_window(settings, None, None)
            write: Any = functools.partial(access_tasks.write_access_file, timezone=None)
            written_from: Any = window
        else:  # an older tree, with a plan step of its own
            written_from = access_tasks.plan_access_export(  # type: ignore[call-arg]
                settings, lake_course, since=None, until=None, assignment_ids=None, timezone=None
            )
            write = access_tasks.write_access_file
        record = registry.begin_export(
            settings.exports(),
            kind=ExportKind.ACCESS_DATA,
            course_id=course,
            course_name=lake_course.name,
            requested_by=teacher,
            request_id=f"plain-{i}",
            parameters={},
            file_name="plain.csv",
            ttl=timedelta(days=7),
        )
        written = write(
            settings,
            record,
            lake_course,
            written_from,
            assignment_ids=None,
            user_ids=None,
            excel=False,
        )
        registry.publish(
            settings.exports(),
            record,
            size_bytes=written.size_bytes,
            sha256=written.sha256,
            counts=written.counts,
        )
        return time.perf_counter() - started

    def one_flow(i: int) -> tuple[float, float, Any]:
        """Seconds until the call returned, and until the run was Completed
        (``timed_flow``); the API requests are counted during the call only, not the
        benchmark's own reads of the run afterwards."""

        def call() -> Any:
            counting["on"] = True
            try:
                return export_access_data(
                    course_id=course,
                    requested_by=teacher,
                    request_id=f"bench-{i}",
                    return_state=True,
                )
            finally:
                counting["on"] = False

        timed = timed_flow(call)
        state = timed["state"]
        assert state.is_completed(), state
        return timed["call_seconds"], timed["seconds"], state.state_details.flow_run_id

    one_flow(-1)  # warm-up: the ephemeral API starts, modules load, caches fill
    own_work(-1)
    request_seconds.clear()
    walls, readies, owns, task_counts, artifact_counts, request_counts = [], [], [], [], [], []
    per_route: collections.Counter[str] = collections.Counter()
    profiler = cProfile.Profile() if profile else None
    for i in range(runs):
        owns.append(own_work(i))
        requests.clear()
        if profiler is not None:
            profiler.enable()
        wall, ready, run_id = one_flow(i)
        if profiler is not None:
            profiler.disable()
        walls.append(wall)
        readies.append(ready)
        request_counts.append(sum(requests.values()))
        per_route.update(requests)
        with get_client(sync_client=True) as client:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
            )
            artifacts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
            )
        task_counts.append(len(task_runs))
        artifact_counts.append(len(artifacts))
        names = sorted(r.name.rsplit("-", 1)[0] for r in task_runs)

    wall, own = statistics.median(walls), statistics.median(owns)
    ready = statistics.median(readies)
    print(f"tree: {tree}  ({runs} runs, medians)")
    print(
        "| task runs | artifacts | API requests | call s | to Completed s | own work s "
        "| orchestration s (call) | orchestration s (to Completed) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {statistics.median(task_counts):.0f} | {statistics.median(artifact_counts):.0f} "
        f"| {statistics.median(request_counts):.0f} | {wall:.3f} | {ready:.3f} | {own:.3f} "
        f"| {wall - own:.3f} | {ready - own:.3f} |"
    )
    print(f"task runs: {', '.join(names)}")
    print("requests per run by route (ms: the request's time in this process, the")
    print("ephemeral API answering in it; async ones overlap the flow's own work):")
    for route, count in per_route.most_common():
        print(f"  {count / runs:5.1f}  {1000 * request_seconds[route] / runs:6.1f} ms  {route}")
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(profile)


def _route(path: str) -> str:
    parts = [("{id}" if len(p) == 36 and p.count("-") == 4 else p) for p in path.split("/")]
    return "/".join(parts)


if __name__ == "__main__":
    main()
