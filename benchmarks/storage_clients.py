"""Benchmark: S3 clients on many small objects, and parquet reads (not run by the tests).

    .venv/bin/python benchmarks/storage_clients.py [--objects 2000] [--size 8192]

SeaweedFS (tests/seaweed.py) is started here. One run, same objects, in this process:
objects/s and client CPU per object for s3fs ``cat_file`` (the earlier data path),
boto3 ``get_object``, and our storage interface (obstore) one at a time and with
``read_many``; then a day of parquet files read into Polars through the interface
(objects fetched as bytes) and by Polars' own S3 reader (``storage_options``).
It is why the data path is on obstore, and why small control-plane reads (manifests,
course.json) moved too: one client, at a fraction of the CPU.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "tests"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from course_exports.storage import open_location  # noqa: E402


def measure(label: str, count: int, run: Callable[[], Any]) -> str:
    cpu, wall = time.process_time(), time.perf_counter()
    run()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return f"| {label} | {count / wall:,.0f} | {cpu * 1000 / count:.2f} | {wall:.2f} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--parquet-files", type=int, default=24)
    args = parser.parse_args()

    import boto3
    import polars as pl
    import s3fs
    from botocore.config import Config
    from seaweed import AWS_ENV, seaweedfs

    os.environ.update(AWS_ENV)
    with seaweedfs(("bench",)) as server:
        loc = open_location("s3://bench/small", s3_endpoint_url=server.endpoint_url)
        names = [f"w/{i % 50}/{i}.txt" for i in range(args.objects)]
        loc.write_many({n: os.urandom(args.size) for n in names})
        fs = s3fs.S3FileSystem(endpoint_url=server.endpoint_url)
        boto = boto3.client(
            "s3", endpoint_url=server.endpoint_url, config=Config(signature_version="s3v4")
        )
        rows = [
            "| client | objects/s | client CPU ms/object | seconds |",
            "|---|---|---|---|",
            measure(
                "s3fs cat_file, one after another",
                len(names),
                lambda: [fs.cat_file(f"bench/small/{n}") for n in names],
            ),
            measure(
                "boto3 get_object, one after another",
                len(names),
                lambda: [
                    boto.get_object(Bucket="bench", Key=f"small/{n}")["Body"].read() for n in names
                ],
            ),
            measure(
                "Location.read_bytes (obstore), one after another",
                len(names),
                lambda: [loc.read_bytes(n) for n in names],
            ),
            measure(
                f"Location.read_many (obstore, {loc.parallel_reads} threads)",
                len(names),
                lambda: loc.read_many(names),
            ),
            measure(
                "Location.iter_files (listing only)", len(names), lambda: list(loc.iter_files())
            ),
        ]
        print("\n".join(rows))

        day = open_location("s3://bench/log", s3_endpoint_url=server.endpoint_url)
        frame = pl.DataFrame(
            {"course_id": [i % 500 for i in range(200_000)], "user_id": list(range(200_000))}
        )
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        files = [f"part-{i}.parquet" for i in range(args.parquet_files)]
        day.write_many(dict.fromkeys(files, buffer.getvalue()))
        options = {
            "aws_endpoint_url": server.endpoint_url,
            "aws_allow_http": "true",
            "aws_region": AWS_ENV["AWS_REGION"],
            "aws_access_key_id": AWS_ENV["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        }

        def ours() -> int:
            return (
                pl.scan_parquet(day.scan_sources(files))
                .filter(pl.col("course_id") == 7)
                .collect()
                .height
            )

        def polars_s3() -> int:
            urls = [f"s3://bench/log/{f}" for f in files]
            return (
                pl.scan_parquet(urls, storage_options=options)
                .filter(pl.col("course_id") == 7)
                .collect()
                .height
            )

        assert ours() == polars_s3()
        print()
        print("| parquet files into Polars | files/s | client CPU ms/file | seconds |")
        print("|---|---|---|---|")
        print(measure("Location.scan_sources (obstore bytes)", len(files), ours))
        print(measure("Polars' own S3 reader (storage_options)", len(files), polars_s3))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
