"""python -m sample_lake: write a sample lake from the command line."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from datetime import UTC, datetime

from course_exports.storage import open_location
from sample_lake.generate import generate_lake
from sample_lake.spec import LakeSpec, LogLayout, issue_lake_spec, tiny_lake_spec


def _parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_now(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


_INT_FLAGS = (
    "seed", "courses", "students", "teachers", "assignments", "events", "days",
    "files_per_workspace", "file_bytes", "files_per_day",
)  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    defaults = LakeSpec()
    parser = argparse.ArgumentParser(
        prog="python -m sample_lake",
        description="Write a synthetic LMS lake (CONTRACT section 2).",
    )
    parser.add_argument("--url", default=os.environ.get("COURSE_EXPORT_LAKE_URL", "./var/lake"))
    parser.add_argument(
        "--s3-endpoint-url", default=os.environ.get("COURSE_EXPORT_S3_ENDPOINT_URL") or None
    )
    parser.add_argument("--now", type=_parse_now, default=None, help="default: current UTC time")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--tiny", action="store_true", help="start from tiny_lake_spec()")
    start.add_argument(
        "--issue-lake",
        action="store_true",
        help="start from issue_lake_spec(): 2,000 uneven courses, 200,000 users, 30M events",
    )
    parser.add_argument(
        "--layout",
        type=LogLayout,
        choices=list(LogLayout),
        default=None,
        help="how each day's events are laid out in files (default: parts)",
    )
    parser.add_argument("--event-skew", type=float, default=None)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing lake")
    for name in _INT_FLAGS:
        parser.add_argument(
            f"--{name.replace('_', '-')}",
            type=int,
            default=None,
            help=f"default: {getattr(defaults, name)}",
        )
    parser.add_argument("--users", type=int, default=None)
    parser.add_argument("--workspaces", type=_parse_bool, nargs="?", const=True, default=None)
    parser.add_argument("--no-workspaces", dest="workspaces", action="store_false")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    base = tiny_lake_spec() if args.tiny else issue_lake_spec() if args.issue_lake else LakeSpec()
    overrides = {
        name: getattr(args, name)
        for name in (*_INT_FLAGS, "users", "workspaces", "layout", "event_skew")
        if getattr(args, name) is not None
    }
    spec = dataclasses.replace(base, **overrides)
    now = args.now or datetime.now(UTC)
    lake = open_location(args.url, s3_endpoint_url=args.s3_endpoint_url)
    started = time.perf_counter()
    try:
        summary = generate_lake(lake, spec, now=now, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - started
    largest = summary.course_ids[0]
    print(f"sample lake written to {lake.url} in {elapsed:.1f} s")
    print(
        f"  courses:    {len(summary.course_ids)} ({', '.join(map(str, summary.course_ids[:8]))}"
        f"{', ...' if len(summary.course_ids) > 8 else ''})"
    )
    print(
        f"  events:     {summary.events:,} over {summary.days} days up to {now.isoformat()}; "
        f"largest course {largest}: {summary.events_per_course[largest]:,}"
    )
    print(f"  workspaces: {summary.workspace_files:,} files, {summary.workspace_bytes:,} bytes")
    print(f"  teacher of {largest}: {summary.teachers[largest][:1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
