"""Benchmark: one batch of course exports with one process worker, then with two (not run
by the tests).

    .venv/bin/python benchmarks/scale_out.py
    .venv/bin/python benchmarks/scale_out.py --courses 8 --file-bytes 400000 --per-worker 2

Starts a Prefect server, deploys prefect.yaml and triggers the same batch (one export of
every course) through the LMS client, first with one worker, then with two, each worker
capped at ``--per-worker`` runs (a stand-in for what one machine can take). Prints the
wall time from the first trigger to the last completion. The export-course deployment's
``concurrency_limit`` still applies on top.

Both workers run on this machine, so the second one helps only as far as there are idle
cores; the point is what the pool does (runs spread, limits hold), and on separate
machines the same setup scales with their number.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from course_exports.storage import open_location  # noqa: E402
from deployments.lms_client import LmsClient  # noqa: E402
from deployments.local_stack import create_pool, deploy_all, run_server, run_worker  # noqa: E402
from sample_lake import LakeSpec, LakeSummary, generate_lake  # noqa: E402

DEPLOYMENT = "export-course/export-course"


def worker_env(root: Path, exports: Path) -> dict[str, str]:
    return {
        "COURSE_EXPORT_LAKE_URL": str(root / "lake"),
        "COURSE_EXPORT_EXPORTS_URL": str(exports),
        "COURSE_EXPORT_OUTBOX": str(root / "outbox"),
        "COURSE_EXPORT_SMTP_URL": "",
        "COURSE_EXPORT_SIGNING_KEY": "benchmark-signing-key-" + "x" * 32,
        "COURSE_EXPORT_WEBHOOK_URL": "",
    }


def run_batch(
    client: LmsClient, summary: LakeSummary, label: str, timeout_s: float
) -> tuple[float, float]:
    """Wall time of the batch, and the sum of the runs' own run times."""
    started = time.monotonic()
    refs = [
        client.trigger(
            DEPLOYMENT,
            {"course_id": course, "requested_by": summary.teachers[course][0], "notify": False},
            request_id=f"bench-{label}-{course}-{time.time_ns()}",
        )
        for course in summary.course_ids
    ]
    for ref in refs:
        client.wait(ref.id, timeout_s=timeout_s, poll_s=0.5)
    wall = time.monotonic() - started
    busy = sum(float(client.read_run(ref.id)["total_run_time"]) for ref in refs)
    return wall, busy


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--courses", type=int, default=6)
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--files-per-workspace", type=int, default=4)
    parser.add_argument("--file-bytes", type=int, default=200_000)
    parser.add_argument("--per-worker", type=int, default=2, help="runs one worker takes at once")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per batch")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="scale-out-"))
    try:
        spec = LakeSpec(
            seed=5,
            courses=args.courses,
            students=args.students,
            assignments=4,
            events=1_000,
            days=10,
            files_per_workspace=args.files_per_workspace,
            file_bytes=args.file_bytes,
        )
        print(f"lake: {spec.courses} courses under {root} ...", flush=True)
        summary = generate_lake(open_location(str(root / "lake")), spec, now=datetime.now(UTC))
        print(f"  {summary.workspace_files:,} files, {summary.workspace_bytes / 1e6:,.0f} MB")
        rows = []
        with run_server(root / "server") as server:
            create_pool(server.api_url, root / "cli")
            deploy_all(server.api_url, root / "cli")
            with LmsClient(server.api_url) as client:
                for workers in (1, 2):
                    env = worker_env(root, root / f"exports-{workers}")
                    with ExitStack() as stack:
                        for n in range(workers):
                            stack.enter_context(
                                run_worker(
                                    server.api_url,
                                    f"bench-{workers}-{n}",
                                    root / f"worker-{workers}-{n}",
                                    env,
                                    limit=args.per_worker,
                                )
                            )
                        print(f"batch with {workers} worker(s) ...", flush=True)
                        wall, busy = run_batch(client, summary, f"w{workers}", args.timeout)
                    rows.append((workers, wall, busy))
        print()
        print(f"{'workers':>8} {'runs':>5} {'wall s':>8} {'run s (sum)':>12} {'speed-up':>9}")
        for workers, wall, busy in rows:
            speedup = rows[0][1] / wall
            print(f"{workers:>8} {args.courses:>5} {wall:>8.1f} {busy:>12.1f} {speedup:>8.2f}x")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
