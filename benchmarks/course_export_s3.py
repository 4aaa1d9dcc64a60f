"""Benchmark: the course export from S3 against the same export from a local lake and
against fetching the objects one after another with boto3 (not run by the tests).

    .venv/bin/python benchmarks/course_export_s3.py                 # 300 students
    .venv/bin/python benchmarks/course_export_s3.py --students 60   # quicker
    .venv/bin/python benchmarks/course_export_s3.py --many          # the 500,000-file memory row

SeaweedFS (``weed mini``, tests/seaweed.py) is started here on 127.0.0.1 with a
temporary data folder. The course is generated twice, byte for byte the same: on disk
(shared with benchmarks/course_export.py) and in a bucket. Each case runs in a fresh
subprocess, so its peak RSS and CPU are its own; the server's CPU is read from /proc
around each case (it shares the two cores with the client).

Rows:
- sequential boto3: ``get_object`` of every workspace object, one after another, the
  loop a user would write (no zip): the baseline for objects/s;
- course export, local lake -> local exports (the real ``write_course_zip``);
- course export, S3 lake -> S3 exports (obstore listing, GETs and multipart upload).

``--many`` runs the memory row instead: the 500,000 files of ~200 B of
benchmarks/course_mixes.py's ``many`` mix, uploaded to the bucket (64 PUTs in flight) and
exported S3 -> S3, beside the same export from the local copy. "peak MB" is the case
process's whole peak: listing, plan, manifest and zip (target < 300 MB).

"client CPU per object" is the case's CPU over the objects it read; for the S3 export
also its CPU beyond the local export's (the same zip work), i.e. what reading from S3
costs the client. Targets: S3 export >= 4x sequential boto3 in objects/s, client CPU
for S3 <= 1 ms per object, S3 export wall time <= 2.5x the local export's.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests", ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from course_export import NOW, OUT, case_export, ensure_lake, plan_for  # noqa: E402
from harness import case_parser, report_case, run_case_process  # noqa: E402

from course_exports.storage import Location, open_location  # noqa: E402

BUCKETS = ("bench-lake", "bench-exports")


def case_boto3(lake: Location, endpoint: str) -> dict[str, Any]:
    """Every workspace object of the plan, fetched one after another with boto3."""
    import boto3
    from botocore.config import Config

    _, plan = plan_for(lake)
    bucket, _, prefix = lake.url.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=endpoint, config=Config(signature_version="s3v4"))
    started = time.perf_counter()
    total = 0
    for file in plan.files():
        key = f"{prefix}/{file.path}" if prefix else file.path
        total += len(client.get_object(Bucket=bucket, Key=key)["Body"].read())
    assert total == plan.total_bytes
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "input": total, "output": 0, "objects": plan.file_count}


def upload_tree(root: Path, url: str, endpoint: str) -> int:
    """Every file under ``root`` to ``url`` (``s3://bucket/prefix``), 64 PUTs in flight;
    the count. Benchmark set-up only: generating 500,000 objects one PUT after another
    takes about half an hour here."""
    import asyncio

    import obstore

    from course_exports.storage.s3 import S3Settings, build_store

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    store = build_store(S3Settings.resolve(endpoint), bucket, prefix)

    async def put_all() -> int:
        gate = asyncio.Semaphore(64)
        count = 0

        async def put(path: Path) -> None:
            async with gate:
                await obstore.put_async(store, path.relative_to(root).as_posix(), path.read_bytes())

        pending: set[asyncio.Task[None]] = set()
        for folder, _, names in os.walk(root):
            for name in names:
                pending.add(asyncio.create_task(put(Path(folder) / name)))
                count += 1
                if len(pending) >= 1024:  # a bounded window, not 500,000 tasks at once
                    done, pending = await asyncio.wait(pending, return_when="FIRST_COMPLETED")
                    for task in done:
                        task.result()
        await asyncio.gather(*pending)
        return count

    return asyncio.run(put_all())


def run_many(endpoint: str, pid: int, scratch: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The memory row: the ``many`` mix exported from its local copy and from S3."""
    from course_mixes import MIXES
    from course_mixes import ensure_lake as ensure_mix

    local_root = ensure_mix(MIXES["many"])
    started = time.perf_counter()
    count = upload_tree(local_root, "s3://bench-lake/many", endpoint)
    print(f"  uploaded {count:,} objects in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    ours_local = run_case_process(
        __file__, "export", str(local_root), f"{scratch}/exports", endpoint, pid
    )
    ours_s3 = run_case_process(
        __file__, "export", "s3://bench-lake/many", "s3://bench-exports/many", endpoint, pid
    )
    return ours_local, ours_s3


def run_case(args: argparse.Namespace) -> dict[str, Any]:
    lake = open_location(args.lake, s3_endpoint_url=args.endpoint)
    if args.case == "boto3":
        return case_boto3(lake, args.endpoint)
    return case_export(lake, open_location(args.target, s3_endpoint_url=args.endpoint))


def row(name: str, r: dict[str, Any], base: dict[str, Any], extra_cpu_ms: str = "") -> str:
    per_s = r["objects"] / r["seconds"]
    cpu_ms = r["cpu_s"] * 1000 / r["objects"]
    return (
        f"| {name} | {r['objects']:,} | {r['input'] / 1e6:,.0f} | {r['seconds']:.1f} "
        f"| {per_s:,.0f} | {r['input'] / 1e6 / r['seconds']:,.0f} | {cpu_ms:.2f}{extra_cpu_ms} "
        f"| {r['server_cpu_s']:.1f} | {r['peak_mb']:,.0f} "
        f"| {per_s / (base['objects'] / base['seconds']):.1f}x |"
    )


def main() -> int:
    parser = case_parser(__doc__)
    parser.add_argument("--students", type=int, default=300)
    parser.add_argument("--many", action="store_true", help="the 500,000-file memory row only")
    args = parser.parse_args()
    if args.case:
        return report_case(lambda: run_case(args))

    from seaweed import AWS_ENV, seaweedfs

    from sample_lake import generate_lake

    OUT.mkdir(parents=True, exist_ok=True)
    if args.many:
        os.environ.update(AWS_ENV)
        with seaweedfs(BUCKETS) as server, tempfile.TemporaryDirectory(dir=OUT) as scratch:
            ours_local, ours_s3 = run_many(server.endpoint_url, server.pid, scratch)
        print("| case | objects | MB | zip seconds | objects/s | MB/s | client CPU ms/object "
              "| server CPU s | peak MB | vs local |")  # fmt: skip
        print("|---|---|---|---|---|---|---|---|---|---|")
        print(row("500,000 files, local lake", ours_local, ours_local))
        print(row("500,000 files, S3 lake -> S3", ours_s3, ours_local))
        return 0
    local = open_location(str(OUT / "lake"))
    ensure_lake(local, args.students)
    os.environ.update(AWS_ENV)  # the cases (child processes) sign with the server's keys
    with seaweedfs(BUCKETS) as server, tempfile.TemporaryDirectory(dir=OUT) as scratch:
        lake_url = "s3://bench-lake/lake"
        started = time.perf_counter()
        from course_export import spec

        generate_lake(open_location(lake_url, s3_endpoint_url=server.endpoint_url),
                      spec(args.students), now=NOW)  # fmt: skip
        print(f"  S3 lake generated in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        endpoint, pid = server.endpoint_url, server.pid
        fetch = run_case_process(__file__, "boto3", lake_url, "-", endpoint, pid)
        ours_local = run_case_process(
            __file__, "export", local.url, f"{scratch}/exports", endpoint, pid
        )
        ours_s3 = run_case_process(
            __file__, "export", lake_url, "s3://bench-exports/exports", endpoint, pid
        )

    extra = (ours_s3["cpu_s"] - ours_local["cpu_s"]) * 1000 / ours_s3["objects"]
    print("| case | objects | MB | seconds | objects/s | MB/s | client CPU ms/object "
          "| server CPU s | peak MB | vs boto3 |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(row("sequential boto3 get_object (no zip)", fetch, fetch))
    print(row("course export, local lake", ours_local, fetch))
    print(row("course export, S3 lake -> S3", ours_s3, fetch, f" ({extra:+.2f} vs local)"))
    speedup = (ours_s3["objects"] / ours_s3["seconds"]) / (fetch["objects"] / fetch["seconds"])
    wall = ours_s3["seconds"] / ours_local["seconds"]
    print(f"\nS3 export vs sequential boto3: {speedup:.1f}x (target >= 4x)")
    print(f"S3 client CPU beyond the local export: {extra:.2f} ms/object (target <= 1 ms)")
    print(f"S3 export wall time vs local: {wall:.2f}x (target <= 2.5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
