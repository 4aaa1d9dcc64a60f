"""What the benchmark scripts share: each case runs in a fresh subprocess of the script
itself (so its peak memory and CPU are its own), reports one JSON line, and the parent
reads the server's CPU around it from /proc.

    parser = case_parser(__doc__)          # --case/--lake/--target/--endpoint, hidden
    ...
    if args.case:
        return report_case(lambda: run_case(args))
    result = run_case_process(__file__, "export", lake_url, target, endpoint, server_pid)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def case_parser(doc: str | None) -> argparse.ArgumentParser:
    """The script's parser with the hidden options its case subprocesses are given."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--lake", help=argparse.SUPPRESS)
    parser.add_argument("--target", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    return parser


def peak_rss_mb() -> float:
    """This process's own peak RSS. ``ru_maxrss`` would not do: Linux carries it over
    fork and exec, so a child would report its parent's peak."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def report_case(case: Callable[[], dict[str, Any]]) -> int:
    """Run one case in this (child) process; print its result with its CPU and peak."""
    before = os.times()
    result = case()
    after = os.times()
    result["cpu_s"] = (after.user - before.user) + (after.system - before.system)
    result["peak_mb"] = peak_rss_mb()
    print(json.dumps(result))
    return 0


def run_case_process(
    script: str,
    case: str,
    lake: str,
    target: str,
    endpoint: str | None = None,
    server_pid: int | None = None,
) -> dict[str, Any]:
    """Run ``script --case case …`` in a fresh interpreter; its result, plus the CPU the
    server at ``server_pid`` used meanwhile (it shares the cores)."""
    command = [sys.executable, script, "--case", case, "--lake", lake, "--target", target]
    if endpoint:
        command += ["--endpoint", endpoint]
    server_before = process_cpu_s(server_pid) if server_pid else 0.0
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"case {case!r} failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if server_pid:
        result["server_cpu_s"] = process_cpu_s(server_pid) - server_before
    return result


def timed_flow(call: Callable[[], Any]) -> dict[str, Any]:
    """Run a flow (``call`` returns its final state); when it was Completed, and where its
    time went.

    ``seconds`` runs until the run's end time: Prefect then joins the flow's heartbeat
    thread, which sleeps in whole seconds, so the call (``call_seconds``) returns up to
    1 s later. ``steps`` is the run's timeline from the API, in seconds from the call:
    ``running`` when the flow run entered Running, each task run's name with its time in
    Running, and ``between`` for everything in the run that is not a task (the flow's own
    code and the engine between tasks).
    """
    from datetime import UTC, datetime
    from time import perf_counter

    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    started_at = datetime.now(UTC)
    started = perf_counter()
    state = call()
    call_seconds = perf_counter() - started
    run_id = state.state_details.flow_run_id
    with get_client(sync_client=True) as client:
        run = client.read_flow_run(run_id)
        tasks = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
        )
    assert run.end_time is not None and run.start_time is not None, run.state
    running, ended = run.start_time, run.end_time
    steps: dict[str, float] = {"running": (running - started_at).total_seconds()}
    in_tasks = 0.0
    for task in sorted(tasks, key=lambda t: t.start_time or running):
        name = re.sub(r"-[0-9a-f]{1,3}$", "", task.name)  # Prefect's "-<key>" suffix
        steps[name] = steps.get(name, 0.0) + task.total_run_time.total_seconds()
        in_tasks += task.total_run_time.total_seconds()
    steps["between"] = (ended - running).total_seconds() - in_tasks
    return {
        "state": state,
        "seconds": (ended - started_at).total_seconds(),
        "call_seconds": call_seconds,
        "steps": steps,
    }


def steps_line(steps: dict[str, float]) -> str:
    """``running 0.31 s · check-and-claim 0.12 s · ...`` for a table's notes."""
    return " · ".join(f"{name} {seconds:.2f} s" for name, seconds in steps.items())
