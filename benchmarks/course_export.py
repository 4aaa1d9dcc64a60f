"""Benchmark: the course zip from a local lake (not run by the tests).

    .venv/bin/python benchmarks/course_export.py                 # 300 students x 10 assignments
    .venv/bin/python benchmarks/course_export.py --students 60   # quicker

One generated course (about 1.5 GB in about 60,000 files at the default size), exported
by the real export code (``write_course_zip``, the one the flow runs) beside the
baselines, in one run, each case in a fresh subprocess so its peak RSS is its own:

- local lake: plain sequential ``zipfile`` at its default deflate level

The same course from S3 (SeaweedFS) is benchmarks/course_export_s3.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests", ROOT / "benchmarks"):  # tests/seaweed.py, harness
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from harness import case_parser, report_case, run_case_process  # noqa: E402

from course_exports import registry, workspace  # noqa: E402
from course_exports.course_export import export_course_zip  # noqa: E402
from course_exports.export_records import ExportKind  # noqa: E402
from course_exports.lake import read_course, read_roster, read_users  # noqa: E402
from course_exports.storage import Location, open_location  # noqa: E402
from course_exports.zipstream import DEFAULT_LEVEL  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "course"
NOW = datetime(2026, 6, 30, 18, 0, tzinfo=UTC)


def spec(students: int) -> Any:
    from sample_lake import LakeSpec

    return LakeSpec(
        seed=11, courses=1, students=students, assignments=10, events=1000, days=10,
        files_per_workspace=20, file_bytes=25_000,
    )  # fmt: skip


def ensure_lake(lake: Location, students: int) -> None:
    from sample_lake import generate_lake

    marker = "benchmark-spec.json"
    wanted = json.dumps({"students": students, "now": NOW.isoformat()})
    if lake.exists(marker) and lake.read_bytes(marker).decode() == wanted:
        return
    started = time.perf_counter()
    generate_lake(lake, spec(students), now=NOW, overwrite=True)
    lake.write_bytes_atomic(wanted.encode(), marker)
    print(f"  generated {lake.url} in {time.perf_counter() - started:.0f} s", file=sys.stderr)


# ----------------------------------------------------------------------------- the cases


def plan_for(lake: Location) -> tuple[Any, workspace.WorkspacePlan]:
    course = read_course(lake, 1001)
    plan = workspace.plan_workspaces(
        workspace.list_workspace_files(lake, 1001),
        course,
        read_roster(lake, 1001),
        read_users(lake),
    )
    return course, plan


def case_zipfile(lake: Location, out: Path) -> dict[str, Any]:
    _, plan = plan_for(lake)
    started = time.perf_counter()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in plan.files():
            zf.write(lake.path(file.path), f"course/workspaces/{file.arcname}")
    return {
        "seconds": time.perf_counter() - started,
        "input": plan.total_bytes,
        "output": out.stat().st_size,
    }


def case_export(lake: Location, exports: Location) -> dict[str, Any]:
    course, plan = plan_for(lake)
    record = registry.begin_export(
        exports, kind=ExportKind.COURSE, course_id=course.id, course_name=course.name,
        requested_by=1, request_id=None, parameters={}, file_name="course.zip",
        ttl=timedelta(days=7),
    )  # fmt: skip
    started = time.perf_counter()
    with registry.open_export_file(exports, record) as out:
        export_course_zip(
            out,  # type: ignore[arg-type]
            lake,
            record=record,
            course=course,
            plan=plan,
            level=int(os.environ.get("BENCH_LEVEL", DEFAULT_LEVEL)),
        )
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "input": plan.total_bytes,
        "output": out.size,
        "objects": plan.file_count,
    }


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    lake = open_location(args.lake, s3_endpoint_url=args.endpoint)
    if args.case == "zipfile":
        return case_zipfile(lake, Path(args.target))
    return case_export(lake, open_location(args.target, s3_endpoint_url=args.endpoint))


# ----------------------------------------------------------------------------- the table


def row(name: str, source: str, r: dict[str, Any], base: dict[str, Any] | None) -> str:
    mbps = r["input"] / 1e6 / r["seconds"]
    ratio = f"{mbps / (base['input'] / 1e6 / base['seconds']):.1f}x" if base else "1.0x"
    output = f"{r['output'] / 1e6:,.1f}" if r["output"] else "-"
    cpu = f"{r['cpu_s']:.0f}"
    if "server_cpu_s" in r:
        cpu += f" + server {r['server_cpu_s']:.0f}"
    return (
        f"| {source} | {name} | {r['input'] / 1e6:,.0f} | {output} | {r['seconds']:.1f} "
        f"| {mbps:,.0f} | {r['peak_mb']:,.0f} | {cpu} | {ratio} |"
    )


def main() -> int:
    parser = case_parser(__doc__)
    parser.add_argument("--students", type=int, default=300)
    args = parser.parse_args()
    if args.case:
        return report_case(lambda: run_case(args))

    OUT.mkdir(parents=True, exist_ok=True)
    local = open_location(str(OUT / "lake"))
    ensure_lake(local, args.students)
    rows = ["| lake | engine | input MB | output MB | seconds | MB/s in | peak MB | CPU s | ratio |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    base = run_case_process(__file__, "zipfile", local.url, str(OUT / "zipfile.zip"))
    rows.append(row("sequential zipfile (deflate 6)", "local", base, None))
    ours = run_case_process(__file__, "export", local.url, str(OUT / "exports"))
    rows.append(row("course export", "local", ours, base))
    size_delta = ours["output"] / base["output"] - 1
    print("\n".join(rows))
    print(f"\ncourse export output is {size_delta:+.1%} the size of sequential zipfile's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
