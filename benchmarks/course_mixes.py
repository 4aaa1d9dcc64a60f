"""Benchmark: the course zip on four mixes of files, against sequential ``zipfile``, and
the memory of a 500,000-file course (not run by the tests).

    .venv/bin/python benchmarks/course_mixes.py              # all mixes and the memory row
    .venv/bin/python benchmarks/course_mixes.py --mixes text,tiny --no-memory-row
    .venv/bin/python benchmarks/course_mixes.py --repeat 3     # each case's median of 3

Mixes (generated once under benchmarks/out/mixes, reused afterwards; one course each):

- ``text``: today's sample lake (code and text, 20% of files random ``.bin`` and the like);
- ``binary``: half of the bytes random, of which half behind media or archive names
  (.png, .jpg, .zip) and half behind text-like names (.txt, .json, .csv, .py: lakes
  mislabel), the other half code-like text; a few files of several MB of each kind;
- ``tiny``: 100,000 files of 50 B to 2 KB (code-like, some random);
- ``source``: real files no generator made: the installed packages that uv.lock pins
  (:data:`SOURCE_PACKAGES`: Python, C extensions, JSON data, JavaScript, CSS, images),
  dealt out in path order over the course's workspaces under their own relative paths;
- ``many`` (memory row): 500,000 files of about 200 B, exported through the flow only.

Cases, each in a fresh subprocess so its peak RSS (``VmHWM``) is its own:

- ``zipfile``: ``zipfile.ZipFile`` (deflate, level 6), one file after another, with the
  same members as the course zip: the workspace files under the same names (their
  listing timed, the naming not), and ``course.json``, ``roster.csv`` and
  ``manifest.json`` copied from the function case's zip (deflated and written in the
  timed span; the manifest's sha256s are not computed, which only flatters the
  baseline). "size vs zipfile" compares the same members; "vs zipfile's files only"
  leaves those three out of the baseline, as this benchmark did before (the manifest's
  sha256 per file is incompressible: 4% of a zip of 100,000 tiny files);
- ``function``: ``list_workspace_files`` + ``plan_workspaces`` + ``write_course_zip``
  into a local exports folder: what the flow's two tasks run;
- ``flow``: the ``export-course`` flow run end to end against a Prefect server started
  here in its own process (so the case's process is what a worker's flow run would be,
  with Prefect's flow engine and the flow imported before the clock starts, as
  ``python -m prefect.engine`` has them before its run starts; see ``run_case``):
  request checks, plan, registry, zip, publication, summary artifact; no mail. One
  untimed flow run (the first mix's LTI links) warms the fresh server first.

The machine is shared and noisy: compare the ratios within one run, not seconds across
runs; ``--repeat N`` runs every case of a mix N times, in rounds, and shows each case's
median round (a single run of ``zipfile`` on the tiny mix took 13.4 to 18.9 s on one
day). In a round the function runs first (the baseline needs its zip), then the
baseline, then the flow; the lake's files are read once before, so none of them pays
for a cold page cache. "CPU ratio" is the baseline's CPU seconds over the case's (all
threads, the same span as the wall time); "load" is the machine's 1-minute load average
when the case ended.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from harness import peak_rss_mb, process_cpu_s, steps_line, timed_flow

ROOT = Path(__file__).resolve().parent.parent
for path in (ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

OUT = ROOT / "benchmarks" / "out" / "mixes"
NOW = datetime(2026, 6, 30, 18, 0, tzinfo=UTC)
SIGNING_KEY = "benchmark-signing-key-" + "k" * 32
GENERATOR_VERSION = 1


@dataclass(frozen=True)
class Mix:
    name: str
    students: int
    files_per_workspace: int  # for the sample lake's own workspaces (text) or ours
    mean_bytes: int
    note: str


MIXES = {
    "text": Mix("text", 60, 20, 25_000, "today's sample lake: code and text, 20% random"),
    "binary": Mix("binary", 40, 15, 50_000, "half of the bytes random, half of those mislabeled"),
    "tiny": Mix("tiny", 50, 200, 1_000, "100,000 files of 50 B - 2 KB"),
    "many": Mix("many", 250, 200, 200, "500,000 files of ~200 B"),
    "source": Mix("source", 40, 0, 0, "installed packages: real code, data and binaries"),
}
#: The ``source`` mix's packages, as installed from uv.lock (so the same files everywhere).
SOURCE_PACKAGES = ("prefect", "sqlalchemy", "botocore", "pygments", "numpy", "pandas")


# ----------------------------------------------------------------------------- lakes


def ensure_lake(mix: Mix) -> Path:
    """The mix's lake, generated unless a complete one of this version is there."""
    from course_exports.storage import open_location
    from sample_lake import LakeSpec, generate_lake

    root = OUT / mix.name
    marker = root / "benchmark-mix.json"
    wanted = {"mix": mix.__dict__, "version": GENERATOR_VERSION, "now": str(NOW)}
    if marker.exists():
        made = json.loads(marker.read_text())
        # Files and bytes as generated, checked again: a lake something wrote into since
        # (``python -m compileall benchmarks`` once put 3,468 .pyc files into ``source``)
        # is made anew, not measured as if it were the mix.
        if {k: made.get(k) for k in wanted} == wanted and made.get("files") == list(
            lake_size(root)
        ):
            return root
    started = time.perf_counter()
    own = mix.name != "text"
    spec = LakeSpec(
        seed=11, courses=1, students=mix.students, assignments=10, events=1000, days=10,
        files_per_workspace=mix.files_per_workspace, file_bytes=mix.mean_bytes,
        workspaces=not own,
    )  # fmt: skip
    lake = open_location(str(root))
    summary = generate_lake(lake, spec, now=NOW, overwrite=True)
    if own:
        write_workspaces(root, summary.course_ids[0], mix)
    marker.write_text(json.dumps({**wanted, "files": list(lake_size(root))}))
    print(f"  generated {mix.name} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return root


def write_workspaces(root: Path, course_id: int, mix: Mix) -> None:
    import numpy as np
    from archive_throughput import code_corpus

    from course_exports.lake import read_course, read_roster
    from course_exports.storage import open_location

    lake = open_location(str(root))
    students = read_roster(lake, course_id).filter(role="Student")["user_id"].to_list()
    assignments = [a.id for _, a in read_course(lake, course_id).assignments()]
    if mix.name == "source":
        folders = [
            root / "workspaces" / str(course_id) / str(assignment) / str(student)
            for assignment in assignments
            for student in students[: mix.students]
        ]
        deal_out_packages(folders)
        return
    rng = np.random.default_rng(20261130)
    corpus = code_corpus(rng, megabytes=16)
    noise = rng.bytes(16 * 2**20)
    text_names = (".txt", ".json", ".csv", ".py", ".md")
    media_names = (".png", ".jpg", ".zip")
    for assignment in assignments:
        for student in students[: mix.students]:
            folder = root / "workspaces" / str(course_id) / str(assignment) / str(student)
            (folder / "src").mkdir(parents=True, exist_ok=True)
            count = mix.files_per_workspace
            sizes: Any
            if mix.name == "binary":
                sizes = np.clip(rng.lognormal(np.log(mix.mean_bytes) - 0.5, 1.0, count), 0, 2**20)
                kinds = rng.choice(3, size=count, p=[0.5, 0.25, 0.25])
                if rng.random() < 0.04:  # now and then a file of several MB, any kind
                    sizes[0] = rng.integers(5, 9) * 2**20
            else:
                low, high = (50, 2048) if mix.name == "tiny" else (100, 300)
                sizes = rng.integers(low, high, count)
                kinds = np.where(rng.random(count) < 0.1, 2, 0)
            for index, (size, kind) in enumerate(zip(sizes.astype(int), kinds, strict=True)):
                size = int(size)
                if kind == 0:  # code-like text under a text name
                    start = int(rng.integers(0, len(corpus) - size))
                    data, ext = corpus[start : start + size], text_names[index % 5]
                else:  # random bytes: media names (1) or text-like names (2)
                    if size > len(noise) // 2:
                        data = rng.bytes(size)
                    else:
                        start = int(rng.integers(0, len(noise) - size))
                        data = noise[start : start + size]
                    ext = (media_names if kind == 1 else text_names)[index % 3]
                (folder / "src" / f"file_{index:04d}{ext}").write_bytes(data)


def deal_out_packages(folders: list[Path]) -> None:
    """Copy :data:`SOURCE_PACKAGES`' files (no bytecode) in path order, a run of
    consecutive files into each folder: each workspace a piece of a real project's tree."""
    site = Path(sysconfig.get_paths()["purelib"])
    files = sorted(
        path
        for package in SOURCE_PACKAGES
        for path in (site / package).rglob("*")
        if path.is_file() and not path.is_symlink() and "__pycache__" not in path.parts
    )
    for index, path in enumerate(files):
        target = folders[index * len(folders) // len(files)] / path.relative_to(site)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)


# ----------------------------------------------------------------------------- cases


def case_zipfile(lake_root: Path, target: Path, reference: Path) -> dict[str, Any]:
    """The same members as ``reference`` (the function case's zip): the workspace files
    from the lake, and ``course.json``, ``roster.csv`` and ``manifest.json`` copied from
    the reference, so both zips hold the same bytes. Reading the reference is not timed
    (nor the sha256s it holds: that hashing is the export's own work), deflating and
    writing those members is."""
    from course_exports.course_export import ZIP_MANIFEST

    course, plan = plan_for(lake_root)
    with zipfile.ZipFile(reference) as ref:
        top = ref.namelist()[0].split("/", 1)[0]
        extras = {name: ref.read(name) for name in ref.namelist() if "/workspaces/" not in name}
    head = [name for name in extras if not name.endswith(f"/{ZIP_MANIFEST}")]
    tail = [name for name in extras if name.endswith(f"/{ZIP_MANIFEST}")]
    # The plan's paths are relative to the lake; the walk's are not.
    names = {
        str(lake_root / file.path): f"{top}/workspaces/{file.arcname}" for file in plan.files()
    }
    started, cpu_before = time.perf_counter(), os.times()
    listed = []
    for folder, dirs, files in os.walk(lake_root / "workspaces" / str(course.id)):
        dirs.sort()
        listed += [os.path.join(folder, name) for name in sorted(files)]
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name in head:
            zf.writestr(name, extras[name])
        for path in listed:
            zf.write(path, names[path])
        for name in tail:
            zf.writestr(name, extras[name])
        extra_bytes = sum(member_bytes(zf.getinfo(name)) for name in extras)
    seconds, cpu_after = time.perf_counter() - started, os.times()
    cpu_s = cpu_after.user - cpu_before.user + cpu_after.system - cpu_before.system
    return {
        "seconds": seconds,
        "cpu_s": cpu_s,  # the timed span's only: not the naming nor the reference's reading
        "output": target.stat().st_size,
        "extra_bytes": extra_bytes,
    }


def member_bytes(info: zipfile.ZipInfo) -> int:
    """What one member adds to a zip: local header, data, central-directory header."""
    name, extra = len(info.filename.encode()), len(info.extra)
    return 30 + name + extra + info.compress_size + 46 + name + extra + len(info.comment)


def plan_for(lake_root: Path) -> tuple[Any, Any]:
    from course_exports import workspace
    from course_exports.lake import read_course, read_roster, read_users
    from course_exports.storage import open_location

    lake = open_location(str(lake_root))
    course_id = course_of(lake_root)
    course = read_course(lake, course_id)
    plan = workspace.plan_workspaces(
        workspace.list_workspace_files(lake, course_id),
        course,
        read_roster(lake, course_id),
        read_users(lake),
    )
    return course, plan


def course_of(lake_root: Path) -> int:
    return int(next((lake_root / "courses").iterdir()).name)


def case_function(
    lake_root: Path, target: Path, small_file_processes: int | None = None
) -> dict[str, Any]:
    from course_exports import registry
    from course_exports.course_export import export_course_zip
    from course_exports.export_records import ExportKind
    from course_exports.storage import open_location

    started = time.perf_counter()
    course, plan = plan_for(lake_root)
    lake, exports = open_location(str(lake_root)), open_location(str(target))
    record = registry.begin_export(
        exports, kind=ExportKind.COURSE, course_id=course.id, course_name=course.name,
        requested_by=1, request_id=None, parameters={}, file_name="course.zip",
        ttl=timedelta(days=7),
    )  # fmt: skip
    with registry.open_export_file(exports, record) as out:
        export_course_zip(
            out,  # type: ignore[arg-type]
            lake,
            record=record,
            course=course,
            plan=plan,
            small_file_processes=small_file_processes,
        )
    return {"seconds": time.perf_counter() - started, "output": out.size}


def course_and_teacher(lake_root: Path) -> tuple[int, int]:
    """The mix's course and a teacher of it: who requests the flows."""
    import polars as pl

    from course_exports.lake import read_roster
    from course_exports.storage import open_location

    course_id = course_of(lake_root)
    roster = read_roster(open_location(str(lake_root)), course_id)
    return course_id, int(roster.filter(pl.col("role") == "Teacher")["user_id"][0])


def case_flow(lake_root: Path, target: Path) -> dict[str, Any]:
    """Settings and the Prefect API come from the environment the parent set."""
    from flows.export_course import export_course

    course_id, teacher = course_and_teacher(lake_root)
    timed = timed_flow(
        lambda: export_course(
            course_id=course_id, requested_by=teacher, notify=False, return_state=True
        )
    )
    return {
        "seconds": timed["seconds"],
        "call_seconds": timed["call_seconds"],
        "steps": timed["steps"],
        "output": timed["state"].result().size_bytes,
    }


def case_warm_up(lake_root: Path, target: Path) -> dict[str, Any]:
    """One small flow run (the course's LTI links) before any timed one: a fresh
    server's first run pays for its database's first writes and caches, ~0.8 s that a
    running server does not charge an export (it fell on whichever mix came first)."""
    from flows.export_lti_settings import export_lti_settings

    course_id, teacher = course_and_teacher(lake_root)
    started = time.perf_counter()
    export_lti_settings(course_id=course_id, requested_by=teacher)
    return {"seconds": time.perf_counter() - started}


CASES: dict[str, Callable[[Path, Path], dict[str, Any]]] = {
    "warm-up": case_warm_up,
    "function": case_function,
    # The same with every batch packed by threads: what the packer processes bring.
    "function-threads": functools.partial(case_function, small_file_processes=0),
    "flow": case_flow,
}


CPU_FIELDS = ("user", "system", "children_user", "children_system")


def run_case(case: str, lake_root: Path, target: Path, reference: Path | None) -> None:
    # Imports first, so the CPU seconds cover the same span as the wall time.
    import course_exports.course_export
    import course_exports.workspace  # noqa: F401

    if case in ("flow", "warm-up"):
        # What a worker's flow-run process has imported before its run starts: it is
        # ``python -m prefect.engine``, which imports the flow engine and loads the flow
        # before proposing Running. A first direct call imports more (0.2-0.4 s, counted
        # as "call -> Running" until 0.12.0): the engine, and two modules only a direct
        # call needs, graphviz (``Flow.__call__`` checks for ``visualize``) and FastAPI
        # with Starlette (``serialize_parameters``, as it creates the run a worker's
        # process only reads).
        for module in (
            "prefect.engine",
            "prefect.flow_engine",
            "prefect.utilities.visualization",
            "fastapi.encoders",
        ):
            importlib.import_module(module)

        import flows.export_course
        import flows.export_lti_settings  # noqa: F401
    before = os.times()
    if case == "zipfile":
        assert reference is not None, "the zipfile case copies its extra members from a zip"
        result = case_zipfile(lake_root, target, reference)
    else:
        result = CASES[case](lake_root, target)
    after = os.times()
    # Children too: the zip's packer processes (waited for before the zip is closed).
    cpu = sum(getattr(after, f) - getattr(before, f) for f in CPU_FIELDS)
    result.setdefault("cpu_s", cpu)
    # This process's own peak. A packer process (~20 MB, its VmHWM measured apart) is
    # not in it; RUSAGE_CHILDREN cannot tell it: Linux carries the parent's peak over
    # the fork of a child into the child's ru_maxrss.
    result["peak_mb"] = peak_rss_mb()
    result["load"] = os.getloadavg()[0]
    print(json.dumps(result))


# ----------------------------------------------------------------------------- driver


def child(
    case: str, lake_root: Path, target: Path, env: dict[str, str], reference: Path | None = None
) -> dict[str, Any]:
    command = [sys.executable, __file__, "--case", case, "--lake", str(lake_root)]
    command += ["--target", str(target)]
    if reference is not None:
        command += ["--reference", str(reference)]
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    if done.returncode:
        raise RuntimeError(f"{case} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def lake_size(lake_root: Path, *, warm: bool = False) -> tuple[int, int]:
    """Files and bytes of the workspaces; ``warm`` reads them all once, so no case pays
    for a cold page cache (the function case runs before the baseline now)."""
    files = total = 0
    for folder, _, names in os.walk(lake_root / "workspaces"):
        for name in names:
            files += 1
            path = os.path.join(folder, name)
            total += os.stat(path).st_size
            if warm:
                with open(path, "rb") as fh:
                    while fh.read(1 << 20):
                        pass
    return files, total


def median_run(results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run of median seconds (the lower middle of an even count): a whole run, so its
    CPU, peak and timeline stay its own."""
    return sorted(results, key=lambda r: r["seconds"])[(len(results) - 1) // 2]


def row(mix: str, case: str, files: int, size: int, r: dict[str, Any], base: dict | None) -> str:
    speed = f"**{base['seconds'] / r['seconds']:.1f}x**" if base else "1.0x"
    cpu = f"{base['cpu_s'] / r['cpu_s']:.1f}x" if base else "1.0x"
    # Same members (the baseline writes our course.json, roster.csv and manifest.json
    # too), and the older column: against the baseline's workspace files alone.
    larger = f"{r['output'] / base['output'] - 1:+.1%}" if base else "-"
    files_only = f"{r['output'] / (base['output'] - base['extra_bytes']) - 1:+.1%}" if base else "-"
    return (
        f"| {mix} | {case} | {files:,} | {size / 1e6:,.0f} | {r['output'] / 1e6:,.1f} "
        f"| {r['seconds']:.1f} | {size / 1e6 / r['seconds']:,.0f} | {files / r['seconds']:,.0f} "
        f"| {r['peak_mb']:,.0f} | {r['cpu_s']:.1f} | {speed} | {cpu} | {larger} | {files_only} "
        f"| {r['load']:.1f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mixes", default="text,binary,tiny,source")
    parser.add_argument("--no-memory-row", action="store_true")
    parser.add_argument("--no-flow", action="store_true", help="zipfile and function only")
    parser.add_argument(
        "--repeat", type=int, default=1, help="rounds of every case; each case's median is shown"
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--reference", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        reference = Path(args.reference) if args.reference else None
        run_case(args.case, Path(args.lake), Path(args.target), reference)
        return 0

    from deployments.local_stack import prefect_env, run_server

    names = [m for m in args.mixes.split(",") if m]
    lakes = {name: ensure_lake(MIXES[name]).resolve() for name in names}  # names match the plan's
    if not args.no_memory_row:
        lakes["many"] = ensure_lake(MIXES["many"]).resolve()
    rows = [
        "| mix | case | files | input MB | output MB | seconds | MB/s | files/s | peak MB "
        "| CPU s | speed-up | CPU ratio | size vs zipfile | vs zipfile's files only | load |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with (
        tempfile.TemporaryDirectory(prefix="bench-mixes-") as tmp,
        run_server(Path(tmp) / "prefect") as server,
    ):
        assert server.process is not None
        server_pid = server.process.pid
        notes: list[str] = []
        warmed = False
        for name, lake_root in lakes.items():
            files, size = lake_size(lake_root, warm=True)
            work = Path(tmp) / name
            work.mkdir()
            env = prefect_env(
                server.home,
                server.api_url,
                {
                    "COURSE_EXPORT_LAKE_URL": str(lake_root),
                    "COURSE_EXPORT_EXPORTS_URL": str(work / "flow-exports"),
                    "COURSE_EXPORT_OUTBOX": str(work / "outbox"),
                    "COURSE_EXPORT_SIGNING_KEY": SIGNING_KEY,
                },
            )
            if not warmed and not args.no_flow:
                child("warm-up", lake_root, work / "warm-up-exports", env)
                warmed = True
            if name == "many":
                result = child("flow", lake_root, work / "flow-exports", env)
                rows.append(row(name, "flow", files, size, result, None))
                notes.append(f"- {name}: " + steps_line(result["steps"]))
                print(rows[-1], file=sys.stderr, flush=True)
                continue
            # Each round: the function first (the baseline copies its course.json,
            # roster.csv and manifest.json, so that both zips hold the same members),
            # the baseline, then the others; each case's median round is reported.
            runs: dict[str, list[dict[str, Any]]] = {}
            for _ in range(args.repeat):
                ours = child("function", lake_root, work / "function-exports", env)
                reference = next((work / "function-exports").rglob("*.zip"))
                base = child("zipfile", lake_root, work / "zipfile.zip", env, reference)
                subprocess.run(["rm", "-rf", str(work / "function-exports")], check=True)
                subprocess.run(["rm", "-rf", str(work / "zipfile.zip")], check=True)
                runs.setdefault("zipfile", []).append(base)
                runs.setdefault("function", []).append(ours)
                if name == "tiny":
                    threads = child("function-threads", lake_root, work / "threads-exports", env)
                    subprocess.run(["rm", "-rf", str(work / "threads-exports")], check=True)
                    runs.setdefault("function, threads only", []).append(threads)
                if not args.no_flow:
                    server_cpu = process_cpu_s(server_pid)
                    flow = child("flow", lake_root, work / "flow-exports", env)
                    flow["server_cpu_s"] = process_cpu_s(server_pid) - server_cpu
                    subprocess.run(["rm", "-rf", str(work / "flow-exports")], check=True)
                    runs.setdefault("flow", []).append(flow)
            cases = [(case, median_run(results)) for case, results in runs.items()]
            base, ours = cases[0][1], cases[1][1]
            if not args.no_flow:
                flow = cases[-1][1]
                # Where the flow's time goes against the function's (issue 10's gap).
                notes.append(
                    f"- {name}: flow {flow['seconds']:.2f} s, function {ours['seconds']:.2f} s;"
                    f" server CPU {flow['server_cpu_s']:.2f} s meanwhile; "
                    + steps_line(flow["steps"])
                )
            if args.repeat > 1:
                notes.append(
                    f"- {name}, seconds of each round: "
                    + "; ".join(
                        f"{case} " + " / ".join(f"{r['seconds']:.2f}" for r in results)
                        for case, results in runs.items()
                    )
                )
            for case, result in cases:
                rows.append(row(name, case, files, size, result, None if result is base else base))
                print(rows[-1], file=sys.stderr, flush=True)
    print("\n".join(rows))
    print("\nThe flow's timeline (seconds from the call; task runs in Running):")
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
