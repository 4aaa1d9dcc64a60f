"""Benchmark: the end-of-term storm (issue 11). Not run by the tests.

    .venv/bin/python benchmarks/storm.py                     # PostgreSQL and SQLite, 1 then 2 workers
    .venv/bin/python benchmarks/storm.py --databases sqlite --workers 1 --scale 0.2

300 requests submitted at once through the LMS client (deployments/lms_client.py): 200
access-data exports of courses of every size, 80 small course zips, 20 LTI CSVs, with 30
duplicate pairs among them (the same export asked for twice under two request ids). They
run against a real Prefect server whose database is PostgreSQL (a throwaway cluster
started with initdb/pg_ctl on loopback from Debian's ``postgresql`` package: ``apt-get
install postgresql`` if ``/usr/lib/postgresql/*/bin`` is missing) or SQLite, handled by one
and then by two process workers (each capped at ``--per-worker`` runs).

Printed per case: exports per minute, request->ready p50/p95/max, orchestration overhead
per export (the run's time in Running minus the time of its own work step) p50/p95, peak
memory of the server, the database and each worker (with its flow runs; PSS, so shared
pages count once), and the ledger:
every request has exactly one outcome, duplicates share one export, no orphan file or
manifest, no lease or Prefect concurrency slot left behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from course_exports.access_log.clustered import COPY_DIR  # noqa: E402
from course_exports.storage import open_location  # noqa: E402
from deployments.lms_client import LmsClient, LmsClientError  # noqa: E402
from deployments.local_stack import (  # noqa: E402
    POSTGRES_HINT,
    StackError,
    run_postgres,
    run_server,
    run_worker,
    set_up,
)
from sample_lake import LakeSpec, LakeSummary, generate_lake  # noqa: E402

DEPLOYMENTS = {
    "access-data": "export-access-data/export-access-data",
    "course": "export-course/export-course",
    "lti-settings": "export-lti-settings/export-lti-settings",
}
#: The step of each flow that is the export's own work (everything else is orchestration).
WORK_STEPS = ("write-course-zip", "write-access-csv", "write-lti-csv")
MIX = {"access-data": 200, "course": 80, "lti-settings": 20}
DUPLICATES = {"access-data": 20, "course": 8, "lti-settings": 2}
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@dataclass(frozen=True)
class Request:
    kind: str
    parameters: dict[str, Any]
    request_id: str
    twin_of: str | None = None  # the request id this one duplicates


@dataclass
class Submitted:
    request: Request
    submitted_at: float  # time.time()
    run_id: str = ""


@dataclass
class Peaks:
    """Peak memory of process trees, sampled every half second: the sum of each process's
    proportional set size (PSS), so memory the processes share (PostgreSQL's shared
    buffers, a worker's forked flow runs) is counted once, not once per process."""

    roots: dict[str, int]  # label -> pid (the tree under it is summed)
    peak_mb: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def _sample(self) -> None:
        while not self._stop.wait(0.5):
            for label, pid in self.roots.items():
                try:
                    root = psutil.Process(pid)
                    tree = [root, *root.children(recursive=True)]
                    rss = sum(p.memory_full_info().pss for p in tree if p.is_running())
                except psutil.Error:
                    continue
                self.peak_mb[label] = max(self.peak_mb.get(label, 0.0), rss / 1e6)

    @contextmanager
    def watching(self) -> Iterator[Peaks]:
        thread = threading.Thread(target=self._sample, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join()


def lake_spec(scale: float) -> LakeSpec:
    return LakeSpec(
        seed=11,
        courses=max(4, round(40 * scale)),
        students=16,
        teachers=1,
        assignments=3,
        events=max(20_000, round(600_000 * scale)),
        days=60,
        files_per_workspace=3,
        file_bytes=3_000,
    )


def requests(summary: LakeSummary, scale: float, now: datetime) -> list[Request]:
    """The storm: MIX scaled, every kind spread over every course (largest first, so the
    access exports cover courses of every size), and DUPLICATES twins of earlier ones."""
    courses = summary.course_ids
    out: list[Request] = []
    for kind, count in MIX.items():
        unique = max(1, round((count - DUPLICATES[kind]) * scale))
        for i in range(unique):
            course = courses[i % len(courses)]
            parameters: dict[str, Any] = {
                "course_id": course,
                "requested_by": summary.teachers[course][0],
            }
            if kind == "access-data":  # another window for each round over the courses
                since = now - timedelta(days=1 + i // len(courses))
                parameters["since"] = since.replace(microsecond=0).isoformat()
            if kind == "course":
                parameters["notify"] = False
                if i >= len(courses):  # a second zip of a course: one assignment only
                    parameters["assignment_ids"] = [first_assignment(summary, course)]
            out.append(Request(kind, parameters, f"storm-{kind}-{i}"))
        firsts = [r for r in out if r.kind == kind]
        for twin in firsts[: max(1, round(DUPLICATES[kind] * scale))]:
            out.append(Request(kind, twin.parameters, twin.request_id + "-twin", twin.request_id))
    return out


_ASSIGNMENTS: dict[int, int] = {}


def first_assignment(summary: LakeSummary, course: int) -> int:
    del summary
    return _ASSIGNMENTS[course]


def read_first_assignments(lake: Path, courses: list[int]) -> None:
    for course in courses:
        document = json.loads((lake / "courses" / str(course) / "course.json").read_text())
        _ASSIGNMENTS[course] = int(document["units"][0]["assignments"][0]["id"])


def submit_all(lms: LmsClient, storm: list[Request], threads: int = 32) -> list[Submitted]:
    """Every request at once (32 LMS threads by default), as a storm of teachers would."""

    def one(request: Request) -> Submitted:
        sent = Submitted(request, time.time())
        ref = lms.trigger(
            DEPLOYMENTS[request.kind], request.parameters, request_id=request.request_id
        )
        sent.run_id = ref.id
        return sent

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(one, storm))


def post_filter(url: str, body: dict[str, Any]) -> Any:
    """POST a filter query; a 5xx or a dropped connection is tried again (the server
    under a storm can answer one poll with a 500, as an LMS poller would meet it)."""
    for attempt in range(5):
        try:
            response = httpx.post(url, json=body, timeout=60)
            if response.status_code < 500:
                response.raise_for_status()
                return response.json()
            problem = f"{response.status_code}: {response.text[:300]}"
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
        print(f"  {url.rsplit('/api', 1)[-1]} failed ({problem}); again", file=sys.stderr)
        time.sleep(2 * (attempt + 1))
    raise RuntimeError(f"{url} kept failing: {problem}")


def runs_by_id(api_url: str, ids: list[str]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), 200):
        body = {"flow_runs": {"id": {"any_": ids[start : start + 200]}}, "limit": 200}
        found.update({run["id"]: run for run in post_filter(f"{api_url}/flow_runs/filter", body)})
    return found


def wait_all(api_url: str, sent: list[Submitted], timeout_s: float) -> None:
    """One poll of all runs every 2 s (an LMS would rather take the webhook than poll 300
    runs one by one); crashed runs are left to the LMS client's follow-up below."""
    deadline = time.monotonic() + timeout_s
    ids = [s.run_id for s in sent]
    while time.monotonic() < deadline:
        runs = runs_by_id(api_url, ids)
        if all(run["state_type"] in FINAL for run in runs.values()):
            return
        time.sleep(2)
    raise TimeoutError(f"the storm was not over after {timeout_s:.0f} s")


def task_work_s(api_url: str, run_ids: list[str]) -> dict[str, float]:
    """Seconds each run spent in its work step."""
    work: dict[str, float] = {}
    for start in range(0, len(run_ids), 10):  # a run has a dozen task runs at most
        body = {"flow_runs": {"id": {"any_": run_ids[start : start + 10]}}, "limit": 200}
        for task in post_filter(f"{api_url}/task_runs/filter", body):
            if task["name"].startswith(WORK_STEPS):
                run = str(task["flow_run_id"])
                work[run] = work.get(run, 0.0) + float(task["total_run_time"])
    return work


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def ledger(
    api_url: str, lms: LmsClient, sent: list[Submitted], exports: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Outcomes through the LMS client, and what is left on disk and on the server."""
    outcomes: dict[str, dict[str, Any]] = {}
    for s in sent:
        try:
            final = lms.wait(s.run_id, timeout_s=600, poll_s=2)
            outcomes[s.request.request_id] = {"run": final.run_id, **lms.result(final.run_id)}
        except LmsClientError as exc:
            outcomes[s.request.request_id] = {"status": "failed", "error": str(exc)[:200]}
    twins = [s.request for s in sent if s.request.twin_of]
    shared = sum(
        1
        for t in twins
        if outcomes[t.request_id].get("export_id")
        and outcomes[t.request_id].get("export_id") == outcomes[t.twin_of or ""].get("export_id")
    )
    ready = failed = orphans = leases = 0
    for path in exports.rglob("*"):
        if path.name.startswith(".lease-") and path.name.endswith(".json"):
            leases += 1  # a take-over's mark (.lease-*.taken-*) is not a lease
        if not path.is_dir() or not (path / "manifest.json").exists():
            continue
        record = json.loads((path / "manifest.json").read_text())
        others = sorted(p.name for p in path.iterdir() if p.name != "manifest.json")
        if record["status"] == "ready" and others == [record["file_name"]]:
            ready += 1
        elif record["status"] == "failed" and not others:
            failed += 1
        else:
            orphans += 1
    for path in exports.glob("*/*"):  # a folder with files but no manifest
        if path.parent.name == COPY_DIR:
            continue  # the access log's copy (the hourly access-copy run may build it)
        if path.is_dir() and not (path / "manifest.json").exists():
            orphans += any(p.name != "joined.json" for p in path.iterdir())
    # Deployment limits are global concurrency limits too ("deployment:<id>").
    limits = httpx.post(f"{api_url}/v2/concurrency_limits/filter", json={}, timeout=60).json()
    held = sum(int(limit.get("active_slots") or 0) for limit in limits)
    summary = {
        "requests": len(sent),
        "outcomes": len(outcomes),
        "ready": sum(1 for o in outcomes.values() if o.get("status") == "ready"),
        "failed": sum(1 for o in outcomes.values() if o.get("status") != "ready"),
        "twins sharing": f"{shared}/{len(twins)}",
        "exports ready": ready,
        "tombstones": failed,
        "orphans": orphans,
        "leases left": leases,
        "slots held": held,
    }
    return summary, outcomes


def storm_case(
    database: str,
    workers: int,
    args: argparse.Namespace,
    root: Path,
    summary: LakeSummary,
    storm: list[Request],
) -> dict[str, Any]:
    case = root / f"{database}-{workers}"
    exports = case / "exports"
    env = {
        "COURSE_EXPORT_LAKE_URL": str(root / "lake"),
        "COURSE_EXPORT_EXPORTS_URL": str(exports),
        "COURSE_EXPORT_OUTBOX": str(case / "outbox"),
        "COURSE_EXPORT_SMTP_URL": "",
        "COURSE_EXPORT_SIGNING_KEY": "storm-signing-key-" + "x" * 32,
        "COURSE_EXPORT_WEBHOOK_URL": "",
    }
    with ExitStack() as stack:
        server_env: dict[str, str] = {}
        roots: dict[str, int] = {}
        if database == "postgres":
            postgres = stack.enter_context(run_postgres())
            server_env["PREFECT_API_DATABASE_CONNECTION_URL"] = postgres.url
            roots["database"] = postgres.pid
        server = stack.enter_context(run_server(case / "server", extra_env=server_env))
        assert server.process is not None
        roots["server"] = server.process.pid
        set_up(server.api_url, case / "cli")
        for n in range(workers):
            worker = stack.enter_context(
                run_worker(
                    server.api_url, f"storm-{n}", case / f"worker-{n}", env, limit=args.per_worker
                )
            )
            roots[f"worker {n}"] = worker.process.pid
        lms = stack.enter_context(LmsClient(server.api_url, retries=args.lms_retries))
        peaks = stack.enter_context(Peaks(roots).watching())
        print(f"{database}, {workers} worker(s): {len(storm)} requests ...", flush=True)
        sent = submit_all(lms, storm, args.lms_threads)
        wait_all(server.api_url, sent, args.timeout)
        ended = time.time()
        counts, outcomes = ledger(server.api_url, lms, sent, exports)
        final_runs = runs_by_id(
            server.api_url, [str(o["run"]) for o in outcomes.values() if "run" in o]
        )
        latencies = []
        for s in sent:
            run = final_runs.get(str(outcomes[s.request.request_id].get("run")))
            if run and run.get("end_time"):
                end = datetime.fromisoformat(run["end_time"].replace("Z", "+00:00")).timestamp()
                latencies.append(end - s.submitted_at)
        writers = {o["run"]: o for o in outcomes.values() if "run" in o}
        work = task_work_s(server.api_url, list(writers))
        overhead = [
            float(final_runs[r]["total_run_time"]) - work[r]
            for r in writers
            if r in work and r in final_runs
        ]
        first = min(s.submitted_at for s in sent)
        distinct = counts["exports ready"]
    return {
        "case": f"{database}, {workers} worker(s)",
        "exports/min": distinct / max((ended - first) / 60, 1e-9),
        "ready p50": quantile(latencies, 0.5),
        "ready p95": quantile(latencies, 0.95),
        "ready max": max(latencies, default=float("nan")),
        "overhead p50": quantile(overhead, 0.5),
        "overhead p95": quantile(overhead, 0.95),
        "peaks": dict(peaks.peak_mb),
        "ledger": counts,
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print()
    head = ("case", "exports/min", "ready p50 s", "p95 s", "max s", "overhead p50 s", "p95 s")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        print(
            f"| {row['case']} | {row['exports/min']:.1f} | {row['ready p50']:.1f} | "
            f"{row['ready p95']:.1f} | {row['ready max']:.1f} | {row['overhead p50']:.2f} | "
            f"{row['overhead p95']:.2f} |"
        )
    print()
    print("| case | peak memory MB (PSS of the process and its children) |")
    print("|---|---|")
    for row in rows:
        peaks = ", ".join(f"{k} {v:,.0f}" for k, v in sorted(row["peaks"].items()))
        print(f"| {row['case']} | {peaks} |")
    print()
    print("| case | " + " | ".join(rows[0]["ledger"]) + " |")
    print("|" + "---|" * (len(rows[0]["ledger"]) + 1))
    for row in rows:
        print(f"| {row['case']} | " + " | ".join(str(v) for v in row["ledger"].values()) + " |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--databases", default="postgres,sqlite")
    parser.add_argument("--workers", default="1,2", help="worker counts, in order")
    parser.add_argument("--per-worker", type=int, default=4, help="runs one worker takes at once")
    parser.add_argument("--scale", type=float, default=1.0, help="fraction of the 300 requests")
    parser.add_argument("--timeout", type=float, default=7200, help="seconds per storm")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--lms-threads", type=int, default=32, help="LMS threads submitting the requests"
    )
    parser.add_argument(
        "--lms-retries",
        type=int,
        default=5,
        help="the LMS client's retries of a 5xx (waits double from 0.25-0.5 s)",
    )
    args = parser.parse_args()
    databases = args.databases.split(",")
    if "postgres" in databases:
        try:
            from deployments.local_stack import postgres_bin

            postgres_bin()
        except StackError:
            print(f"PostgreSQL missing: {POSTGRES_HINT}", file=sys.stderr)
            return 2

    root = Path(tempfile.mkdtemp(prefix="storm-"))
    try:
        spec = lake_spec(args.scale)
        now = datetime.now(UTC)
        summary = generate_lake(open_location(str(root / "lake")), spec, now=now)
        read_first_assignments(root / "lake", summary.course_ids)
        storm = requests(summary, args.scale, now)
        sizes = sorted(summary.events_per_course.values())
        print(
            f"lake: {len(summary.course_ids)} courses, {summary.events:,} events "
            f"({sizes[0]:,} to {sizes[-1]:,} a course), {summary.workspace_files:,} files; "
            f"{len(storm)} requests ({sum(1 for r in storm if r.twin_of)} twins)"
        )
        rows = []
        for database in databases:
            for workers in args.workers.split(","):
                rows.append(storm_case(database, int(workers), args, root, summary, storm))
                print_table(rows[-1:])  # each case as it ends: a storm is long
        if len(rows) > 1:
            print_table(rows)
    except BaseException:
        for log in sorted(root.rglob("*.log")):  # the server's and workers' own story
            lines = log.read_text(errors="replace").splitlines()
            print(f"--- last lines of {log}", *lines[-40:], sep="\n", file=sys.stderr)
        raise
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
