"""Benchmark: the course zip from a local lake and from S3 (not run by the tests).

    .venv/bin/python benchmarks/course_export.py                 # 300 students x 10 assignments
    .venv/bin/python benchmarks/course_export.py --students 60   # quicker

One generated course (about 1.5 GB in about 60,000 files at the default size), exported
by the real export code (``write_course_zip``, the one the flow runs) beside the
baselines, in one run, each case in a fresh subprocess so its peak RSS is its own:

- local lake: plain sequential ``zipfile`` at its default deflate level
- S3 lake (moto's server on 127.0.0.1, as is and behind a proxy adding S3-like
  first-byte latency): fetching the same objects one after another

The S3 case writes the zip to an S3 exports bucket, as production does (multipart).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
import urllib.request
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):  # tests/faults.py: the latency proxy
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from course_exports import registry, workspace  # noqa: E402
from course_exports.archive import DEFAULT_LEVEL  # noqa: E402
from course_exports.course_export import write_course_zip  # noqa: E402
from course_exports.lake import read_course, read_roster, read_users  # noqa: E402
from course_exports.registry import ExportKind  # noqa: E402
from course_exports.storage import Location, open_location  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "course"
NOW = datetime(2026, 6, 30, 18, 0, tzinfo=UTC)


def spec(students: int) -> Any:
    from course_exports.sample_lake import LakeSpec

    return LakeSpec(
        seed=11, courses=1, students=students, assignments=10, events=1000, days=10,
        files_per_workspace=20, file_bytes=25_000,
    )  # fmt: skip


def ensure_lake(lake: Location, students: int) -> None:
    from course_exports.sample_lake import generate_lake

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
        for file in plan.files:
            zf.write(file.path, f"course/workspaces/{file.arcname}")
    return {
        "seconds": time.perf_counter() - started,
        "input": plan.total_bytes,
        "output": out.stat().st_size,
    }


def case_fetch_sequential(lake: Location) -> dict[str, Any]:
    _, plan = plan_for(lake)
    started = time.perf_counter()
    total = sum(len(lake.fs.cat_file(file.path)) for file in plan.files)
    assert total == plan.total_bytes
    return {"seconds": time.perf_counter() - started, "input": total, "output": 0}


def case_export(lake: Location, exports: Location) -> dict[str, Any]:
    course, plan = plan_for(lake)
    record = registry.begin_export(
        exports, kind=ExportKind.COURSE, course_id=course.id, course_name=course.name,
        requested_by=1, request_id=None, parameters={}, file_name="course.zip",
        ttl=timedelta(days=7),
    )  # fmt: skip
    started = time.perf_counter()
    with registry.open_export_file(exports, record) as out:
        write_course_zip(
            out,  # type: ignore[arg-type]
            lake,
            record=record,
            course=course,
            course_json=lake.read_bytes("courses", course.id, "course.json"),
            roster=read_roster(lake, course.id),
            users=read_users(lake),
            plan=plan,
            level=int(os.environ.get("BENCH_LEVEL", DEFAULT_LEVEL)),
        )
    return {"seconds": time.perf_counter() - started, "input": plan.total_bytes, "output": out.size}


def run_case(args: argparse.Namespace) -> None:
    lake = open_location(args.lake, s3_endpoint_url=args.endpoint)
    if args.case == "zipfile":
        result = case_zipfile(lake, Path(args.target))
    elif args.case == "fetch":
        result = case_fetch_sequential(lake)
    else:
        result = case_export(lake, open_location(args.target, s3_endpoint_url=args.endpoint))
    result["peak_mb"] = peak_rss_mb()
    print(json.dumps(result))


def peak_rss_mb() -> float:
    """This process's own peak RSS. ``ru_maxrss`` would not do: Linux carries it over
    fork and exec, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(case: str, lake: str, target: str, endpoint: str | None) -> dict[str, Any]:
    command = [sys.executable, __file__, "--case", case, "--lake", lake, "--target", target]
    if endpoint:
        command += ["--endpoint", endpoint]
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# ----------------------------------------------------------------------------- the table


def row(name: str, source: str, r: dict[str, Any], base: dict[str, Any] | None) -> str:
    mbps = r["input"] / 1e6 / r["seconds"]
    ratio = f"{mbps / (base['input'] / 1e6 / base['seconds']):.1f}x" if base else "1.0x"
    output = f"{r['output'] / 1e6:,.1f}" if r["output"] else "-"
    return (
        f"| {source} | {name} | {r['input'] / 1e6:,.0f} | {output} | {r['seconds']:.1f} "
        f"| {mbps:,.0f} | {r['peak_mb']:,.0f} | {ratio} |"
    )


@contextmanager
def moto_server() -> Iterator[str]:
    """moto's server in its own process, so its CPU is not shared with the benchmark's."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench", "AWS_DEFAULT_REGION": "us-east-1",
    }.items():  # fmt: skip
        os.environ[name] = value
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        server.terminate()
        server.wait()


def s3_rows(students: int, latency_ms: float) -> list[str]:
    """Sequential fetching against the export, straight to moto and behind a proxy that
    adds S3's first-byte latency to every request (moto answers in microseconds of wire
    time but milliseconds of CPU, which no concurrency can hide on 2 cores)."""
    import boto3
    from faults import faulty_proxy

    rows = []
    with moto_server() as endpoint:
        s3 = boto3.client("s3", endpoint_url=endpoint)
        for bucket in ("bench-lake", "bench-exports"):
            s3.create_bucket(Bucket=bucket)
        ensure_lake(open_location("s3://bench-lake/lake", s3_endpoint_url=endpoint), students)
        settings: list[tuple[str, str | None, float]] = [("moto", endpoint, 0.0)]
        if latency_ms:
            settings.append((f"moto +{latency_ms:g} ms", None, latency_ms / 1000))
        for label, url, latency in settings:
            with faulty_proxy(endpoint, latency_s=latency) as proxy:
                target = url or proxy.url
                fetch = child("fetch", "s3://bench-lake/lake", "-", target)
                rows.append(row("sequential fetch, no zip", label, fetch, None))
                ours = child("export", "s3://bench-lake/lake", "s3://bench-exports/exports", target)
                rows.append(row("course export to S3", label, ours, fetch))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--s3-students", type=int, default=None, help="default: --students")
    parser.add_argument("--skip-s3", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=20.0, help="added S3 latency (0: off)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        run_case(args)
        return 0

    OUT.mkdir(parents=True, exist_ok=True)
    local = open_location(str(OUT / "lake"))
    ensure_lake(local, args.students)
    rows = ["| lake | engine | input MB | output MB | seconds | MB/s in | peak MB | ratio |",
            "|---|---|---|---|---|---|---|---|"]  # fmt: skip
    base = child("zipfile", local.url, str(OUT / "zipfile.zip"), None)
    rows.append(row("sequential zipfile (deflate 6)", "local", base, None))
    ours = child("export", local.url, str(OUT / "exports"), None)
    rows.append(row("course export", "local", ours, base))
    size_delta = ours["output"] / base["output"] - 1
    if not args.skip_s3:
        rows += s3_rows(args.s3_students or args.students, args.latency_ms)
    print("\n".join(rows))
    print(f"\ncourse export output is {size_delta:+.1%} the size of sequential zipfile's")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
