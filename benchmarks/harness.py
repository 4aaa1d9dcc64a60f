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
