"""Benchmark: access exports on three lake layouts, against pandas in the same run.

    .venv/bin/python benchmarks/access_export.py                 # the issue's lake, 30M events
    .venv/bin/python benchmarks/access_export.py --events 3000000 --layouts daily-unsorted

For each layout (one unsorted row group a day, hourly files, sorted by course with small
row groups) the same 30 million events of 2,000 very uneven courses and 200,000 users
(``sample_lake.issue_lake_spec``) are generated under ``benchmarks/out/lakes/<layout>``
(reused when made from the same spec on the same day), the course-clustered copy is
built as the refresh flow builds it, days then merged months (time per day and per
month, size against the source), and the largest and the median course are exported by:

* ``pandas``: the export as a careful pandas + pyarrow user writes it (read, merge,
  format, sort, to_csv), the baseline;
* ``writer``: the engine alone, on the source only (the copy not built yet);
* ``writer+copy``: the engine alone, reading the copy where it is current;
* ``flow``: the export-access-data flow end to end on Prefect's ephemeral API (the
  copy built), after a first run of the process (it starts the API);

each in a fresh subprocess so its peak RSS is its own (interpreter and imports
included). On the median course every engine runs ``--median-runs`` times (default 5)
in its process and the median is shown, all runs beside it: those runs take a fifth of
a second to a few seconds, where one run measured the machine's noise as much as the
code (one flow run took 0.76 s where the others take ~0.2 s). The largest course runs
once. ``--baseline DIR`` (another checkout, e.g. ``git worktree add DIR <commit>``)
also runs that tree's ``writer+copy`` and ``flow`` in the same run, on the same lakes
and on a copy built by that tree (under ``<out>/baseline``): old against new, side by
side. Engine and pandas both get users, roster and course.json ready (not timed);
the writer rows time listing, footer checks and the CSV. Every CSV must be identical to
pandas'. The machine is shared: compare the ratios within one run, not the seconds.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from harness import peak_rss_mb, steps_line, timed_flow  # noqa: E402

from course_exports import access_log  # noqa: E402
from course_exports.lake import read_course, read_roster, read_users  # noqa: E402
from course_exports.storage import Location, open_location  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
SPEC_FILE = "benchmark-spec.json"
RETENTION_MONTHS = 6
LAYOUTS = ("daily-unsorted", "hourly", "course-sorted")


# ----------------------------------------------------------------------------- the lake


def lake_now() -> datetime:
    """Today at midnight UTC: exports window from the real clock (the flow has no "now"),
    so the lake must end today for its 180 days to be inside the retention."""
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def ensure_lake(lake_dir: Path, layout: str, events: int) -> dict[str, Any]:
    """The lake's summary; generated only when missing, from another spec, or old."""
    from sample_lake import LogLayout, generate_lake, issue_lake_spec

    spec = issue_lake_spec(LogLayout(layout), events=events)
    now = lake_now()
    wanted = {"spec": json.loads(json.dumps(dataclasses.asdict(spec))), "now": now.isoformat()}
    marker = lake_dir / SPEC_FILE
    if marker.exists():
        saved = json.loads(marker.read_text())
        if saved.get("spec") == wanted["spec"] and saved.get("now") == wanted["now"]:
            return dict(saved["summary"])
    print(f"generating {events:,} events ({layout}) in {lake_dir} ...", flush=True)
    lake_dir.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    started = time.perf_counter()
    summary = generate_lake(open_location(str(lake_dir)), spec, now=now, overwrite=True)
    print(f"  generated in {time.perf_counter() - started:.0f} s", flush=True)
    ids = summary.course_ids
    cases = {"largest": ids[0], "median": ids[len(ids) // 2]}
    saved_summary = {
        "cases": cases,
        "events": {case: summary.events_per_course[cid] for case, cid in cases.items()},
        "teachers": {case: summary.teachers[cid][0] for case, cid in cases.items()},
    }
    marker.write_text(json.dumps({**wanted, "summary": saved_summary}, indent=2))
    return saved_summary


def build_copy(lake: Location, store: Location) -> dict[str, float]:
    """Build (or bring up to date) the course-clustered copy, days then merged months,
    as the refresh flow does; what it cost."""
    from course_exports.access_log import indexer, months

    plan = indexer.plan_copy(lake, store, datetime.now(UTC), RETENTION_MONTHS, max_days=10_000)
    seconds = rows = source = copied = 0.0
    for day in plan.build:
        result = indexer.build_day(lake, store, day.partition)
        seconds += result.seconds
        rows += result.rows
        source += result.source_bytes
        copied += result.copy_bytes
    merges = months.plan_months(store)
    merged = [months.merge_month(store, merge) for merge in merges.merge]
    for month in merges.remove:
        months.remove_month(store, month)
    return {
        "days": len(plan.build),
        "seconds": seconds,
        "source": source,
        "copy": copied,
        "months": len(merged),
        "month_seconds": sum(m.seconds for m in merged),
    }


def copy_size(lake: Location, store: Location) -> tuple[int, int, int]:
    """Bytes of the source log, of the copy's days (over the days the copy holds) and of
    its merged months."""
    from course_exports.access_log import indexer
    from course_exports.access_log.clustered import survey_copy

    window = access_log.AccessWindow(datetime(2000, 1, 1, tzinfo=UTC), datetime.now(UTC))
    partitions = {p.day: p for p in access_log.list_day_partitions(lake, window)}
    sizes = {d: n for d, n in indexer.copy_sizes(store).items() if d in partitions}
    months = sum(sum(files.values()) for files in survey_copy(store).months.values())
    return sum(partitions[d].size_bytes for d in sizes), sum(sizes.values()), months


# ----------------------------------------------------------------------------- the runs


def _inputs(lake: Location, course_id: int) -> tuple[Any, Any, Any]:
    course = read_course(lake, course_id)
    return course.assignment_labels(), read_roster(lake, course_id), read_users(lake)


def run_writer(args: argparse.Namespace, use_copy: bool) -> dict[str, Any]:
    from course_exports.access_log.course_copy import find_current_days

    lake = open_location(str(args.lake))
    assignments, roster, users = _inputs(lake, args.course)

    def once() -> int:
        window = access_log.access_window(datetime.now(UTC), RETENTION_MONTHS, None, None)
        partitions = access_log.list_day_partitions(lake, window)
        copy = None
        if use_copy:
            copy = find_current_days(open_location(str(args.exports)), partitions, args.course)
        source_days = [p for p in partitions if copy is None or p.day not in copy.days]
        access_log.check_log_files(lake, source_days)
        with open(args.csv, "wb") as out:
            stats = access_log.write_access_csv(
                lake,
                partitions,
                out,
                course_id=args.course,
                window=window,
                assignments=assignments,
                roster=roster,
                users=users,
                copy=copy,
            )
        return stats.rows

    return timed_runs(once, args.runs)


def timed_runs(once: Callable[[], int], runs: int) -> dict[str, Any]:
    """``once`` (it returns the rows written) ``runs`` times: the median's seconds, and all."""
    seconds, rows = [], 0
    for _ in range(runs):
        started = time.perf_counter()
        rows = once()
        seconds.append(time.perf_counter() - started)
    return {"rows": rows, "seconds": statistics.median(seconds), "runs": seconds}


def run_pandas(args: argparse.Namespace) -> dict[str, Any]:
    """The export as a careful pandas user would write it: read, merge, format, sort."""

    lake = open_location(str(args.lake))
    assignments_pl, roster_pl, users_pl = _inputs(lake, args.course)
    assignments = assignments_pl.to_pandas()
    roster = roster_pl.to_pandas()
    users = users_pl.to_pandas()
    return timed_runs(lambda: _pandas_once(args, lake, assignments, roster, users), args.runs)


def _pandas_once(
    args: argparse.Namespace, lake: Any, assignments: Any, roster: Any, users: Any
) -> int:
    import pandas as pd

    window = access_log.access_window(datetime.now(UTC), RETENTION_MONTHS, None, None)
    partitions = access_log.list_day_partitions(lake, window)
    frames = [
        pd.read_parquet(
            lake.path("access_log", f"event_date={p.day.isoformat()}"),
            filters=[("course_id", "==", args.course)],
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

    stamp = df["event_time"].dt.tz_convert("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%z")
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
    table.to_csv(args.csv, index=False, lineterminator="\r\n", encoding="utf-8", na_rep="")
    return len(table)


def run_flow(args: argparse.Namespace) -> dict[str, Any]:
    """export-access-data through Prefect (ephemeral API): a first run, then ``runs`` timed."""
    os.environ["COURSE_EXPORT_LAKE_URL"] = str(args.lake)
    os.environ["COURSE_EXPORT_EXPORTS_URL"] = str(args.exports)
    os.environ["COURSE_EXPORT_SIGNING_KEY"] = "benchmark-signing-key-" + "x" * 32
    os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="prefect-bench-")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ["PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"] = "180"
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"

    from flows.export_access_data import export_access_data

    timed: list[dict[str, Any]] = []
    for run in range(1 + args.runs):  # the first starts the API and fills caches: not timed
        done = timed_flow(
            lambda: export_access_data(
                course_id=args.course, requested_by=args.teacher, return_state=True
            )
        )
        file = Path(done["state"].result().file_url)
        if run == args.runs:
            shutil.copyfile(file, args.csv)
        # Every run's export goes: the largest course's is 0.56 GB a run, and nothing
        # purges a benchmark's exports (they once filled the disk under the tests' S3).
        shutil.rmtree(file.parent, ignore_errors=True)
        if run:
            timed.append(done)
    median = sorted(timed, key=lambda t: t["seconds"])[(len(timed) - 1) // 2]
    return {
        "rows": median["state"].result().counts["events"],
        "seconds": statistics.median(t["seconds"] for t in timed),
        "runs": [t["seconds"] for t in timed],
        "call_seconds": median["call_seconds"],
        "steps": median["steps"],
    }


def child(args: argparse.Namespace) -> int:
    if args.child == "pandas":
        result = run_pandas(args)
    elif args.child == "flow":
        result = run_flow(args)
    else:
        result = run_writer(args, use_copy=args.child == "writer+copy")
    print(json.dumps({**result, "peak_mb": peak_rss_mb()}))
    return 0


def run_child(engine: str, script: Path = Path(__file__), **options: Any) -> dict[str, Any]:
    command = [sys.executable, str(script), "--child", engine]
    for name, value in options.items():
        command += [f"--{name}", str(value)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{engine} run failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def prepare_baseline(tree: Path, out: Path, layout: str, lake_dir: Path, events: int) -> None:
    """The baseline tree's copy of ``layout``, built by its own code from the same lake
    (linked under ``out/lakes``, so it is not generated again)."""
    link = out / "lakes" / layout
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.exists():
        link.symlink_to(lake_dir, target_is_directory=True)
    script = tree / "benchmarks" / "access_export.py"
    command = [sys.executable, str(script), "--prepare", "--out", str(out), "--layouts", layout]
    subprocess.run([*command, "--events", str(events)], check=True)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    lines = [
        " | ".join(str(x).rjust(w) for x, w in zip(line, widths, strict=True))
        for line in (header, *rows)
    ]
    lines.insert(1, "-|-".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=30_000_000)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--layouts", default=",".join(LAYOUTS))
    parser.add_argument("--cases", default="largest,median")
    parser.add_argument("--engines", default="pandas,writer,writer+copy,flow")
    parser.add_argument("--prepare", action="store_true", help="only make the lakes and copies")
    parser.add_argument(
        "--baseline", type=Path, help="another checkout whose engines run beside these"
    )
    parser.add_argument("--baseline-engines", default="writer+copy,flow")
    parser.add_argument(
        "--median-runs",
        type=int,
        default=5,
        help="timed runs of every engine on the median course (its median shown)",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=1, help=argparse.SUPPRESS)
    for hidden in ("lake", "exports", "csv"):
        parser.add_argument(f"--{hidden}", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--course", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--teacher", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    out: Path = args.out.resolve()
    layouts = args.layouts.split(",")
    prepared: dict[str, tuple[dict[str, Any], Path, Path, dict[str, float]]] = {}
    for layout in layouts:
        lake_dir, exports_dir = out / "lakes" / layout, out / "exports" / layout
        summary = ensure_lake(lake_dir, layout, args.events)
        built = build_copy(open_location(str(lake_dir)), open_location(str(exports_dir)))
        prepared[layout] = (summary, lake_dir, exports_dir, built)
        if built["days"]:
            print(
                f"{layout}: copied {built['days']:.0f} days in {built['seconds']:.1f} s "
                f"({built['seconds'] / built['days']:.2f} s a day)",
                flush=True,
            )
        if built["months"]:
            print(
                f"{layout}: merged {built['months']:.0f} months in {built['month_seconds']:.1f} s",
                flush=True,
            )
    if args.baseline is not None:
        for layout, (_, lake_dir, _, _) in prepared.items():
            prepare_baseline(args.baseline, out / "baseline", layout, lake_dir, args.events)
    if args.prepare:
        return 0

    rows: list[tuple[str, ...]] = []
    copies: list[tuple[str, ...]] = []
    for layout, (summary, lake_dir, exports_dir, built) in prepared.items():
        lake, store = open_location(str(lake_dir)), open_location(str(exports_dir))
        source, copied, merged = copy_size(lake, store)
        per_day = f"{built['seconds'] / built['days']:.2f}" if built["days"] else "(built before)"
        per_month = (
            f"{built['month_seconds'] / built['months']:.2f}" if built["months"] else "(before)"
        )
        copies.append(
            (
                layout,
                f"{source / 1e6:.0f}",
                f"{copied / 1e6:.0f}",
                f"{merged / 1e6:.0f}",
                f"{(copied + merged) / source:.2f}",
                per_day,
                per_month,
            )
        )
        for case in args.cases.split(","):
            course = summary["cases"][case]
            results: dict[str, dict[str, Any]] = {}
            runs = [
                (engine, engine, Path(__file__), exports_dir) for engine in args.engines.split(",")
            ]
            if args.baseline is not None:
                runs += [
                    (
                        f"{engine} @ baseline",
                        engine,
                        args.baseline / "benchmarks" / "access_export.py",
                        out / "baseline" / "exports" / layout,
                    )
                    for engine in args.baseline_engines.split(",")
                ]
            for engine, child_engine, script, exports in runs:
                csv_path = out / f"access-{layout}-{case}-{engine.replace(' @ ', '-')}.csv"
                results[engine] = run_child(
                    child_engine,
                    script,
                    lake=lake_dir,
                    exports=exports,
                    csv=csv_path,
                    course=course,
                    teacher=summary["teachers"][case],
                    runs=args.median_runs if case == "median" else 1,
                )
                results[engine]["csv"] = csv_path
                call = results[engine].get("call_seconds")
                returned = f" (the call returned after {call:.2f} s)" if call else ""
                each = results[engine]["runs"]
                median = (
                    f" (median of {', '.join(f'{t:.2f}' for t in each)})" if len(each) > 1 else ""
                )
                print(
                    f"{layout} {case} {engine}: {results[engine]['seconds']:.2f} s{median}{returned}"
                )
                if "steps" in results[engine]:
                    print(f"  timeline: {steps_line(results[engine]['steps'])}")
            digests = {sha256(r["csv"]) for r in results.values()}
            same = "yes" if len(digests) == 1 else "NO"
            base = results.get("pandas", {}).get("seconds")
            for engine, r in results.items():
                mb = r["csv"].stat().st_size / 1e6
                rows.append(
                    (
                        layout,
                        case,
                        engine,
                        f"{r['rows']:,}",
                        f"{mb:.1f}",
                        f"{r['seconds']:.2f}",
                        f"{r['peak_mb']:.0f}",
                        f"{base / r['seconds']:.1f}x" if base else "-",
                        same,
                    )
                )
    print()
    print(
        table(
            (
                "layout",
                "case",
                "engine",
                "rows",
                "CSV MB",
                "seconds",
                "peak MB",
                "vs pandas",
                "same CSV",
            ),
            rows,
        )
    )
    print()
    header = ("layout", "source MB", "days MB", "months MB", "copy/source", "s/day", "s/month")
    print(table(header, copies))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
