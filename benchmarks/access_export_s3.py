"""Benchmark: the largest course's access CSV from an S3 lake against the same from a
local lake (not run by the tests).

    .venv/bin/python benchmarks/access_export_s3.py                  # 30M events
    .venv/bin/python benchmarks/access_export_s3.py --events 3000000

The lake of benchmarks/access_export.py (one ``--layout``, generated there or reused)
is copied into a bucket of SeaweedFS (tests/seaweed.py, started here on 127.0.0.1);
then the CSV writer on the source log (listing, footer checks, reads, CSV) runs on
each, each run in a fresh subprocess, ``--repeat`` times, best time kept. The two CSVs
must be identical. Target: the S3 export at least 0.8x as fast as the local one.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests", ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from access_export import LAYOUTS, OUT, RETENTION_MONTHS, _inputs, ensure_lake  # noqa: E402
from harness import peak_rss_mb  # noqa: E402

from course_exports import access_log  # noqa: E402
from course_exports.storage import Location, open_location  # noqa: E402


def copy_lake(source: Location, target: Location, batch_bytes: int = 64 * 2**20) -> int:
    """Every object of ``source`` into ``target`` (concurrent batches); returns bytes."""
    batch: dict[str, bytes] = {}
    size = total = 0
    for entry in source.iter_files():
        batch[entry.path] = source.read_bytes(entry.path)
        size += entry.size
        if size >= batch_bytes:
            target.write_many(batch)
            total, batch, size = total + size, {}, 0
    target.write_many(batch)
    return total + size


def run_writer(lake: Location, course_id: int, csv_path: Path) -> dict[str, Any]:
    """The CSV writer alone on the source log (listing, footers, reads, CSV), as
    benchmarks/access_export.py runs it, from whichever storage ``lake`` is."""
    from datetime import UTC, datetime

    assignments, roster, users = _inputs(lake, course_id)
    started = time.perf_counter()
    window = access_log.access_window(datetime.now(UTC), RETENTION_MONTHS, None, None)
    partitions = access_log.list_day_partitions(lake, window)
    access_log.check_log_files(lake, partitions)
    with open(csv_path, "wb") as out:
        stats = access_log.write_access_csv(
            lake, partitions, out, course_id=course_id, window=window,
            assignments=assignments, roster=roster, users=users,
        )  # fmt: skip
    return {"rows": stats.rows, "seconds": time.perf_counter() - started}


def run(url: str, endpoint: str, course_id: int, csv_path: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", url, "--endpoint", endpoint]
    command += ["--course", str(course_id), "--csv", str(csv_path)]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=30_000_000)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--layout", choices=LAYOUTS, default=LAYOUTS[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--course", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--csv", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        lake = open_location(args.child, s3_endpoint_url=args.endpoint)
        result = run_writer(lake, args.course, Path(args.csv))
        print(json.dumps({**result, "peak_mb": peak_rss_mb()}))
        return 0

    from seaweed import AWS_ENV, seaweedfs

    lake_dir = OUT / "lakes" / args.layout  # shared with benchmarks/access_export.py
    summary = ensure_lake(lake_dir, args.layout, args.events)
    course_id = int(summary["cases"]["largest"])
    os.environ.update(AWS_ENV)
    with seaweedfs(("bench-lake",)) as server:
        remote = open_location("s3://bench-lake/lake", s3_endpoint_url=server.endpoint_url)
        started = time.perf_counter()
        copied = copy_lake(open_location(str(lake_dir)), remote)
        print(f"  copied {copied / 1e6:,.0f} MB to S3 in {time.perf_counter() - started:.0f} s")
        results = {}
        for name, url in (("local lake", str(lake_dir)), ("S3 lake", remote.url)):
            csv_path = OUT / f"access-s3-bench-{name.split()[0]}.csv"
            runs = [run(url, server.endpoint_url, course_id, csv_path) for _ in range(args.repeat)]
            results[name] = {**min(runs, key=lambda r: r["seconds"]), "csv": csv_path}
    local, s3 = results["local lake"], results["S3 lake"]
    assert digest(local["csv"]) == digest(s3["csv"]), "the two CSVs differ"
    print(f"\nlargest course ({course_id}), {local['rows']:,} rows, best of {args.repeat}")
    print("| lake | seconds | rows/s | peak MB | vs local |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        ratio = local["seconds"] / r["seconds"]
        print(
            f"| {name} | {r['seconds']:.2f} | {r['rows'] / r['seconds']:,.0f} "
            f"| {r['peak_mb']:,.0f} | {ratio:.2f}x |"
        )
    print("\ntarget: S3 >= 0.8x local")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
