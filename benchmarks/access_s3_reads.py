"""Benchmark: what the access export asks of S3, before and after issue 9/10's reads
(not run by the tests).

    .venv/bin/python benchmarks/access_s3_reads.py --events 3000000

On the lake of benchmarks/access_export.py (``daily-unsorted``, generated there or
reused) and its course-clustered copy, both put in a bucket of SeaweedFS started here:

- footer checks of every day's files (``check_log_files``): before, each file opened
  with ``open_seekable`` (a HEAD and ranged GETs with read-ahead); now one suffix GET;
- the median and the largest course's rows from the copy (``read_copied_rows``): before,
  every whole day file fetched; now one ranged GET a day of the course's chunks,
  decoded from exactly the checked bytes. The same on a local copy.

Requests and bytes are counted through tests/faults.py's proxy; seconds and this
process's CPU are measured straight against the server (best of 3), in the same run. The rows of
before and after must be equal.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests", ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import polars as pl  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from access_export import OUT, RETENTION_MONTHS, ensure_lake  # noqa: E402
from access_export_s3 import copy_lake  # noqa: E402

from course_exports import access_log  # noqa: E402
from course_exports.access_log import DayPartition, clustered, course_copy, indexer  # noqa: E402
from course_exports.access_log.course_copy import CopiedDay  # noqa: E402
from course_exports.access_log.schema import SCAN_SCHEMA  # noqa: E402
from course_exports.storage import Location, open_location  # noqa: E402

LAYOUT = "daily-unsorted"


# ------------------------------------------------------------------ the code before


def footers_before(lake: Location, partitions: list[DayPartition]) -> int:
    """check_log_files before: each footer through open_seekable (16 threads)."""
    paths = [path for partition in partitions for path in partition.files]

    def one(path: str) -> None:
        with lake.open_seekable(lake.relative(path)) as fh:
            pq.read_schema(fh)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, paths))
    return len(paths)


def copy_before(store: Location, days: Sequence[CopiedDay], course_id: int) -> pl.DataFrame:
    """read_copied_rows before 0.4.0: every whole day file fetched, the course's chunks
    checked and decoded from it."""
    wanted = [day for day in days if day.chunks]
    with ThreadPoolExecutor(8) as pool:
        files = list(pool.map(lambda day: store.read_bytes(day.path), wanted))
    sources = []
    for day, data in zip(wanted, files, strict=True):
        for number in day.chunks:
            chunk = day.index.chunks[number]
            checked = data[chunk.offset : chunk.offset + chunk.length]
            assert zlib.crc32(checked) == chunk.crc32
            sources.append(checked)
    return (
        pl.scan_parquet(sources, schema=SCAN_SCHEMA, hive_partitioning=False)
        .filter(pl.col("course_id") == course_id)
        .collect()
    )


def copy_after(store: Location, days: Sequence[CopiedDay], course_id: int) -> pl.DataFrame:
    frame, damaged = course_copy.read_copied_rows(store, days, course_id)
    assert not damaged, damaged
    return frame


# ------------------------------------------------------------------ measuring


def timed(call: Callable[[], Any], repeat: int = 3) -> tuple[Any, float, float]:
    """Result, wall seconds, this process's CPU seconds: the best of ``repeat`` runs."""
    runs = []
    for _ in range(repeat):
        cpu, wall = time.process_time(), time.perf_counter()
        result = call()
        runs.append((time.perf_counter() - wall, time.process_time() - cpu))
    return result, min(w for w, _ in runs), min(c for _, c in runs)


def counted(proxy: Any, call: Callable[[], Any]) -> tuple[int, int, int]:
    """Requests, HEADs, and GET body bytes of one call through the proxy."""
    proxy.seen.clear()
    proxy.answered.clear()
    call()
    heads = sum(1 for m, _ in proxy.seen if m == "HEAD")
    return len(proxy.seen), heads, proxy.body_bytes()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=3_000_000)
    args = parser.parse_args()

    from faults import faulty_proxy
    from seaweed import AWS_ENV, seaweedfs

    lake_dir = OUT / "lakes" / LAYOUT
    summary = ensure_lake(lake_dir, LAYOUT, args.events)
    copy_dir = OUT / f"copy-{LAYOUT}"
    local_lake, local_store = open_location(str(lake_dir)), open_location(str(copy_dir))
    now = datetime.now(UTC)
    plan = indexer.plan_copy(local_lake, local_store, now, RETENTION_MONTHS, max_days=1000)
    started = time.perf_counter()
    for day in plan.build:
        indexer.build_day(local_lake, local_store, day.partition)
    print(f"  copy: {len(plan.build)} days built in {time.perf_counter() - started:.0f} s")
    os.environ.update(AWS_ENV)
    with seaweedfs(("bench-lake",)) as server, faulty_proxy(server.endpoint_url) as proxy:
        s3_lake = open_location("s3://bench-lake/lake", s3_endpoint_url=server.endpoint_url)
        s3_store = open_location("s3://bench-lake/exports", s3_endpoint_url=server.endpoint_url)
        counted_lake = open_location("s3://bench-lake/lake", s3_endpoint_url=proxy.url)
        counted_store = open_location("s3://bench-lake/exports", s3_endpoint_url=proxy.url)
        log_dir = open_location(str(lake_dir / "access_log"))
        copy_lake(
            log_dir, open_location(s3_lake.url + "/access_log", s3_endpoint_url=server.endpoint_url)
        )
        copy_lake(local_store, s3_store)
        window = access_log.access_window(now, RETENTION_MONTHS, None, None)
        partitions = access_log.list_day_partitions(s3_lake, window)
        files = sum(len(partition.files) for partition in partitions)

        print(f"\nfooter checks of {files} files ({args.events:,} events)")
        print("| code | requests | HEADs | MB fetched | seconds | client CPU s |")
        print("|---|---|---|---|---|---|")
        for name, check in (
            ("before (open_seekable)", footers_before),
            ("now (read_tail)", access_log.check_log_files),
        ):
            requests, heads, fetched = counted(proxy, partial(check, counted_lake, partitions))
            _, wall, cpu = timed(partial(check, s3_lake, partitions))
            print(
                f"| {name} | {requests} | {heads} | {fetched / 1e6:.2f} | {wall:.2f} | {cpu:.2f} |"
            )

        copy_mb = sum(e.size for e in local_store.iter_files(clustered.COPY_DIR)) / 1e6
        print(f"\nthe copy: {copy_mb:.1f} MB; a course's rows from it")
        print("| course | storage | code | requests | MB fetched | seconds | CPU s | rows |")
        print("|---|---|---|---|---|---|---|---|")
        for case in ("median", "largest"):
            course_id = int(summary["cases"][case])
            local_partitions = access_log.list_day_partitions(local_lake, window)
            for storage, store, counting in (
                ("S3", s3_store, counted_store),
                ("local", local_store, None),
            ):
                copy = course_copy.find_current_days(store, local_partitions, course_id)
                days = list(copy.days.values())
                frames = []
                for name, read in (("before", copy_before), ("now", copy_after)):
                    requests = fetched = 0
                    if counting is not None:
                        requests, _, fetched = counted(
                            proxy, partial(read, counting, days, course_id)
                        )
                    frame, wall, cpu = timed(partial(read, store, days, course_id))
                    frames.append(frame)
                    shown = f"{requests} | {fetched / 1e6:.2f}" if counting else "- | -"
                    print(
                        f"| {case} | {storage} | {name} | {shown} | {wall:.2f} | {cpu:.2f} "
                        f"| {frame.height:,} |"
                    )
                assert frames[0].equals(frames[1]), "before and now differ"
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
