"""Benchmark: the access CSV engine against a plain pandas export (not run by the tests).

    .venv/bin/python benchmarks/access_export.py            # 30M events, 180 days, 100 courses
    .venv/bin/python benchmarks/access_export.py --events 3000000 --repeat 3

Generates the sample lake under ``benchmarks/out/lake`` (or reuses it when it was made
from the same spec and ``now``), then exports the largest and the median course with
both engines. Every run is a fresh subprocess so its peak RSS is its own (interpreter and
imports included). Timed: listing, footer checks (engine), reading, rendering and
writing the CSV to ``benchmarks/out/``; not timed: loading users, roster and course.json,
which both engines receive ready. Afterwards the two CSVs of a case must be identical.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from course_exports import access_log  # noqa: E402
from course_exports.lake import read_course, read_roster, read_users  # noqa: E402
from course_exports.storage import Location, open_location  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
SPEC_FILE = "benchmark-spec.json"
# Fixed so the lake, the window and therefore the outputs are the same on every run.
NOW = datetime(2026, 6, 30, 18, 0, tzinfo=UTC)
RETENTION_MONTHS = 6
SEED = 20260630


# ----------------------------------------------------------------------------- the lake


def lake_spec(events: int) -> Any:
    from sample_lake import LakeSpec

    return LakeSpec(
        seed=SEED,
        courses=100,
        students=400,
        events=events,
        days=180,
        workspaces=False,
        files_per_day=2,
    )


def ensure_lake(lake_dir: Path, events: int, regenerate: bool) -> dict[str, Any]:
    """The lake's summary; generated only when missing or made from another spec."""
    from sample_lake import generate_lake

    spec = lake_spec(events)
    wanted = {"spec": dataclasses.asdict(spec), "now": NOW.isoformat()}
    marker = lake_dir / SPEC_FILE
    if marker.exists() and not regenerate:
        saved = json.loads(marker.read_text())
        if saved.get("spec") == wanted["spec"] and saved.get("now") == wanted["now"]:
            print(f"reusing the lake in {lake_dir}")
            return dict(saved["summary"])
    print(f"generating {events:,} events in {lake_dir} ...", flush=True)
    lake_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    started = time.perf_counter()
    summary = generate_lake(open_location(str(lake_dir)), spec, now=NOW, overwrite=True)
    print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
    saved_summary = {
        "course_ids": summary.course_ids,
        "events_per_course": {str(k): v for k, v in summary.events_per_course.items()},
    }
    marker.write_text(json.dumps({**wanted, "summary": saved_summary}, indent=2))
    return saved_summary


# ----------------------------------------------------------------------------- the runs


def _inputs(lake: Location, course_id: int) -> tuple[Any, Any, Any, Any]:
    course = read_course(lake, course_id)
    return course, course.assignment_labels(), read_roster(lake, course_id), read_users(lake)


def run_engine(lake: Location, course_id: int, out_path: Path, timezone: str) -> int:
    _, assignments, roster, users = _inputs(lake, course_id)
    started = time.perf_counter()
    window = access_log.access_window(NOW, RETENTION_MONTHS, None, None)
    partitions = access_log.list_day_partitions(lake, window)
    access_log.check_log_files(lake, partitions)
    with open(out_path, "wb") as out:
        stats = access_log.write_access_csv(
            lake,
            partitions,
            out,
            course_id=course_id,
            window=window,
            assignments=assignments,
            roster=roster,
            users=users,
            timezone=timezone,
        )
    _report(stats.rows, time.perf_counter() - started)
    return 0


def run_pandas(lake: Location, course_id: int, out_path: Path, timezone: str) -> int:
    """The export as a careful pandas user would write it: read, merge, format, sort."""
    import pandas as pd

    _, assignments_pl, roster_pl, users_pl = _inputs(lake, course_id)
    assignments = assignments_pl.to_pandas()
    roster = roster_pl.to_pandas()
    users = users_pl.to_pandas()

    started = time.perf_counter()
    window = access_log.access_window(NOW, RETENTION_MONTHS, None, None)
    partitions = access_log.list_day_partitions(lake, window)
    frames = [
        pd.read_parquet(
            lake.path("access_log", f"event_date={p.day.isoformat()}"),
            filters=[("course_id", "==", course_id)],
        )
        for p in partitions
    ]
    df = pd.concat(frames, ignore_index=True)
    df = df[(df["event_time"] >= window.start) & (df["event_time"] < window.end)]
    df = df.sort_values(list(access_log.SORT_KEYS), na_position="first", kind="stable")
    df = df.merge(users, on="user_id", how="left")
    df = df.merge(roster, on="user_id", how="left")
    df = df.merge(assignments, on="assignment_id", how="left")

    def cell(series: Any) -> Any:
        text = series.astype("string")
        text = text.mask(text == "")
        risky = text.str.match(r"[=+\-@\t\r]", na=False)
        return text.where(~risky, "'" + text)

    stamp = df["event_time"].dt.tz_convert(timezone).dt.strftime("%Y-%m-%dT%H:%M:%S%z")
    session = df["access_type"].isin(["login", "logout"])
    table = pd.DataFrame(
        {
            "Username": cell(df["username"]),
            "Email": cell(df["email"]),
            "First Name": cell(df["first_name"]),
            "Last Name": cell(df["last_name"]),
            "Date/Time": stamp.str[:-2] + ":" + stamp.str[-2:],
            "Access Type": df["access_type"].map(access_log.ACCESS_TYPE_LABELS),
            "Assignment": cell(df["label"]).mask(session),
            "Role": cell(df["role"]),
            "Project Path": cell(df["project_path"]),
            "IP Address": cell(df["ip"]),
        }
    )
    table.to_csv(out_path, index=False, lineterminator="\r\n", encoding="utf-8", na_rep="")
    _report(len(table), time.perf_counter() - started)
    return 0


def _report(rows: int, seconds: float) -> None:
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    print(json.dumps({"rows": rows, "seconds": seconds, "peak_mb": peak_kb / 1024}))


def child(args: argparse.Namespace) -> int:
    lake = open_location(str(args.lake))
    runner = run_engine if args.child == "engine" else run_pandas
    return runner(lake, args.course, Path(args.csv), args.timezone)


def run_child(
    engine: str, lake_dir: Path, course_id: int, csv_path: Path, timezone: str
) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        engine,
        "--lake",
        str(lake_dir),
        "--course",
        str(course_id),
        "--csv",
        str(csv_path),
        "--timezone",
        timezone,
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{engine} run failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# ----------------------------------------------------------------------------- compare


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def first_difference(a: Path, b: Path) -> str:
    with open(a, newline="", encoding="utf-8") as fa, open(b, newline="", encoding="utf-8") as fb:
        for number, (ra, rb) in enumerate(zip(csv.reader(fa), csv.reader(fb), strict=False)):
            if ra != rb:
                return f"record {number}: {ra!r} != {rb!r}"
    return "one file is a prefix of the other"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000_000)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--regenerate", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="runs per engine; best is shown")
    parser.add_argument("--timezone", default="UTC")
    parser.add_argument("--cases", default="largest,median")
    parser.add_argument("--engines", default="pandas,engine")
    parser.add_argument("--child", choices=("engine", "pandas"), help=argparse.SUPPRESS)
    parser.add_argument("--lake", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--course", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--csv", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    out: Path = args.out.resolve()
    lake_dir = out / "lake"
    summary = ensure_lake(lake_dir, args.events, args.regenerate)
    ids = list(summary["course_ids"])
    per_course = summary["events_per_course"]
    cases = {"largest": ids[0], "median": ids[len(ids) // 2]}
    rows = []
    for case in args.cases.split(","):
        course_id = cases[case]
        results: dict[str, dict[str, Any]] = {}
        for engine in args.engines.split(","):
            csv_path = out / f"access-{case}-{course_id}-{engine}.csv"
            runs = [
                run_child(engine, lake_dir, course_id, csv_path, args.timezone)
                for _ in range(args.repeat)
            ]
            best = min(runs, key=lambda r: r["seconds"])
            best["peak_mb"] = max(r["peak_mb"] for r in runs)
            best["csv"] = csv_path
            best["mb"] = csv_path.stat().st_size / 1e6
            results[engine] = best
            print(
                f"{case} course {course_id} ({int(per_course[str(course_id)]):,} events in the log)"
                f" {engine}: {best['seconds']:.2f} s",
                flush=True,
            )
        if {"pandas", "engine"} <= results.keys():
            a, b = results["pandas"]["csv"], results["engine"]["csv"]
            same = sha256(a) == sha256(b)
            print(f"  outputs identical: {same}" + ("" if same else f" ({first_difference(a, b)})"))
        base = results.get("pandas", {}).get("seconds")
        for engine, r in results.items():
            ratio = f"{base / r['seconds']:.1f}x" if base else "-"
            rows.append(
                (
                    case,
                    engine,
                    f"{r['rows']:,}",
                    f"{r['mb']:.1f}",
                    f"{r['seconds']:.2f}",
                    f"{r['mb'] / r['seconds']:.0f}",
                    f"{r['peak_mb']:.0f}",
                    ratio,
                )
            )
    header = ("case", "engine", "rows", "CSV MB", "seconds", "MB/s", "peak MB", "speed-up")
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    for line in (header, *rows):
        print("  ".join(str(x).rjust(w) for x, w in zip(line, widths, strict=True)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
